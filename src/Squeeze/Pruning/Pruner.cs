using Squeeze.Calibration;
using Squeeze.Kernels;

namespace Squeeze.Pruning;

/// <summary>How a pruner scores the weights it may remove.</summary>
public enum PruningMethod
{
    /// <summary>|W[r, j]|.</summary>
    Magnitude,

    /// <summary>Wanda (Sun et al. 2023): |W[r, j]| · ‖X[:, j]‖₂, the input norm from the calibration statistics (√Σx²).</summary>
    Wanda,

    /// <summary>SparseGPT (Frantar and Alistarh 2023): W[r, j]² / [H⁻¹]ⱼⱼ with the remaining weights updated to
    /// compensate each removal (OBS), column by column through the Cholesky factor of H⁻¹ that GPTQ uses.</summary>
    SparseGpt,
}

/// <summary>Settings of <see cref="Pruner"/>.</summary>
public sealed record PruningOptions
{
    /// <summary>SparseGPT: damping added to H's diagonal, as a fraction of its mean diagonal.</summary>
    public double DampingFraction { get; init; } = 0.01;

    /// <summary>SparseGPT: columns per lazy batch (rounded up to whole N:M groups); unstructured masks are chosen per batch
    /// from the weights as updated so far.</summary>
    public int BlockSize { get; init; } = 128;

    /// <summary>Threads over rows; the result does not depend on it.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
}

/// <summary>What a pruner produced.</summary>
public sealed class PruningResult
{
    internal PruningResult(float[] weights, bool[] mask, int rows, int columns)
    {
        Weights = weights;
        Mask = mask;
        Rows = rows;
        Columns = columns;
    }

    /// <summary>The pruned weights [rows, columns]: zero wherever <see cref="Mask"/> is false; SparseGPT also updates the
    /// kept ones.</summary>
    public float[] Weights { get; }

    /// <summary>[rows, columns]: true where a weight is kept.</summary>
    public bool[] Mask { get; }

    /// <summary>Output features of the pruned weight.</summary>
    public int Rows { get; }

    /// <summary>Input features of the pruned weight.</summary>
    public int Columns { get; }
}

/// <summary>
/// Magnitude, Wanda and SparseGPT pruning of one weight matrix W [rows, columns] (inputs are columns) in the forms of
/// <see cref="SparsityPattern"/>: unstructured (per row), N:M, whole rows, whole columns (or groups of them: attention
/// heads). Deterministic: ties go to the lower index, and rows are independent, so the thread count changes nothing.
/// </summary>
public static class Pruner
{
    /// <summary>
    /// Prunes <paramref name="weights"/> ([rows, columns] row-major). Wanda needs <paramref name="input"/>'s
    /// <see cref="ActivationStatistics.SumSquares"/>, SparseGPT its Gram matrix.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree, the pattern does not fit, a value is not finite, or the statistics a method needs are missing.</exception>
    public static PruningResult Prune(ReadOnlySpan<float> weights, int rows, int columns, SparsityPattern pattern, PruningMethod method,
        ActivationStatistics? input = null, PruningOptions? options = null)
    {
        options ??= new PruningOptions();
        if (input is not null && input.Width != columns)
            throw new ArgumentException($"the input statistics are {input.Width} wide, the weights have {columns} columns", nameof(input));
        switch (method)
        {
            case PruningMethod.Magnitude:
                return ByScore(weights, rows, columns, pattern, Ones(columns), options);
            case PruningMethod.Wanda:
                if (input is null)
                    throw new ArgumentException("Wanda needs the input statistics", nameof(input));
                return ByScore(weights, rows, columns, pattern, input.SumSquares.Select(s => (float)Math.Sqrt(s)).ToArray(), options);
            case PruningMethod.SparseGpt:
                if (input is null)
                    throw new ArgumentException("SparseGPT needs the input statistics with the Gram matrix", nameof(input));
                var hessian = GptqHessian.Prepare(input.Hessian(), columns, options.DampingFraction, activationOrder: false, Math.Max(1, options.Threads));
                return SparseGpt(weights, rows, hessian, pattern, options);
            default:
                throw new ArgumentOutOfRangeException(nameof(method), method, "unknown pruning method");
        }
    }

    /// <summary>SparseGPT with a Hessian prepared once (in column order, no activation order) for every matrix that reads
    /// the same input.</summary>
    public static PruningResult SparseGpt(ReadOnlySpan<float> weights, int rows, GptqHessian hessian, SparsityPattern pattern, PruningOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        options ??= new PruningOptions();
        if (hessian.ActivationOrder)
            throw new ArgumentException("SparseGPT processes columns in order: prepare the Hessian without activation order", nameof(hessian));
        int n = hessian.Columns;
        var w = Check(weights, rows, n, pattern);
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++)
            {
                if (hessian.Dead[j])
                    w[(long)r * n + j] = 0; // an input that was always zero: its weight does not matter
            }
        }
        var mask = new bool[w.Length];
        Array.Fill(mask, true);
        var u = hessian.Factor;
        switch (pattern)
        {
            case SparsityPattern.Rows p:
            {
                // Output rows are independent: nothing can compensate a removed row. Score = its output energy wᵀHw.
                var h = hessian.Matrix;
                var score = new double[rows];
                ForRows(rows, options, r =>
                {
                    var row = new ReadOnlySpan<float>(w, r * n, n);
                    var wd = new double[n];
                    for (int j = 0; j < n; j++)
                        wd[j] = row[j];
                    double s = 0;
                    for (int i = 0; i < n; i++)
                        s += wd[i] * LinearAlgebra.Dot(new ReadOnlySpan<double>(h, i * n, n), wd);
                    score[r] = s;
                });
                PruneRowGroups(w, mask, rows, n, p, score);
                break;
            }
            case SparsityPattern.Columns p:
            {
                // OBS saliency of removing column j from every row: Σ_r W[r, j]² / [H⁻¹]ⱼⱼ, with H⁻¹ = UᵀU so [H⁻¹]ⱼⱼ = Σ_k U[k, j]².
                var score = new double[n];
                for (int j = 0; j < n; j++)
                {
                    double inverse = 0;
                    for (int k = 0; k <= j; k++)
                        inverse += u[(long)k * n + j] * u[(long)k * n + j];
                    double s = 0;
                    for (int r = 0; r < rows; r++)
                        s += (double)w[(long)r * n + j] * w[(long)r * n + j];
                    score[j] = s / inverse;
                }
                var pruned = PrunedGroups(score, p.GroupSize, p.Fraction);
                ForRows(rows, options, r => SparseGptRow(w, mask, r, n, u, options.BlockSize, pruned));
                break;
            }
            case SparsityPattern.Unstructured p:
            {
                int pruned = p.PrunedPerRow(n);
                ForRows(rows, options, r => SparseGptRow(w, mask, r, n, u, options.BlockSize, null, pruned));
                break;
            }
            case SparsityPattern.NOfM p:
            {
                int groupSize = p.M, keep = p.N;
                ForRows(rows, options, r => SparseGptRow(w, mask, r, n, u, (options.BlockSize + groupSize - 1) / groupSize * groupSize, null, groupSize: groupSize, keep: keep));
                break;
            }
            default:
                throw new ArgumentException($"unknown pattern {pattern}", nameof(pattern));
        }
        for (long i = 0; i < w.LongLength; i++)
        {
            if (!float.IsFinite(w[i]))
                throw new InvalidOperationException($"SparseGPT produced {w[i]} at ({i / n}, {i % n})");
        }
        return new PruningResult(w, mask, rows, n);
    }

    // One row of SparseGPT: columns in order, in batches of `block`; a column removed from the row gets error e = w_j / U_jj,
    // which the columns after it absorb through U's row j (w_k -= e U_jk): inside the batch at once, after it lazily.
    // Which columns are removed: `fixedPruned` (structured); or, unstructured, `prunedPerRow` in all, as many in each batch as
    // the row's initial scores w_j² / U_jj² put below the row's threshold, chosen at the batch's start as the least scores of
    // the weights updated so far; or per group of `groupSize` the groupSize − keep of least w_j² / U_jj² (N:M), from the
    // weights updated so far.
    private static void SparseGptRow(float[] weights, bool[] mask, int r, int n, double[] u, int block,
        bool[]? fixedPruned, int prunedPerRow = -1, int groupSize = 0, int keep = 0)
    {
        var w = new double[n];
        for (int j = 0; j < n; j++)
            w[j] = weights[(long)r * n + j];
        var rowMask = mask.AsSpan((int)((long)r * n), n);
        var errors = new double[block];
        var scores = new double[Math.Max(block, n)];
        var order = new int[Math.Max(block, n)];
        int[]? prunedInBlock = null;
        if (prunedPerRow >= 0)
        {
            prunedInBlock = new int[(n + block - 1) / block];
            for (int j = 0; j < n; j++)
            {
                double d = u[(long)j * n + j];
                scores[j] = w[j] * w[j] / (d * d);
            }
            foreach (int j in Smallest(scores.AsSpan(0, n), order, prunedPerRow))
                prunedInBlock[j / block]++;
        }
        for (int i1 = 0; i1 < n; i1 += block)
        {
            int i2 = Math.Min(n, i1 + block), width = i2 - i1;
            if (prunedInBlock is not null)
            {
                for (int j = i1; j < i2; j++)
                {
                    double d = u[(long)j * n + j];
                    scores[j - i1] = w[j] * w[j] / (d * d);
                }
                foreach (int j in Smallest(scores.AsSpan(0, width), order, prunedInBlock[i1 / block]))
                    rowMask[i1 + j] = false;
            }
            else if (fixedPruned is not null)
            {
                for (int j = i1; j < i2; j++)
                    rowMask[j] = !fixedPruned[j];
            }
            for (int j = i1; j < i2; j++)
            {
                if (groupSize > 0 && (j - i1) % groupSize == 0)
                {
                    for (int k = j; k < j + groupSize; k++)
                    {
                        double d = u[(long)k * n + k];
                        scores[k - i1] = w[k] * w[k] / (d * d);
                    }
                    foreach (int k in Smallest(scores.AsSpan(j - i1, groupSize), order, groupSize - keep))
                        rowMask[j + k] = false;
                }
                if (rowMask[j])
                {
                    errors[j - i1] = 0;
                    continue;
                }
                double e = w[j] / u[(long)j * n + j];
                errors[j - i1] = e;
                w[j] = 0;
                LinearAlgebra.Axpy(-e, new ReadOnlySpan<double>(u, j * n + j + 1, i2 - j - 1), w.AsSpan(j + 1, i2 - j - 1));
            }
            if (i2 < n)
            {
                for (int j = i1; j < i2; j++)
                {
                    if (errors[j - i1] != 0)
                        LinearAlgebra.Axpy(-errors[j - i1], new ReadOnlySpan<double>(u, j * n + i2, n - i2), w.AsSpan(i2, n - i2));
                }
            }
        }
        for (int j = 0; j < n; j++)
            weights[(long)r * n + j] = rowMask[j] ? (float)w[j] : 0f;
    }

    // Magnitude and Wanda: score[r, j] = |W[r, j]| · columnScale[j], the least removed, nothing else changed.
    private static PruningResult ByScore(ReadOnlySpan<float> weights, int rows, int columns, SparsityPattern pattern, float[] columnScale, PruningOptions options)
    {
        var w = Check(weights, rows, columns, pattern);
        int n = columns;
        var mask = new bool[w.Length];
        Array.Fill(mask, true);
        double Score(int r, int j) => Math.Abs((double)w[(long)r * n + j]) * columnScale[j];
        switch (pattern)
        {
            case SparsityPattern.Unstructured p:
            {
                int pruned = p.PrunedPerRow(n);
                ForRows(rows, options, r =>
                {
                    var scores = new double[n];
                    for (int j = 0; j < n; j++)
                        scores[j] = Score(r, j);
                    foreach (int j in Smallest(scores, new int[n], pruned))
                        mask[(long)r * n + j] = false;
                });
                break;
            }
            case SparsityPattern.NOfM p:
            {
                ForRows(rows, options, r =>
                {
                    var scores = new double[p.M];
                    var order = new int[p.M];
                    for (int g = 0; g < n; g += p.M)
                    {
                        for (int k = 0; k < p.M; k++)
                            scores[k] = Score(r, g + k);
                        foreach (int k in Smallest(scores, order, p.M - p.N))
                            mask[(long)r * n + g + k] = false;
                    }
                });
                break;
            }
            case SparsityPattern.Rows p:
            {
                var score = new double[rows];
                for (int r = 0; r < rows; r++)
                {
                    for (int j = 0; j < n; j++)
                        score[r] += Score(r, j);
                }
                PruneRowGroups(w, mask, rows, n, p, score);
                break;
            }
            case SparsityPattern.Columns p:
            {
                var score = new double[n];
                for (int r = 0; r < rows; r++)
                {
                    for (int j = 0; j < n; j++)
                        score[j] += Score(r, j);
                }
                var pruned = PrunedGroups(score, p.GroupSize, p.Fraction);
                for (long i = 0; i < mask.LongLength; i++)
                    mask[i] = !pruned[i % n];
                break;
            }
            default:
                throw new ArgumentException($"unknown pattern {pattern}", nameof(pattern));
        }
        for (long i = 0; i < w.LongLength; i++)
        {
            if (!mask[i])
                w[i] = 0;
        }
        return new PruningResult(w, mask, rows, n);
    }

    private static void PruneRowGroups(float[] w, bool[] mask, int rows, int n, SparsityPattern.Rows pattern, double[] rowScore)
    {
        var pruned = PrunedGroups(rowScore, pattern.GroupSize, pattern.Fraction);
        for (int r = 0; r < rows; r++)
        {
            if (!pruned[r])
                continue;
            mask.AsSpan((int)((long)r * n), n).Clear();
            w.AsSpan((int)((long)r * n), n).Clear();
        }
    }

    // pruned[i] for every element i of the consecutive groups of `groupSize` with the least summed score.
    private static bool[] PrunedGroups(double[] score, int groupSize, double fraction)
    {
        int groups = score.Length / groupSize;
        var groupScore = new double[groups];
        for (int i = 0; i < score.Length; i++)
            groupScore[i / groupSize] += score[i];
        var pruned = new bool[score.Length];
        foreach (int g in Smallest(groupScore, new int[groups], SparsityPattern.PrunedGroups(fraction, groups)))
            pruned.AsSpan(g * groupSize, groupSize).Fill(true);
        return pruned;
    }

    // The indices of the `count` least scores, ties to the lower index.
    private static ReadOnlySpan<int> Smallest(ReadOnlySpan<double> scores, int[] order, int count)
    {
        var indices = order.AsSpan(0, scores.Length);
        for (int i = 0; i < indices.Length; i++)
            indices[i] = i;
        var keys = scores.ToArray();
        keys.AsSpan().Sort(indices, (a, b) => a.CompareTo(b));
        // Sort is not stable: order equal scores by index.
        for (int i = 0; i < indices.Length;)
        {
            int end = i + 1;
            while (end < indices.Length && keys[end] == keys[i])
                end++;
            indices[i..end].Sort();
            i = end;
        }
        return indices[..count];
    }

    private static float[] Check(ReadOnlySpan<float> weights, int rows, int columns, SparsityPattern pattern)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        if (weights.Length != (long)rows * columns)
            throw new ArgumentException($"{rows} x {columns} weights expected, got {weights.Length}", nameof(weights));
        pattern.Validate(rows, columns);
        for (int i = 0; i < weights.Length; i++)
        {
            if (!float.IsFinite(weights[i]))
                throw new ArgumentException($"weight ({i / columns}, {i % columns}) is {weights[i]}", nameof(weights));
        }
        return weights.ToArray();
    }

    private static float[] Ones(int n)
    {
        var ones = new float[n];
        Array.Fill(ones, 1f);
        return ones;
    }

    private static void ForRows(int rows, PruningOptions options, Action<int> body)
    {
        if (options.Threads <= 1 || rows < 2)
        {
            for (int r = 0; r < rows; r++)
                body(r);
        }
        else
        {
            Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = options.Threads }, body);
        }
    }
}
