using Squeeze.Allocation;

namespace Squeeze.Tests.Allocation;

public class MultipleChoiceKnapsackTests
{
    [Fact]
    public void Never_exceeds_the_budget_and_matches_brute_force_when_the_grid_is_exact()
    {
        var random = new Random(42);
        for (int trial = 0; trial < 500; trial++)
        {
            var items = RandomItems(random, count: random.Next(1, 6), grain: 1);
            long min = items.Sum(i => i.Min(c => c.Bytes)), max = items.Sum(i => i.Max(c => c.Bytes));
            long budget = min + (long)(random.NextDouble() * (max - min + 10));
            var selection = MultipleChoiceKnapsack.Solve(items, budget, cells: 1 << 16);
            Assert.True(MultipleChoiceKnapsack.TotalBytes(items, selection) <= budget);
            // Sizes are small integers, so the grid is exact and the answer is optimal.
            Assert.Equal(BruteForce(items, budget), Error(items, selection), 9);
        }
    }

    [Fact]
    public void Coarse_grid_stays_within_budget_and_close_to_optimal()
    {
        var random = new Random(7);
        for (int trial = 0; trial < 300; trial++)
        {
            var items = RandomItems(random, count: random.Next(2, 6), grain: 997);
            long min = items.Sum(i => i.Min(c => c.Bytes)), max = items.Sum(i => i.Max(c => c.Bytes));
            long budget = min + (long)(random.NextDouble() * (max - min));
            var selection = MultipleChoiceKnapsack.Solve(items, budget, cells: 64);
            Assert.True(MultipleChoiceKnapsack.TotalBytes(items, selection) <= budget);
            Assert.True(Error(items, selection) >= BruteForce(items, budget) - 1e-9);
        }
    }

    [Fact]
    public void Budget_below_the_smallest_total_is_a_clear_error()
    {
        Choice[][] items = [[new(100, 1), new(50, 2)], [new(30, 1)]];
        var e = Assert.Throws<ArgumentException>(() => MultipleChoiceKnapsack.Solve(items, 79));
        Assert.Contains("80", e.Message);
        Assert.Equal([1, 0], MultipleChoiceKnapsack.Solve(items, 80));
        Assert.Equal([0, 0], MultipleChoiceKnapsack.Solve(items, 130));
        Assert.Equal([0, 0], MultipleChoiceKnapsack.Solve(items, long.MaxValue / 4));
    }

    private static Choice[][] RandomItems(Random random, int count, int grain)
        => Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, random.Next(1, 5))
            .Select(_ => new Choice(grain * random.Next(1, 40), Math.Round(random.NextDouble() * 10, 3))).ToArray()).ToArray();

    private static double Error(Choice[][] items, int[] selection) => items.Select((options, i) => options[selection[i]].Error).Sum();

    private static double BruteForce(Choice[][] items, long budget)
    {
        double best = double.PositiveInfinity;
        void Walk(int i, long bytes, double error)
        {
            if (bytes > budget)
                return;
            if (i == items.Length)
            {
                best = Math.Min(best, error);
                return;
            }
            foreach (var c in items[i])
                Walk(i + 1, bytes + c.Bytes, error + c.Error);
        }
        Walk(0, 0, 0);
        return best;
    }
}
