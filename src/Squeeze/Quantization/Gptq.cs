using Squeeze.Calibration;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>Settings of <see cref="Gptq.Quantize(ReadOnlySpan{float}, int, GptqHessian, IBlockGrid, GptqOptions)"/>.</summary>
public sealed record GptqOptions
{
    /// <summary>Damping added to H's diagonal, as a fraction of its mean diagonal (the reference's <c>percdamp</c>).</summary>
    public double DampingFraction { get; init; } = 0.01;

    /// <summary>Columns per lazy batch; 0 means 128 rounded up to a whole number of blocks.</summary>
    public int BatchSize { get; init; }

    /// <summary>Process columns by descending H[i, i] (activation order); the output is in the original order.</summary>
    public bool ActivationOrder { get; init; }

    /// <summary>Per-column weights for fitting block scales ([columns], e.g. the imatrix); null means diag(H).</summary>
    public IReadOnlyList<float>? Importance { get; init; }

    /// <summary>
    /// Refinement after GPTQ, up to this many passes: coordinate descent (as QuantEase), each weight in turn moved to the
    /// grid value that minimises the layer's output error given all the others (a pass that changes nothing ends early);
    /// then, for one-scale-per-block grids (<see cref="IScaledGrid"/>), up to this many rounds of re-fitting a row's scales
    /// exactly to its codes followed by more descent, each kept only if the error falls. 0: plain GPTQ.
    /// </summary>
    public int RefinePasses { get; init; }

    /// <summary>Threads over row tiles; the result does not depend on it.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Checked before each tile of 32 rows, so a large matrix stops within a tile's time of being cancelled
    /// (an <see cref="OperationCanceledException"/>).</summary>
    public CancellationToken Cancellation { get; init; }
}

/// <summary>What <see cref="Gptq.Quantize(ReadOnlySpan{float}, int, GptqHessian, IBlockGrid, GptqOptions)"/> produced.</summary>
public sealed class GptqResult
{
    internal GptqResult(byte[] data, float[] dequantized, double damping, int deadColumns)
    {
        Data = data;
        Dequantized = dequantized;
        Damping = damping;
        DeadColumns = deadColumns;
    }

    /// <summary>The packed rows: rows × (columns / BlockSize) blocks of the grid's format.</summary>
    public byte[] Data { get; }

    /// <summary>The grid values chosen, [rows, columns] row-major, original column order; equal to decoding <see cref="Data"/>.</summary>
    public float[] Dequantized { get; }

    /// <summary>The damping actually added to H's diagonal (raised tenfold while H was not positive definite).</summary>
    public double Damping { get; }

    /// <summary>Columns whose input was always zero (H[i, i] = 0): their weights were set to zero.</summary>
    public int DeadColumns { get; }
}

/// <summary>
/// GPTQ (Frantar et al. 2022): quantizes a weight matrix column by column, each column's rounding error being
/// compensated on the columns not yet quantized through the upper Cholesky factor of H⁻¹, H = XᵀX / n of the layer's
/// calibration inputs. Block formats keep their shared scales: a block's scales are fitted (through
/// <see cref="IBlockGrid.Fit"/>) from the error-updated weights of that block when GPTQ reaches its first column; then
/// each column is rounded to the grid those scales allow. Rows are independent, so they are processed in tiles in
/// parallel; within a tile, updates are applied lazily per batch of columns.
/// </summary>
public static class Gptq
{
    private const int TileRows = 32;

    /// <summary>
    /// Quantizes <paramref name="weights"/> ([rows, columns] row-major) to <paramref name="grid"/> under the Hessian
    /// <paramref name="hessian"/> ([columns, columns] row-major, symmetric, positive semi-definite), prepared with
    /// <see cref="GptqOptions.DampingFraction"/> and <see cref="GptqOptions.ActivationOrder"/>.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree, the columns are not whole blocks, or a value is not finite.</exception>
    public static GptqResult Quantize(ReadOnlySpan<float> weights, int rows, int columns, ReadOnlySpan<double> hessian, IBlockGrid grid, GptqOptions? options = null)
    {
        options ??= new GptqOptions();
        var prepared = GptqHessian.Prepare(hessian, columns, options.DampingFraction, options.ActivationOrder, Math.Max(1, options.Threads));
        return Quantize(weights, rows, prepared, grid, options);
    }

    /// <summary>
    /// Quantizes <paramref name="weights"/> ([rows, hessian.Columns] row-major) to <paramref name="grid"/> with a Hessian
    /// prepared once (layers that read the same input share it: q/k/v, gate/up). The damping and the column order come from
    /// <paramref name="hessian"/>; <see cref="GptqOptions.DampingFraction"/> and <see cref="GptqOptions.ActivationOrder"/> are not used.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes disagree, the columns are not whole blocks, or a value is not finite.</exception>
    public static GptqResult Quantize(ReadOnlySpan<float> weights, int rows, GptqHessian hessian, IBlockGrid grid, GptqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(hessian);
        ArgumentNullException.ThrowIfNull(grid);
        options ??= new GptqOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        int n = hessian.Columns, bs = grid.BlockSize;
        if (weights.Length != (long)rows * n)
            throw new ArgumentException($"{rows} x {n} weights expected, got {weights.Length}", nameof(weights));
        if (n % bs != 0)
            throw new ArgumentException($"{n} columns are not a whole number of blocks of {bs}", nameof(weights));
        if (options.Importance is not null && options.Importance.Count != n)
            throw new ArgumentException($"importance has {options.Importance.Count} weights for {n} columns", nameof(options));
        for (int i = 0; i < weights.Length; i++)
        {
            if (!float.IsFinite(weights[i]))
                throw new ArgumentException($"weight ({i / n}, {i % n}) is {weights[i]}", nameof(weights));
        }

        // Importance for the scale fits (original order): given, or diag(H) (dead inputs count 1).
        var importance = new float[n];
        for (int i = 0; i < n; i++)
            importance[i] = options.Importance is null ? hessian.Diagonal[i] : options.Importance[i];
        for (int i = 0; i < n; i++)
        {
            if (!float.IsFinite(importance[i]) || importance[i] < 0)
                throw new ArgumentException($"importance of column {i} is {importance[i]}", nameof(options));
        }

        int batch = options.BatchSize > 0 ? options.BatchSize : 128;
        batch = (batch + bs - 1) / bs * bs;
        int blocksPerRow = n / bs;
        int rowBytes = blocksPerRow * grid.BlockBytes;
        var data = new byte[(long)rows * rowBytes];
        var result = new float[(long)rows * n];
        var w0 = weights.ToArray();
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < n; i++)
            {
                if (hessian.Dead[i])
                    w0[r * n + i] = 0;
            }
        }

        int tiles = (rows + TileRows - 1) / TileRows;
        ArgumentOutOfRangeException.ThrowIfNegative(options.RefinePasses, nameof(options));
        var context = new TileContext(grid, n, batch, hessian, importance, w0, data, result, rowBytes, options.RefinePasses);
        int threads = Math.Max(1, options.Threads);
        if (threads == 1 || tiles == 1)
        {
            for (int t = 0; t < tiles; t++)
            {
                options.Cancellation.ThrowIfCancellationRequested();
                context.Run(t * TileRows, Math.Min(rows, (t + 1) * TileRows));
            }
        }
        else
        {
            Parallel.For(0, tiles, new ParallelOptions { MaxDegreeOfParallelism = threads, CancellationToken = options.Cancellation },
                t => context.Run(t * TileRows, Math.Min(rows, (t + 1) * TileRows)));
        }
        for (long i = 0; i < result.LongLength; i++)
        {
            if (!float.IsFinite(result[i]))
                throw new InvalidOperationException($"GPTQ produced {result[i]} at ({i / n}, {i % n})");
        }
        return new GptqResult(data, result, hessian.Damping, hessian.DeadColumns);
    }

    /// <summary>
    /// Quantizes a model's weight tensor to <paramref name="type"/> with GPTQ, using the Hessian (XᵀX / n) of its input
    /// from <paramref name="stats"/> and, unless <see cref="GptqOptions.Importance"/> is set, the imatrix (mean x²) for the
    /// scale fits. <see cref="GptqResult.Data"/> is the tensor's bytes in <paramref name="type"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The tensor is not a linear layer, or its columns are not whole blocks of the type.</exception>
    /// <exception cref="KeyNotFoundException">The statistics lack the tensor's input.</exception>
    /// <exception cref="InvalidOperationException">The statistics lack the Gram matrix.</exception>
    public static GptqResult QuantizeTensor(Tensor weight, CalibrationStatistics stats, GgmlType type, GptqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(stats);
        if (!LinearInputs.TryGet(weight.Name, out int layer, out var kind))
            throw new ArgumentException($"tensor '{weight.Name}' is not a linear layer with calibration statistics", nameof(weight));
        var entry = stats.Get(layer, kind);
        if (entry.Width != weight.Columns)
            throw new ArgumentException($"tensor '{weight.Name}' has {weight.Columns} columns but its input statistics {entry.Width}", nameof(weight));
        options ??= new GptqOptions();
        var hessian = GptqHessian.Prepare(entry.Hessian(), entry.Width, options.DampingFraction, options.ActivationOrder, Math.Max(1, options.Threads));
        return QuantizeTensor(weight, entry, hessian, type, options);
    }

    /// <summary>As <see cref="QuantizeTensor(Tensor, CalibrationStatistics, GgmlType, GptqOptions?)"/> with the input's
    /// statistics and its Hessian already prepared (share one between q/k/v and between gate/up).</summary>
    public static GptqResult QuantizeTensor(Tensor weight, ActivationStatistics input, GptqHessian hessian, GgmlType type, GptqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(weight);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(hessian);
        if (input.Width != weight.Columns || hessian.Columns != weight.Columns)
            throw new ArgumentException($"tensor '{weight.Name}' has {weight.Columns} columns but its input statistics {input.Width} and Hessian {hessian.Columns}", nameof(weight));
        var values = new float[weight.ElementCount];
        Dequantize.Tensor(weight, values);
        options ??= new GptqOptions();
        if (options.Importance is null)
            options = options with { Importance = input.Importance() };
        return Quantize(values, checked((int)weight.Rows), hessian, BlockGrid.For(type), options);
    }

    /// <summary>
    /// Round-to-nearest with the same grid: each block's scales fitted to the original weights (importance-weighted),
    /// each value rounded to the nearest grid value. [rows, columns] grid values; <paramref name="data"/> gets the packed rows.
    /// </summary>
    public static float[] RoundToNearest(ReadOnlySpan<float> weights, int rows, int columns, IBlockGrid grid, ReadOnlySpan<float> importance, out byte[] data)
    {
        ArgumentNullException.ThrowIfNull(grid);
        int bs = grid.BlockSize;
        if (columns % bs != 0 || weights.Length != (long)rows * columns)
            throw new ArgumentException($"{rows} x {columns} weights in blocks of {bs} expected, got {weights.Length} values", nameof(weights));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"importance has {importance.Length} weights for {columns} columns", nameof(importance));
        int blocks = columns / bs;
        data = new byte[(long)rows * blocks * grid.BlockBytes];
        var result = new float[(long)rows * columns];
        for (int r = 0; r < rows; r++)
        {
            for (int b = 0; b < blocks; b++)
            {
                var block = data.AsSpan((r * blocks + b) * grid.BlockBytes, grid.BlockBytes);
                var w = weights.Slice(r * columns + b * bs, bs);
                grid.Fit(w, importance.IsEmpty ? default : importance.Slice(b * bs, bs), block);
                for (int j = 0; j < bs; j++)
                {
                    int code = BlockGrid.Round(grid, block, j, w[j], out float v);
                    grid.SetCode(block, j, code);
                    result[r * columns + b * bs + j] = v;
                }
            }
        }
        return result;
    }

    /// <summary>The calibration output error Σ_rows (w − q)ᵀ H (w − q) = ‖X (W − Q)ᵀ‖² / n for H = XᵀX / n.</summary>
    public static double OutputError(ReadOnlySpan<float> weights, ReadOnlySpan<float> quantized, int rows, int columns, ReadOnlySpan<double> hessian)
    {
        if (weights.Length != (long)rows * columns || quantized.Length != weights.Length || hessian.Length != (long)columns * columns)
            throw new ArgumentException("shapes disagree", nameof(quantized));
        var e = new double[columns];
        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < columns; j++)
                e[j] = (double)weights[r * columns + j] - quantized[r * columns + j];
            for (int i = 0; i < columns; i++)
            {
                if (e[i] == 0)
                    continue;
                var hi = hessian.Slice(i * columns, columns);
                double s = 0;
                for (int j = 0; j < columns; j++)
                    s += hi[j] * e[j];
                total += e[i] * s;
            }
        }
        return total;
    }

    // Everything one row tile needs; Run is called for disjoint row ranges, possibly in parallel. Rows are independent and
    // every weight gets exactly the arithmetic of processing its row alone (the same products, rounded and summed in the same
    // order); the rows of a tile are processed together so that each row of U or H is read once per tile, not once per row.
    private sealed class TileContext(IBlockGrid grid, int n, int batch, GptqHessian hessian, float[] importance,
        float[] weights, byte[] data, float[] result, int rowBytes, int refinePasses)
    {
        // Columns quantized one by one before their updates reach the rest of the batch as one row-group product.
        private const int SubBatch = 32;

        // Columns of a descent pass whose updates of the residual outside them are applied together.
        private const int DescentBlock = 64;

        private readonly int[] perm = hessian.Order;
        private readonly int[] position = hessian.Position;
        private readonly double[] u = hessian.Factor;
        private readonly double[] h = hessian.Matrix;

        public void Run(int firstRow, int endRow)
        {
            // The values of every code per scale group of the tile's rows, for grids that declare their groups.
            var tables = grid.ValueGroup > 0 ? new ValueTables(grid, endRow - firstRow, n) : null;
            Quantize(firstRow, endRow, tables);
            if (refinePasses > 0)
                Refine(firstRow, endRow, tables);
        }

        // Refines the rows of a tile: coordinate descent on f(q) = (w − q)ᵀ H (w − q) with the block scales fixed; then, for
        // grids of one scale per block, the scales of a row re-fitted exactly to its codes followed by more descent, kept while
        // the row's f falls.
        private void Refine(int firstRow, int endRow, ValueTables? tables)
        {
            int rows = endRow - firstRow;
            var r = new double[(long)rows * n]; // [rows, n]: H (w − q) per row
            var e = new double[(long)rows * n]; // [rows, n]: scratch
            var all = new bool[rows];
            Array.Fill(all, true);
            Residual(firstRow, rows, all, e, r);
            Descend(firstRow, rows, all, r, tables);
            if (grid is not IScaledGrid scaled)
                return;
            var f = new double[rows];
            for (int t = 0; t < rows; t++)
                f[t] = Objective(firstRow + t, r.AsSpan(t * n, n));
            // H w per row, the same for every round.
            var hw = new double[(long)rows * n];
            for (int t = 0; t < rows; t++)
            {
                for (int j = 0; j < n; j++)
                    e[(long)t * n + j] = weights[(long)(firstRow + t) * n + j];
            }
            LinearAlgebra.DotRows(e, 0, n, h, 0, n, rows, n, n, hw, 0, n);
            var savedData = new byte[rows * rowBytes];
            var savedValues = new float[rows * n];
            var active = new bool[rows];
            Array.Fill(active, true);
            for (int round = 0; round < refinePasses; round++)
            {
                for (int t = 0; t < rows; t++)
                {
                    if (!active[t])
                        continue;
                    var rowData = data.AsSpan((int)((long)(firstRow + t) * rowBytes), rowBytes);
                    var q = result.AsSpan((int)((long)(firstRow + t) * n), n);
                    rowData.CopyTo(savedData.AsSpan(t * rowBytes, rowBytes));
                    q.CopyTo(savedValues.AsSpan(t * n, n));
                    if (!RefitScales(firstRow, firstRow + t, scaled, hw.AsSpan(t * n, n), q, tables))
                        active[t] = false;
                }
                if (!active.Contains(true))
                    break;
                Residual(firstRow, rows, active, e, r);
                Descend(firstRow, rows, active, r, tables);
                for (int t = 0; t < rows; t++)
                {
                    if (!active[t])
                        continue;
                    double refitted = Objective(firstRow + t, r.AsSpan(t * n, n));
                    if (!(refitted < f[t]))
                    {
                        savedData.AsSpan(t * rowBytes, rowBytes).CopyTo(data.AsSpan((int)((long)(firstRow + t) * rowBytes), rowBytes));
                        savedValues.AsSpan(t * n, n).CopyTo(result.AsSpan((int)((long)(firstRow + t) * n), n));
                        for (int b = 0; b < n / grid.BlockSize; b++)
                            tables?.Build(t, b, data.AsSpan((int)((long)(firstRow + t) * rowBytes + b * grid.BlockBytes), grid.BlockBytes));
                        active[t] = false;
                    }
                    else
                    {
                        f[t] = refitted;
                    }
                }
            }
        }

        // r = H (w − q) for the tile's rows marked in rows (one Dot per element, as row by row); e is scratch.
        private void Residual(int firstRow, int rows, bool[] which, double[] e, double[] r)
        {
            int count = 0;
            var index = new int[rows];
            for (int t = 0; t < rows; t++)
            {
                if (!which[t])
                    continue;
                index[count] = t;
                var w = weights.AsSpan((int)((long)(firstRow + t) * n), n);
                var q = result.AsSpan((int)((long)(firstRow + t) * n), n);
                var et = e.AsSpan(count * n, n);
                for (int j = 0; j < n; j++)
                    et[j] = (double)w[j] - q[j];
                count++;
            }
            // The products into e's unused rows when some rows are done, else into r directly.
            if (count == rows)
            {
                LinearAlgebra.DotRows(e, 0, n, h, 0, n, rows, n, n, r, 0, n);
                return;
            }
            var compact = new double[(long)count * n];
            LinearAlgebra.DotRows(e, 0, n, h, 0, n, count, n, n, compact, 0, n);
            for (int c = 0; c < count; c++)
                compact.AsSpan(c * n, n).CopyTo(r.AsSpan(index[c] * n, n));
        }

        private double Objective(int row, ReadOnlySpan<double> r)
        {
            var w = weights.AsSpan((int)((long)row * n), n);
            var q = result.AsSpan((int)((long)row * n), n);
            double f = 0;
            for (int j = 0; j < n; j++)
                f += ((double)w[j] - q[j]) * r[j];
            return f;
        }

        // Coordinate descent with r = H (w − q) kept up to date, for the tile's rows marked in rows: moving q_j by δ changes f
        // by −2δ r_j + δ² H_jj, least at q_j + r_j / H_jj, so q_j takes the grid value nearest to that (the best grid value,
        // the change being a parabola in δ), and r −= δ H[j, :]. A row's passes stop early when one changes nothing. The
        // updates of r inside a block of DescentBlock columns are made at once; those outside it after the block, for
        // all rows together (each element still receives them in column order).
        private void Descend(int firstRow, int rows, bool[] which, double[] r, ValueTables? tables)
        {
            var dead = hessian.Dead;
            int bs = grid.BlockSize, blockBytes = grid.BlockBytes;
            var live = (bool[])which.Clone();
            var delta = new double[rows * DescentBlock]; // [rows, DescentBlock]
            var changed = new int[rows];
            for (int pass = 0; pass < refinePasses && live.Contains(true); pass++)
            {
                Array.Clear(changed);
                for (int b0 = 0; b0 < n; b0 += DescentBlock)
                {
                    int b1 = Math.Min(b0 + DescentBlock, n);
                    Array.Clear(delta);
                    for (int t = 0; t < rows; t++)
                    {
                        if (!live[t])
                            continue;
                        int row = firstRow + t;
                        var q = result.AsSpan((int)((long)row * n), n);
                        var rt = r.AsSpan(t * n, n);
                        for (int j = b0; j < b1; j++)
                        {
                            if (dead[j])
                                continue;
                            double target = q[j] + rt[j] / h[(long)j * n + j];
                            var block = data.AsSpan((int)((long)row * rowBytes + j / bs * blockBytes), blockBytes);
                            int code;
                            float value;
                            if (tables is null)
                            {
                                code = BlockGrid.Round(grid, block, j % bs, target, out value);
                            }
                            else
                            {
                                if (tables.Keeps(t, j, target, q[j]))
                                    continue;
                                code = tables.Round(t, j, target, out value);
                            }
                            if (value == q[j])
                                continue;
                            double d = (double)value - q[j];
                            grid.SetCode(block, j % bs, code);
                            q[j] = value;
                            LinearAlgebra.Axpy(-d, new ReadOnlySpan<double>(h, j * n + b0, b1 - b0), rt[b0..b1]);
                            delta[t * DescentBlock + j - b0] = d;
                            changed[t]++;
                        }
                    }
                    LinearAlgebra.SubtractProducts(delta, 0, DescentBlock, h, b0 * n, n, rows, b1 - b0, b0, r, 0, n);
                    LinearAlgebra.SubtractProducts(delta, 0, DescentBlock, h, b0 * n + b1, n, rows, b1 - b0, n - b1, r, b1, n);
                }
                for (int t = 0; t < rows; t++)
                {
                    if (changed[t] == 0)
                        live[t] = false;
                }
            }
        }

        // With the codes fixed, q = Σ_b d_b φ_b (φ_b: the levels of block b's codes, zero outside it), and f is least where
        // A d = g, A_bc = φ_bᵀ H φ_c, g_b = φ_bᵀ (H w) with H w given. A tiny ridge towards the current scales keeps A invertible when a
        // block's levels are all zero. The scales are stored as f16 and q recomputed from the codes. False if A is singular.
        private bool RefitScales(int firstRow, int row, IScaledGrid scaled, ReadOnlySpan<double> hw, Span<float> q, ValueTables? tables)
        {
            int bs = grid.BlockSize, blockBytes = grid.BlockBytes, blocks = n / bs;
            var codes = new int[n];
            var phi = new double[n];
            var current = new double[blocks];
            for (int j = 0; j < n; j++)
            {
                var block = data.AsSpan((int)((long)row * rowBytes + j / bs * blockBytes), blockBytes);
                codes[j] = BlockGrid.Round(grid, block, j % bs, q[j], out _);
                phi[j] = scaled.Level(codes[j]);
            }
            for (int b = 0; b < blocks; b++)
                current[b] = BlockGrid.Half(data.AsSpan((int)((long)row * rowBytes + b * blockBytes), blockBytes), 0);

            // A column c at a time: v = H φ_c (Σ over the block's columns in order), A[b, c] = Σ_{i ∈ b} φ_i v_i.
            var a = new double[blocks * blocks];
            var v = new double[n];
            for (int c = 0; c < blocks; c++)
            {
                Array.Clear(v);
                for (int j = c * bs; j < (c + 1) * bs; j++)
                {
                    if (phi[j] == 0)
                        continue;
                    var hj = new ReadOnlySpan<double>(h, j * n, n);
                    for (int i = 0; i < n; i++)
                        v[i] += hj[i] * phi[j];
                }
                for (int i = 0; i < n; i++)
                {
                    if (phi[i] == 0)
                        continue;
                    a[i / bs * blocks + c] += phi[i] * v[i];
                }
            }
            var g = new double[blocks];
            for (int i = 0; i < n; i++)
            {
                if (phi[i] != 0)
                    g[i / bs] += phi[i] * hw[i];
            }
            double trace = 0;
            for (int b = 0; b < blocks; b++)
                trace += a[b * blocks + b];
            double ridge = 1e-9 * Math.Max(trace / blocks, 1e-30);
            for (int b = 0; b < blocks; b++)
            {
                a[b * blocks + b] += ridge;
                g[b] += ridge * current[b];
            }
            if (!LinearAlgebra.SolvePositiveDefinite(a, g, blocks))
                return false;
            for (int b = 0; b < blocks; b++)
            {
                if (!double.IsFinite(g[b]) || Math.Abs(g[b]) > 65504)
                    return false;
            }
            for (int b = 0; b < blocks; b++)
                scaled.SetScale(data.AsSpan((int)((long)row * rowBytes + b * blockBytes), blockBytes), (float)g[b]);
            for (int j = 0; j < n; j++)
            {
                var block = data.AsSpan((int)((long)row * rowBytes + j / bs * blockBytes), blockBytes);
                q[j] = grid.Value(block, j % bs, codes[j]);
            }
            for (int b = 0; b < blocks; b++)
                tables?.Build(row - firstRow, b, data.AsSpan((int)((long)row * rowBytes + b * blockBytes), blockBytes));
            return true;
        }

        private void Quantize(int firstRow, int endRow, ValueTables? tables)
        {
            int rows = endRow - firstRow, bs = grid.BlockSize, blockBytes = grid.BlockBytes;
            // W in processing order, [rows, n].
            var w = new double[rows * n];
            for (int r = 0; r < rows; r++)
                for (int p = 0; p < n; p++)
                    w[r * n + p] = weights[(long)(firstRow + r) * n + perm[p]];
            var err = new double[rows * batch]; // [rows, batch] scaled errors of the current batch
            var fitted = new bool[n / bs];
            var blockWeights = new float[rows * bs];

            for (int i1 = 0; i1 < n; i1 += batch)
            {
                int i2 = Math.Min(i1 + batch, n);
                for (int s1 = i1; s1 < i2; s1 += SubBatch)
                {
                    int s2 = Math.Min(s1 + SubBatch, i2);
                    for (int i = s1; i < s2; i++)
                    {
                        int column = perm[i], blockIndex = column / bs, within = column % bs;
                        if (!fitted[blockIndex])
                        {
                            fitted[blockIndex] = true;
                            FitBlock(blockIndex, i, i1, s1, s2, i2, w, err, rows, blockWeights, firstRow, tables);
                        }
                        double uii = u[(long)i * n + i];
                        var uRow = new ReadOnlySpan<double>(u, i * n, n);
                        for (int r = 0; r < rows; r++)
                        {
                            var block = data.AsSpan((int)((long)(firstRow + r) * rowBytes + blockIndex * blockBytes), blockBytes);
                            var wr = w.AsSpan(r * n, n);
                            double x = wr[i];
                            float q;
                            int code = tables is null ? BlockGrid.Round(grid, block, within, x, out q) : tables.Round(r, column, x, out q);
                            grid.SetCode(block, within, code);
                            result[(long)(firstRow + r) * n + column] = q;
                            double e = (x - q) / uii;
                            err[r * batch + (i - i1)] = e;
                            LinearAlgebra.Axpy(-e, uRow[(i + 1)..s2], wr[(i + 1)..s2]);
                        }
                    }
                    // The rest of the batch: W[:, s2:i2] −= Err[:, s1:s2] · U[s1:s2, s2:i2].
                    LinearAlgebra.SubtractProducts(err, s1 - i1, batch, u, s1 * n + s2, n, rows, s2 - s1, i2 - s2, w, s2, n);
                }
                // Lazy update of the columns after the batch: W[:, i2:] −= Err · U[i1:i2, i2:].
                LinearAlgebra.SubtractProducts(err, 0, batch, u, i1 * n + i2, n, rows, i2 - i1, n - i2, w, i2, n);
            }
        }

        // Fits the scales of block blockIndex of every row from the current (error-updated) weights of its columns, all at
        // positions i or later. A column's stored weight holds the updates of the columns before i1 (after the batch), before
        // s1 (in the batch, after the sub-batch) or before i (in the sub-batch); the ones still owed up to i − 1 are added here,
        // a column at a time for every row, so that the owed part of U's column stays in cache while the rows read it.
        // blockWeights is [rows, block size].
        private void FitBlock(int blockIndex, int i, int i1, int s1, int s2, int i2, double[] w, double[] err, int rows, float[] blockWeights, int firstRow, ValueTables? tables)
        {
            int bs = grid.BlockSize;
            for (int c = 0; c < bs; c++)
            {
                int p = position[blockIndex * bs + c];
                int applied = p >= i2 ? i1 : p >= s2 ? s1 : i;
                for (int r = 0; r < rows; r++)
                {
                    double x = w[r * n + p];
                    for (int k = applied; k < i; k++)
                        x -= err[r * batch + (k - i1)] * u[(long)k * n + p];
                    blockWeights[r * bs + c] = (float)x;
                }
            }
            var imp = new ReadOnlySpan<float>(importance, blockIndex * bs, bs);
            for (int r = 0; r < rows; r++)
            {
                var block = data.AsSpan((int)((long)(firstRow + r) * rowBytes + blockIndex * grid.BlockBytes), grid.BlockBytes);
                grid.Fit(blockWeights.AsSpan(r * bs, bs), imp, block);
                tables?.Build(r, blockIndex, block);
            }
        }
    }

    // The values of every code for each scale group (IBlockGrid.ValueGroup positions) of a tile's rows, [rows, n / group,
    // Levels], built when a block's scales are set, and per group 0.49 of the smallest gap between neighbouring values.
    // Rounding by bisection over them gives BlockGrid.Round's code without decoding; a target nearer than that margin to a
    // group's value rounds to that value.
    private sealed class ValueTables(IBlockGrid grid, int rows, int n)
    {
        private readonly int group = grid.ValueGroup;
        private readonly int levels = grid.Levels;
        private readonly int groups = n / grid.ValueGroup;
        private readonly float[] values = new float[(long)rows * (n / grid.ValueGroup) * grid.Levels];
        private readonly double[] margin = new double[(long)rows * (n / grid.ValueGroup)];

        // Tile row t's groups in block blockIndex, from its packed block.
        public void Build(int t, int blockIndex, ReadOnlySpan<byte> block)
        {
            int bs = grid.BlockSize;
            for (int g = blockIndex * bs / group; g < (blockIndex + 1) * bs / group; g++)
            {
                var v = values.AsSpan((t * groups + g) * levels, levels);
                BlockGrid.Values(grid, block, g * group % bs, v);
                double gap = double.PositiveInfinity;
                for (int c = 1; c < levels; c++)
                    gap = Math.Min(gap, Math.Abs((double)v[c] - v[c - 1]));
                margin[t * groups + g] = 0.49 * gap;
            }
        }

        public int Round(int t, int column, double target, out float value)
            => BlockGrid.Round(values.AsSpan((t * groups + column / group) * levels, levels), target, out value);

        // True when target is nearer to current (one of the group's values) than to any other of them.
        public bool Keeps(int t, int column, double target, float current) => Math.Abs(target - current) < margin[t * groups + column / group];
    }
}
