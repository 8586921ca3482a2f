using System.Buffers.Binary;
using Squeeze.Calibration;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Quantization;

/// <summary>
/// Fits <see cref="CodebookWeight"/>s: per group, sensitivity-weighted k-means in one dimension (SqueezeLLM's weighted
/// k-means, NUPES' non-uniform grid). The weight of each value is its sensitivity, e.g. the imatrix (mean x² of its input
/// column, <see cref="Calibration.ActivationStatistics.Importance"/>) or the Hessian diagonal. Deterministic: Lloyd
/// iterations run from two starts, weighted quantiles and an even grid over [min, max], each until no assignment changes
/// or <c>maxIterations</c>, and the start ending with the smaller weighted error is kept; the centroids
/// are then rounded to f16 and every value takes the nearest rounded centroid (ties: the lower code).
/// </summary>
public static class CodebookQuantizer
{
    /// <summary>Lloyd iterations allowed per group unless told otherwise.</summary>
    public const int DefaultMaxIterations = 50;

    /// <summary>
    /// Fits one group's codebook: <paramref name="table"/> gets 2^bits f16 centroids in ascending order, <paramref name="codes"/>
    /// the index of the centroid nearest to each value. Values of weight 0 do not move centroids (when every weight is 0,
    /// all count 1). When the group has at most 2^bits distinct values each gets a centroid of its own.
    /// </summary>
    /// <param name="values">The group's values, all finite.</param>
    /// <param name="weights">Per-value weights ≥ 0, same length (empty: all 1).</param>
    /// <param name="bits">Bits per code, 2..8.</param>
    /// <param name="maxIterations">Cap on Lloyd iterations (≥ 0).</param>
    /// <param name="table">[2^bits] f16 centroids.</param>
    /// <param name="codes">[values.Length] codes.</param>
    /// <returns>Lloyd iterations run (both starts together).</returns>
    /// <exception cref="ArgumentException">A length is wrong, a value is not finite, a weight is negative or not finite,
    /// or a centroid overflows f16.</exception>
    public static int FitGroup(ReadOnlySpan<float> values, ReadOnlySpan<float> weights, int bits, int maxIterations, Span<ushort> table, Span<byte> codes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, CodebookWeight.MinBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, CodebookWeight.MaxBits);
        ArgumentOutOfRangeException.ThrowIfNegative(maxIterations);
        int n = values.Length, levels = 1 << bits;
        if (n == 0)
            throw new ArgumentException("a group needs at least one value", nameof(values));
        if (!weights.IsEmpty && weights.Length != n)
            throw new ArgumentException($"{weights.Length} weights for {n} values", nameof(weights));
        if (table.Length != levels)
            throw new ArgumentException($"a {bits}-bit codebook has {levels} entries, table has {table.Length}", nameof(table));
        if (codes.Length != n)
            throw new ArgumentException($"{codes.Length} codes for {n} values", nameof(codes));

        // Values in ascending order, with their weights.
        var order = new int[n];
        var keys = values.ToArray();
        var sorted = new double[n];
        var w = new double[n];
        double totalWeight = 0;
        for (int i = 0; i < n; i++)
        {
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"value {i} is {values[i]}; only finite values can be quantized", nameof(values));
            float wi = weights.IsEmpty ? 1 : weights[i];
            if (!(wi >= 0) || !float.IsFinite(wi))
                throw new ArgumentException($"weight {i} is {wi}; weights must be finite and >= 0", nameof(weights));
            order[i] = i;
            totalWeight += wi;
        }
        Array.Sort(keys, order);
        for (int i = 0; i < n; i++)
        {
            sorted[i] = values[order[i]];
            w[i] = totalWeight > 0 ? (weights.IsEmpty ? 1 : weights[order[i]]) : 1;
        }
        if (totalWeight <= 0)
            totalWeight = n;

        var centroids = new double[levels];
        int distinct = 1;
        for (int i = 1; i < n; i++)
        {
            if (sorted[i] != sorted[i - 1])
                distinct++;
        }
        int iterations = 0;
        if (distinct <= levels)
        {
            // Every distinct value gets its own centroid; the unused entries repeat the largest.
            int k = 0;
            centroids[0] = sorted[0];
            for (int i = 1; i < n; i++)
            {
                if (sorted[i] != sorted[i - 1])
                    centroids[++k] = sorted[i];
            }
            for (int j = k + 1; j < levels; j++)
                centroids[j] = sorted[n - 1];
        }
        else
        {
            // Two starts, each refined by Lloyd; the one with the smaller weighted error is kept (the first on a tie).
            // Weighted quantiles: centroid k at the first value whose cumulative weight reaches (k + ½)/levels of the total.
            double cumulative = 0;
            int at = 0;
            for (int k = 0; k < levels; k++)
            {
                double target = (k + 0.5) / levels * totalWeight;
                while (at < n - 1 && cumulative + w[at] < target)
                    cumulative += w[at++];
                centroids[k] = sorted[at];
            }
            double error = Lloyd(sorted, w, centroids, maxIterations, ref iterations);
            // A uniform grid over [min, max] (what Lloyd improves on is then at least the plain uniform quantizer).
            var even = new double[levels];
            for (int k = 0; k < levels; k++)
                even[k] = sorted[0] + (sorted[n - 1] - sorted[0]) * k / (levels - 1);
            if (Lloyd(sorted, w, even, maxIterations, ref iterations) < error)
                centroids = even;
        }

        // Round to f16 (monotone, so the table stays ascending) and take the nearest rounded centroid.
        var rounded = new double[levels];
        for (int k = 0; k < levels; k++)
        {
            ushort h = HalfConversions.F32ToF16((float)centroids[k]);
            float v = HalfConversions.F16ToF32(h);
            if (!float.IsFinite(v))
                throw new ArgumentException($"centroid {centroids[k]} does not fit in f16", nameof(values));
            table[k] = h;
            rounded[k] = v;
        }
        var nearest = new int[n];
        Assign(sorted, rounded, nearest);
        for (int i = 0; i < n; i++)
            codes[order[i]] = (byte)nearest[i];
        return iterations;
    }

    // Lloyd iterations from `centroids` (updated in place) until no assignment changes or the cap; adds the iterations run
    // to `iterations` and returns the weighted squared error of the final assignment.
    private static double Lloyd(double[] sorted, double[] w, double[] centroids, int maxIterations, ref int iterations)
    {
        int n = sorted.Length, levels = centroids.Length;
        var assignment = new int[n];
        Assign(sorted, centroids, assignment);
        var sum = new double[levels];
        var mass = new double[levels];
        for (int iteration = 0; iteration < maxIterations; iteration++)
        {
            iterations++;
            Array.Clear(sum);
            Array.Clear(mass);
            for (int i = 0; i < n; i++)
            {
                sum[assignment[i]] += w[i] * sorted[i];
                mass[assignment[i]] += w[i];
            }
            for (int k = 0; k < levels; k++)
            {
                // A cluster without weight keeps its centroid; the weighted means of contiguous runs stay in order.
                if (mass[k] > 0)
                    centroids[k] = Math.Clamp(sum[k] / mass[k], sorted[0], sorted[n - 1]);
            }
            if (!Assign(sorted, centroids, assignment))
                break;
        }
        double error = 0;
        for (int i = 0; i < n; i++)
        {
            double d = sorted[i] - centroids[assignment[i]];
            error += w[i] * d * d;
        }
        return error;
    }

    // assignment[i] = the nearest centroid to sorted[i] (ties: the lower index), one sweep since both are ascending.
    // Returns whether any assignment changed.
    private static bool Assign(double[] sorted, double[] centroids, int[] assignment)
    {
        bool changed = false;
        int k = 0, last = centroids.Length - 1;
        for (int i = 0; i < sorted.Length; i++)
        {
            double v = sorted[i];
            while (k < last && v > (centroids[k] + centroids[k + 1]) * 0.5)
                k++;
            if (assignment[i] != k)
            {
                assignment[i] = k;
                changed = true;
            }
        }
        return changed;
    }

    /// <summary>
    /// Quantizes <paramref name="weights"/> ([rows, columns] row-major) to a codebook per group of <paramref name="group"/>
    /// values (0: one per row), each fitted by <see cref="FitGroup"/> with <paramref name="importance"/> as the value weights.
    /// </summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="weights">[rows, columns] values.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="columns">Input features.</param>
    /// <param name="importance">Value weights: [columns] (one per input column), [rows, columns], or empty (all 1).</param>
    /// <param name="bits">Bits per code, 2..8.</param>
    /// <param name="group">Values per codebook, dividing <paramref name="columns"/>; 0 means <paramref name="columns"/>.</param>
    /// <param name="maxIterations">Cap on Lloyd iterations per group.</param>
    public static CodebookWeight Quantize(string name, ReadOnlySpan<float> weights, int rows, int columns, ReadOnlySpan<float> importance,
        int bits, int group, int maxIterations = DefaultMaxIterations)
    {
        group = CheckShape(weights, rows, columns, importance, bits, group);
        int groups = columns / group, levels = 1 << bits;
        int rowBytes = (int)(((long)columns * bits + 7) / 8);
        var packed = new byte[(long)rows * rowBytes];
        var table = new ushort[(long)rows * groups * levels];
        var codes = new byte[columns];
        bool perElement = importance.Length == weights.Length && importance.Length != columns;
        for (int r = 0; r < rows; r++)
        {
            var row = weights.Slice(r * columns, columns);
            var rowImportance = importance.IsEmpty ? default : perElement ? importance.Slice(r * columns, columns) : importance;
            for (int g = 0; g < groups; g++)
            {
                FitGroup(row.Slice(g * group, group), rowImportance.IsEmpty ? default : rowImportance.Slice(g * group, group), bits, maxIterations,
                    table.AsSpan((r * groups + g) * levels, levels), codes.AsSpan(g * group, group));
            }
            UniformCodec.Pack(codes, bits, packed.AsSpan(r * rowBytes, rowBytes));
        }
        return new CodebookWeight(name, rows, columns, bits, group, packed, table);
    }

    /// <summary>
    /// GPTQ with codebooks as the grid (<see cref="CodebookGrid"/>): a group's codebook is fitted by weighted k-means to
    /// the error-updated weights when GPTQ reaches the group, then each column is rounded to it and its error compensated
    /// on the columns not yet quantized. The importance for the fits is <see cref="GptqOptions.Importance"/> (or diag(H)).
    /// </summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="weights">[rows, hessian.Columns] values.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="hessian">The input's prepared Hessian.</param>
    /// <param name="bits">Bits per code, 2..8.</param>
    /// <param name="group">Values per codebook; 0 means one per row.</param>
    /// <param name="options">GPTQ settings (refinement passes run coordinate descent over the codes with the codebooks fixed).</param>
    public static CodebookWeight QuantizeGptq(string name, ReadOnlySpan<float> weights, int rows, GptqHessian hessian, int bits, int group, GptqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        int columns = hessian.Columns;
        group = CheckShape(weights, rows, columns, default, bits, group);
        var grid = new CodebookGrid(bits, group, DefaultMaxIterations);
        var result = Gptq.Quantize(weights, rows, hessian, grid, options);
        return grid.ToWeight(name, rows, columns, result.Data);
    }

    private static int CheckShape(ReadOnlySpan<float> weights, int rows, int columns, ReadOnlySpan<float> importance, int bits, int group)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, CodebookWeight.MinBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, CodebookWeight.MaxBits);
        if (weights.Length != (long)rows * columns)
            throw new ArgumentException($"{rows} x {columns} weights expected, got {weights.Length}", nameof(weights));
        if (!importance.IsEmpty && importance.Length != columns && importance.Length != weights.Length)
            throw new ArgumentException($"importance has {importance.Length} values; [{columns}] or [{rows}, {columns}] expected", nameof(importance));
        if (group == 0)
            group = columns;
        if (group < 0 || columns % group != 0)
            throw new ArgumentException($"group size {group} does not divide the row length {columns}", nameof(group));
        return group;
    }
}

/// <summary>
/// A codebook per group as a GPTQ grid: a block is one group's table (2^bits f16, ascending) followed by one code byte
/// per value (unpacked; <see cref="ToWeight"/> packs them). Values are monotone in the code because the table is sorted.
/// </summary>
public sealed class CodebookGrid : IBlockGrid
{
    private readonly int bits;
    private readonly int maxIterations;

    /// <summary>A grid of <paramref name="bits"/>-bit codebooks over groups of <paramref name="group"/> values.</summary>
    public CodebookGrid(int bits, int group, int maxIterations)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, CodebookWeight.MinBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, CodebookWeight.MaxBits);
        ArgumentOutOfRangeException.ThrowIfLessThan(group, 1);
        this.bits = bits;
        this.maxIterations = maxIterations;
        BlockSize = group;
    }

    /// <inheritdoc />
    public int BlockSize { get; }

    /// <inheritdoc />
    public int Levels => 1 << bits;

    /// <inheritdoc />
    public int BlockBytes => 2 * Levels + BlockSize;

    /// <inheritdoc />
    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<ushort> table = stackalloc ushort[Levels];
        CodebookQuantizer.FitGroup(weights, importance, bits, maxIterations, table, block.Slice(2 * Levels, BlockSize));
        for (int k = 0; k < table.Length; k++)
            BinaryPrimitives.WriteUInt16LittleEndian(block[(2 * k)..], table[k]);
    }

    /// <inheritdoc />
    public float Value(ReadOnlySpan<byte> block, int index, int code) => BlockGrid.Half(block, 2 * code);

    /// <inheritdoc />
    public void SetCode(Span<byte> block, int index, int code) => block[2 * Levels + index] = (byte)code;

    /// <summary>Packs GPTQ's blocks ([rows, columns / group] blocks of this grid) into a <see cref="CodebookWeight"/>.</summary>
    public CodebookWeight ToWeight(string name, int rows, int columns, ReadOnlySpan<byte> blocks)
    {
        int groups = columns / BlockSize, levels = Levels;
        if (columns % BlockSize != 0 || blocks.Length != (long)rows * groups * BlockBytes)
            throw new ArgumentException($"{rows} rows of {groups} blocks of {BlockBytes} bytes expected, got {blocks.Length} bytes", nameof(blocks));
        int rowBytes = (int)(((long)columns * bits + 7) / 8);
        var packed = new byte[(long)rows * rowBytes];
        var table = new ushort[(long)rows * groups * levels];
        var codes = new byte[columns];
        for (int r = 0; r < rows; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                var block = blocks.Slice((r * groups + g) * BlockBytes, BlockBytes);
                for (int k = 0; k < levels; k++)
                    table[(r * groups + g) * levels + k] = BinaryPrimitives.ReadUInt16LittleEndian(block[(2 * k)..]);
                block.Slice(2 * levels, BlockSize).CopyTo(codes.AsSpan(g * BlockSize, BlockSize));
            }
            UniformCodec.Pack(codes, bits, packed.AsSpan(r * rowBytes, rowBytes));
        }
        return new CodebookWeight(name, rows, columns, bits, BlockSize, packed, table);
    }
}
