namespace Squeeze.Allocation;

/// <summary>One way to store an item (a tensor in a format): its exact size and the damage it does.</summary>
public readonly record struct Choice(long Bytes, double Error);

/// <summary>
/// The multiple-choice knapsack: pick one <see cref="Choice"/> per item so that Σ bytes ≤ budget and Σ error is
/// least. Solved exactly by dynamic programming over a byte grid (sizes rounded up to the grid, so the chosen total
/// never exceeds the budget), then repaired greedily: the bytes lost to rounding are spent on the upgrades that buy
/// the most error per byte while the exact total still fits.
/// </summary>
public static class MultipleChoiceKnapsack
{
    /// <summary>Bytes <see cref="Solve"/> allocates for <paramref name="items"/> items on a grid of <paramref name="cells"/>
    /// cells: each item's choice per cell, and two rows of errors.</summary>
    public static long TableBytes(long items, long cells) => items * (cells + 1) + 2 * (cells + 1) * sizeof(double);

    /// <summary>Index of the chosen option of each item.</summary>
    /// <exception cref="ArgumentException">An item has no choice, a size is negative, an error is not finite, or the
    /// budget is below the smallest possible total (the message gives that total).</exception>
    public static int[] Solve(IReadOnlyList<IReadOnlyList<Choice>> items, long budget, int cells = 1 << 16)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentOutOfRangeException.ThrowIfLessThan(cells, 1);
        long smallest = 0;
        for (int i = 0; i < items.Count; i++)
        {
            if (items[i].Count == 0)
                throw new ArgumentException($"item {i} has no choice", nameof(items));
            foreach (var c in items[i])
            {
                if (c.Bytes < 0 || !double.IsFinite(c.Error))
                    throw new ArgumentException($"item {i} has a choice of {c.Bytes} bytes and error {c.Error}", nameof(items));
            }
            smallest += items[i].Min(c => c.Bytes);
        }
        if (budget < smallest)
            throw new ArgumentException($"a budget of {budget:N0} bytes is below the smallest possible total of {smallest:N0} bytes", nameof(budget));

        // Grid: cell = ceil(budget / cells) bytes; a choice takes ceil(bytes / cell) cells.
        long cell = Math.Max(1, (budget + cells - 1) / cells);
        int capacity = (int)(budget / cell);
        var best = new double[capacity + 1];      // least error with exactly c cells used by the items so far
        var next = new double[capacity + 1];
        var picked = new byte[items.Count][];     // [item][cells] choice index that reached the cell (items have ≤ 255 choices)
        Array.Fill(best, double.PositiveInfinity);
        best[0] = 0;
        for (int i = 0; i < items.Count; i++)
        {
            var options = items[i];
            if (options.Count > byte.MaxValue)
                throw new ArgumentException($"item {i} has {options.Count} choices; at most {byte.MaxValue} are supported", nameof(items));
            Array.Fill(next, double.PositiveInfinity);
            var choice = picked[i] = new byte[capacity + 1];
            for (int k = 0; k < options.Count; k++)
            {
                long width = (options[k].Bytes + cell - 1) / cell;
                if (width > capacity)
                    continue;
                double error = options[k].Error;
                for (int c = (int)width; c <= capacity; c++)
                {
                    double candidate = best[c - width] + error;
                    if (candidate < next[c])
                    {
                        next[c] = candidate;
                        choice[c] = (byte)k;
                    }
                }
            }
            (best, next) = (next, best);
        }

        int end = -1;
        for (int c = 0; c <= capacity; c++)
        {
            if (!double.IsPositiveInfinity(best[c]) && (end < 0 || best[c] < best[end]))
                end = c;
        }
        var result = new int[items.Count];
        if (end < 0)
        {
            // Rounding up made every combination overflow the grid: start from the smallest choices, which fit exactly.
            for (int i = 0; i < items.Count; i++)
                result[i] = IndexOfSmallest(items[i]);
        }
        else
        {
            for (int i = items.Count - 1; i >= 0; i--)
            {
                int k = picked[i][end];
                result[i] = k;
                end -= (int)((items[i][k].Bytes + cell - 1) / cell);
            }
        }
        Repair(items, budget, result);
        return result;
    }

    /// <summary>Σ bytes of a selection.</summary>
    public static long TotalBytes(IReadOnlyList<IReadOnlyList<Choice>> items, IReadOnlyList<int> selection)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(selection);
        long total = 0;
        for (int i = 0; i < items.Count; i++)
            total += items[i][selection[i]].Bytes;
        return total;
    }

    /// <summary>Spends what is left of the budget on the upgrade with the best error saved per byte, until none fits.</summary>
    private static void Repair(IReadOnlyList<IReadOnlyList<Choice>> items, long budget, int[] selection)
    {
        long left = budget - TotalBytes(items, selection);
        while (true)
        {
            int bestItem = -1, bestChoice = -1;
            double bestRate = 0;
            for (int i = 0; i < items.Count; i++)
            {
                var current = items[i][selection[i]];
                for (int k = 0; k < items[i].Count; k++)
                {
                    var c = items[i][k];
                    long extra = c.Bytes - current.Bytes;
                    double saved = current.Error - c.Error;
                    if (saved <= 0 || extra > left)
                        continue;
                    double rate = extra <= 0 ? double.PositiveInfinity : saved / extra;
                    if (rate > bestRate)
                    {
                        (bestRate, bestItem, bestChoice) = (rate, i, k);
                    }
                }
            }
            if (bestItem < 0)
                return;
            left -= items[bestItem][bestChoice].Bytes - items[bestItem][selection[bestItem]].Bytes;
            selection[bestItem] = bestChoice;
        }
    }

    private static int IndexOfSmallest(IReadOnlyList<Choice> options)
    {
        int best = 0;
        for (int k = 1; k < options.Count; k++)
        {
            if (options[k].Bytes < options[best].Bytes || (options[k].Bytes == options[best].Bytes && options[k].Error < options[best].Error))
                best = k;
        }
        return best;
    }
}
