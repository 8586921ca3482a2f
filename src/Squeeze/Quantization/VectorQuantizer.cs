using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Calibration;
using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Quantization;

/// <summary>Settings of <see cref="VectorQuantizer.Quantize"/>.</summary>
public sealed record VectorQuantizerOptions
{
    /// <summary>Values per vector; divides the row length.</summary>
    public int Dimension { get; init; } = 4;

    /// <summary>Bits per index: the codebook has 2^IndexBits centroids.</summary>
    public int IndexBits { get; init; } = 8;

    /// <summary>An f16 scale per row: rows are divided by their (importance-weighted) RMS before clustering.</summary>
    public bool RowScales { get; init; }

    /// <summary>Seed of the k-means sample and start.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Cap on Lloyd iterations.</summary>
    public int MaxIterations { get; init; } = 20;

    /// <summary>k-means trains on at most this many vectors per centroid (a seeded sample); the assignment covers all.</summary>
    public int SamplesPerCentroid { get; init; } = 32;

    /// <summary>After the assignment, re-fit the centroids (and row scales) to it by weighted least squares, kept when
    /// the error falls.</summary>
    public bool Refit { get; init; } = true;

    /// <summary>Threads; the result does not depend on it.</summary>
    public int Threads { get; init; } = 1;
}

/// <summary>
/// Fits <see cref="VectorCodebookWeight"/>s (VPTQ, GPTVQ). (1) Optional row scales: each row's importance-weighted RMS,
/// rounded to f16; rows are divided by it. (2) One codebook for the tensor by weighted k-means over the rows' vectors
/// (each coordinate weighted by its column's importance — the imatrix or the Hessian diagonal — times the row scale
/// squared): a seeded sample of at most <see cref="VectorQuantizerOptions.SamplesPerCentroid"/> vectors per centroid,
/// started from K sampled vectors, Lloyd iterations until fewer than 0.1 % of the assignments change, empty clusters
/// re-seeded at the worst-served vectors; centroids rounded to f16. (3) The assignment: with a Hessian, GPTQ's
/// second-order assignment one vector (d columns) at a time: the vector B takes the centroid minimizing
/// ‖U_BB⁻ᵀ (w_B − q)‖² — exactly the output error it adds once the columns after it compensate (U the upper Cholesky
/// factor of H⁻¹) — and its error is propagated to the remaining columns through U's rows, as GPTQ does column by column;
/// without one, the nearest centroid under the importance-weighted distance. (4) Optionally the centroids and scales
/// re-fitted to the final assignment, kept when the output error falls. Deterministic for a seed, whatever the thread
/// count and SIMD level (nearest-centroid scores are fused multiply-adds in a fixed order in both paths).
/// </summary>
public static class VectorQuantizer
{
    /// <summary>Quantizes <paramref name="weights"/> ([rows, columns] row-major).</summary>
    /// <param name="name">The tensor's name.</param>
    /// <param name="weights">[rows, columns] finite values.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="columns">Input features; a multiple of the dimension.</param>
    /// <param name="importance">[columns] non-negative column weights (empty: the Hessian diagonal, or all 1).</param>
    /// <param name="hessian">The input's Hessian prepared in natural column order (no activation order), or null.</param>
    /// <param name="options">Dimension, index bits, scales, seed, threads.</param>
    /// <exception cref="ArgumentException">A shape disagrees, a value is not finite or the Hessian is activation-ordered.</exception>
    public static VectorCodebookWeight Quantize(string name, ReadOnlySpan<float> weights, int rows, int columns, ReadOnlySpan<float> importance,
        GptqHessian? hessian, VectorQuantizerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        int d = options.Dimension, bits = options.IndexBits;
        ArgumentOutOfRangeException.ThrowIfLessThan(d, VectorCodebookWeight.MinDimension);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(d, VectorCodebookWeight.MaxDimension);
        ArgumentOutOfRangeException.ThrowIfLessThan(bits, VectorCodebookWeight.MinIndexBits);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, VectorCodebookWeight.MaxIndexBits);
        if (columns % d != 0)
            throw new ArgumentException($"{name}: vectors of {d} values do not divide the row length {columns}", nameof(options));
        if (weights.Length != (long)rows * columns)
            throw new ArgumentException($"{name}: {rows} x {columns} weights expected, got {weights.Length}", nameof(weights));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"{name}: importance has {importance.Length} values for {columns} columns", nameof(importance));
        if (hessian is not null && (hessian.Columns != columns || hessian.ActivationOrder))
            throw new ArgumentException($"{name}: the Hessian must be {columns} wide and in natural column order", nameof(hessian));
        var w = weights.ToArray();
        for (int i = 0; i < w.Length; i++)
        {
            if (!float.IsFinite(w[i]))
                throw new ArgumentException($"{name}: weight ({i / columns}, {i % columns}) is {w[i]}", nameof(weights));
        }
        var h = new float[columns];
        for (int j = 0; j < columns; j++)
        {
            h[j] = !importance.IsEmpty ? importance[j] : hessian is not null ? hessian.Diagonal[j] : 1;
            if (!(h[j] >= 0) || !float.IsFinite(h[j]))
                throw new ArgumentException($"{name}: importance of column {j} is {h[j]}", nameof(importance));
        }
        if (hessian is not null)
        {
            for (int r = 0; r < rows; r++)
            {
                for (int j = 0; j < columns; j++)
                {
                    if (hessian.Dead[j])
                        w[(long)r * columns + j] = 0;
                }
            }
        }
        int threads = Math.Max(1, options.Threads);
        var problem = new Problem(w, rows, columns, d, bits, h, threads);

        ushort[]? scales = options.RowScales ? problem.RowScales() : null;
        var s = new float[rows];
        for (int r = 0; r < rows; r++)
            s[r] = scales is null ? 1 : HalfConversions.F16ToF32(scales[r]);
        var codebook = RoundToF16(problem.KMeans(s, options));
        var c = Widen(codebook);
        var indices = hessian is null ? problem.AssignNearest(s, c) : problem.AssignGptq(s, c, hessian);
        var assigned = new VectorCodebookWeight(name, rows, columns, d, bits, codebook, indices, scales);
        if (!options.Refit)
            return assigned;
        var (refitCodebook, refitScales) = problem.Refit(indices, c, s, scales is not null);
        var refitted = new VectorCodebookWeight(name, rows, columns, d, bits, refitCodebook, indices, refitScales);
        return problem.Error(refitted, hessian) < problem.Error(assigned, hessian) ? refitted : assigned;
    }

    private static ushort[] RoundToF16(double[] values)
    {
        var rounded = new ushort[values.Length];
        for (int i = 0; i < values.Length; i++)
            rounded[i] = HalfConversions.F32ToF16((float)Math.Clamp(values[i], -65504, 65504));
        return rounded;
    }

    private static float[] Widen(ushort[] halves)
    {
        var values = new float[halves.Length];
        for (int i = 0; i < halves.Length; i++)
            values[i] = HalfConversions.F16ToF32(halves[i]);
        return values;
    }

    /// <summary>
    /// Index of the smallest score <c>norms[k] + Σ_j m[j] · centroidsT[j·K + k]</c> over k &lt; K (ties: the lowest k), each
    /// score a chain of fused multiply-adds in j order from norms[k], so the Vector256 and scalar paths agree bit for bit.
    /// With m = −2·(weighted x) and norms[k] = the weighted ‖c_k‖², this is the nearest centroid.
    /// </summary>
    internal static unsafe int Nearest(float* m, int d, float* norms, float* centroidsT, int count)
    {
        int k = 0, bestIndex = 0;
        float best = float.PositiveInfinity;
        if (Fma.IsSupported && count >= 8)
        {
            var bestValues = Vector256.Create(float.PositiveInfinity);
            var bestIndices = Vector256<int>.Zero;
            var lanes = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);
            var eight = Vector256.Create(8);
            for (; k + 8 <= count; k += 8)
            {
                var score = Vector256.Load(norms + k);
                for (int j = 0; j < d; j++)
                    score = Fma.MultiplyAdd(Vector256.Create(m[j]), Vector256.Load(centroidsT + (long)j * count + k), score);
                var less = Vector256.LessThan(score, bestValues);
                bestValues = Vector256.ConditionalSelect(less, score, bestValues);
                bestIndices = Vector256.ConditionalSelect(less.AsInt32(), lanes, bestIndices);
                lanes += eight;
            }
            for (int lane = 0; lane < 8; lane++)
            {
                float value = bestValues.GetElement(lane);
                int index = bestIndices.GetElement(lane);
                if (value < best || (value == best && index < bestIndex))
                {
                    best = value;
                    bestIndex = index;
                }
            }
        }
        for (; k < count; k++)
        {
            float score = norms[k];
            for (int j = 0; j < d; j++)
                score = MathF.FusedMultiplyAdd(m[j], centroidsT[(long)j * count + k], score);
            if (score < best)
            {
                best = score;
                bestIndex = k;
            }
        }
        return bestIndex;
    }

    // One tensor being quantized: its values (dead columns zeroed), shape and column importance.
    private sealed unsafe class Problem(float[] w, int rows, int columns, int d, int bits, float[] h, int threads)
    {
        private readonly int vectors = columns / d;
        private readonly int centroids = 1 << bits;

        private void ForRows(int count, Action<int, int> body)
        {
            int tiles = Math.Min(count, 16 * threads);
            if (threads == 1 || tiles <= 1)
            {
                body(0, count);
                return;
            }
            Parallel.For(0, tiles, new ParallelOptions { MaxDegreeOfParallelism = threads },
                t => body((int)((long)count * t / tiles), (int)((long)count * (t + 1) / tiles)));
        }

        /// <summary>f16 of each row's importance-weighted RMS (plain RMS when the importance is all zero).</summary>
        public ushort[] RowScales()
        {
            double total = 0;
            foreach (float x in h)
                total += x;
            var scales = new ushort[rows];
            for (int r = 0; r < rows; r++)
            {
                double sum = 0;
                for (int j = 0; j < columns; j++)
                {
                    double v = w[(long)r * columns + j];
                    sum += (total > 0 ? h[j] : 1) * v * v;
                }
                double rms = Math.Sqrt(sum / (total > 0 ? total : columns));
                scales[r] = HalfConversions.F32ToF16((float)Math.Min(rms, 65504));
            }
            return scales;
        }

        private float Normalized(int r, int column, float[] s) => s[r] == 0 ? 0 : w[(long)r * columns + column] / s[r];

        /// <summary>Weighted k-means over a seeded sample of the normalized vectors; [K, d] centroids.</summary>
        public double[] KMeans(float[] s, VectorQuantizerOptions options)
        {
            long total = (long)rows * vectors;
            int sampleSize = (int)Math.Min(total, Math.Max(centroids, (long)options.SamplesPerCentroid * centroids));
            // Partial Fisher–Yates over the vector ids: the first sampleSize positions are the sample, in draw order.
            var ids = new int[total];
            for (int i = 0; i < ids.Length; i++)
                ids[i] = i;
            var random = new SplitMix64(options.Seed);
            for (int i = 0; i < sampleSize; i++)
            {
                int j = i + (int)random.Below((ulong)(total - i));
                (ids[i], ids[j]) = (ids[j], ids[i]);
            }
            var drawn = ids[..sampleSize];
            var sample = (int[])drawn.Clone();
            Array.Sort(sample);
            var x = new float[(long)sampleSize * d];
            var omega = new float[(long)sampleSize * d]; // per-coordinate weights s² h
            for (int p = 0; p < sampleSize; p++)
            {
                int r = sample[p] / vectors, v = sample[p] % vectors;
                for (int j = 0; j < d; j++)
                {
                    x[(long)p * d + j] = Normalized(r, v * d + j, s);
                    omega[(long)p * d + j] = s[r] * s[r] * h[v * d + j];
                }
            }
            var c = new double[centroids * d];
            for (int k = 0; k < centroids; k++)
            {
                int r = drawn[k % sampleSize] / vectors, v = drawn[k % sampleSize] % vectors;
                for (int j = 0; j < d; j++)
                    c[k * d + j] = Normalized(r, v * d + j, s);
            }

            var assignment = new int[sampleSize];
            Array.Fill(assignment, -1);
            var sum = new double[centroids * d];
            var mass = new double[centroids * d];
            for (int iteration = 0; iteration <= options.MaxIterations; iteration++)
            {
                int changed = AssignSample(sample, x, c, assignment);
                if (iteration == options.MaxIterations || (iteration > 0 && changed * 1000L <= sampleSize))
                    break;
                Array.Clear(sum);
                Array.Clear(mass);
                var count = new int[centroids];
                for (int p = 0; p < sampleSize; p++)
                {
                    int k = assignment[p];
                    count[k]++;
                    for (int j = 0; j < d; j++)
                    {
                        double o = omega[(long)p * d + j];
                        sum[k * d + j] += o * x[(long)p * d + j];
                        mass[k * d + j] += o;
                    }
                }
                for (int i = 0; i < c.Length; i++)
                {
                    if (mass[i] > 0)
                        c[i] = sum[i] / mass[i];
                }
                Reseed(count, x, omega, c, assignment, sampleSize);
            }
            return c;
        }

        // Empty clusters move to the sampled vectors with the largest weighted error (largest first, ties: lower id).
        private void Reseed(int[] count, float[] x, float[] omega, double[] c, int[] assignment, int sampleSize)
        {
            var empty = Enumerable.Range(0, centroids).Where(k => count[k] == 0).ToList();
            if (empty.Count == 0)
                return;
            var error = new double[sampleSize];
            for (int p = 0; p < sampleSize; p++)
            {
                int k = assignment[p];
                for (int j = 0; j < d; j++)
                {
                    double e = x[(long)p * d + j] - c[k * d + j];
                    error[p] += omega[(long)p * d + j] * e * e;
                }
            }
            var worst = Enumerable.Range(0, sampleSize).Where(p => error[p] > 0).OrderByDescending(p => error[p]).ThenBy(p => p).Take(empty.Count).ToList();
            for (int i = 0; i < worst.Count; i++)
            {
                for (int j = 0; j < d; j++)
                    c[empty[i] * d + j] = x[(long)worst[i] * d + j];
            }
        }

        // Nearest centroid of every sampled vector under its block's importance (the row scale does not change the argmin);
        // returns how many assignments changed.
        private int AssignSample(int[] sample, float[] x, double[] c, int[] assignment)
        {
            var (transposed, norms) = BlockTables(c);
            int changed = 0;
            object gate = new();
            ForRows(sample.Length, (p0, p1) =>
            {
                int local = 0;
                float* m = stackalloc float[VectorCodebookWeight.MaxDimension];
                fixed (float* t = transposed)
                fixed (float* n = norms)
                {
                    for (int p = p0; p < p1; p++)
                    {
                        int v = sample[p] % vectors;
                        for (int j = 0; j < d; j++)
                            m[j] = -2 * h[v * d + j] * x[(long)p * d + j];
                        int k = Nearest(m, d, n + (long)v * centroids, t, centroids);
                        if (assignment[p] != k)
                        {
                            assignment[p] = k;
                            local++;
                        }
                    }
                }
                lock (gate)
                    changed += local;
            });
            return changed;
        }

        // The centroids transposed ([d, K] f32) and, per block v, the importance-weighted norms Σ_j h[v·d + j] c_kj² ([V, K]).
        private (float[] Transposed, float[] Norms) BlockTables(double[] c)
        {
            var transposed = new float[(long)d * centroids];
            for (int k = 0; k < centroids; k++)
            {
                for (int j = 0; j < d; j++)
                    transposed[(long)j * centroids + k] = (float)c[k * d + j];
            }
            var norms = new float[(long)vectors * centroids];
            for (int v = 0; v < vectors; v++)
            {
                for (int k = 0; k < centroids; k++)
                {
                    double norm = 0;
                    for (int j = 0; j < d; j++)
                        norm += h[v * d + j] * c[k * d + j] * c[k * d + j];
                    norms[(long)v * centroids + k] = (float)norm;
                }
            }
            return (transposed, norms);
        }

        /// <summary>Every vector to its nearest centroid <paramref name="c"/> ([K, d], f16 values) under the importance.</summary>
        public ushort[] AssignNearest(float[] s, float[] c)
        {
            var (transposed, norms) = BlockTables(Array.ConvertAll(c, v => (double)v));
            var indices = new ushort[(long)rows * vectors];
            ForRows(rows, (r0, r1) =>
            {
                float* m = stackalloc float[VectorCodebookWeight.MaxDimension];
                fixed (float* t = transposed)
                fixed (float* n = norms)
                {
                    for (int r = r0; r < r1; r++)
                    {
                        for (int v = 0; v < vectors; v++)
                        {
                            for (int j = 0; j < d; j++)
                                m[j] = -2 * h[v * d + j] * Normalized(r, v * d + j, s);
                            indices[(long)r * vectors + v] = (ushort)Nearest(m, d, n + (long)v * centroids, t, centroids);
                        }
                    }
                }
            });
            return indices;
        }

        /// <summary>GPTQ's second-order assignment, one vector at a time (see the class summary).</summary>
        public ushort[] AssignGptq(float[] s, float[] c, GptqHessian hessian)
        {
            int n = columns;
            var u = hessian.Factor;
            // Per block v: L_v = (U_BBᵀ)⁻¹ (lower triangular, [d, d]); the centroids mapped through it ([d, K] transposed)
            // and their squared norms.
            var l = new double[(long)vectors * d * d];
            var mapped = new float[(long)vectors * d * centroids];
            var norms = new float[(long)vectors * centroids];
            for (int v = 0; v < vectors; v++)
            {
                var lv = l.AsSpan(v * d * d, d * d);
                for (int col = 0; col < d; col++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        double x = i == col ? 1 : 0;
                        for (int j = 0; j < i; j++)
                            x -= u[(long)(v * d + j) * n + v * d + i] * lv[j * d + col];
                        lv[i * d + col] = x / u[(long)(v * d + i) * n + v * d + i];
                    }
                }
                for (int k = 0; k < centroids; k++)
                {
                    double norm = 0;
                    for (int i = 0; i < d; i++)
                    {
                        double y = 0;
                        for (int j = 0; j <= i; j++)
                            y += lv[i * d + j] * c[k * d + j];
                        mapped[((long)v * d + i) * centroids + k] = (float)y;
                        norm += y * y;
                    }
                    norms[(long)v * centroids + k] = (float)norm;
                }
            }
            var indices = new ushort[(long)rows * vectors];
            ForRows(rows, (r0, r1) =>
            {
                var row = new double[n];
                var e = new double[d];
                var f = new double[d];
                float* m = stackalloc float[VectorCodebookWeight.MaxDimension];
                fixed (float* t = mapped)
                fixed (float* nn = norms)
                {
                    for (int r = r0; r < r1; r++)
                    {
                        float scale = s[r];
                        for (int j = 0; j < n; j++)
                            row[j] = w[(long)r * n + j];
                        for (int v = 0; v < vectors; v++)
                        {
                            var lv = new ReadOnlySpan<double>(l, v * d * d, d * d);
                            for (int i = 0; i < d; i++)
                            {
                                double y = 0;
                                for (int j = 0; j <= i; j++)
                                    y += lv[i * d + j] * (scale == 0 ? 0 : row[v * d + j] / scale);
                                m[i] = (float)(-2 * y);
                            }
                            int k = Nearest(m, d, nn + (long)v * centroids, t + (long)v * d * centroids, centroids);
                            indices[(long)r * vectors + v] = (ushort)k;
                            for (int i = 0; i < d; i++)
                                e[i] = row[v * d + i] - c[k * d + i] * scale;
                            for (int i = 0; i < d; i++)
                            {
                                double fi = 0;
                                for (int j = 0; j <= i; j++)
                                    fi += lv[i * d + j] * e[j];
                                f[i] = fi;
                            }
                            int next = (v + 1) * d;
                            if (next == n)
                                break;
                            for (int i = 0; i < d; i++)
                                LinearAlgebra.Axpy(-f[i], new ReadOnlySpan<double>(u, (v * d + i) * n + next, n - next), row.AsSpan(next));
                        }
                    }
                }
            });
            return indices;
        }

        /// <summary>Centroids (and row scales) re-fitted by importance-weighted least squares to the assignment.</summary>
        public (ushort[] Codebook, ushort[]? Scales) Refit(ushort[] indices, float[] c, float[] s, bool scaled)
        {
            var sum = new double[c.Length];
            var mass = new double[c.Length];
            for (int r = 0; r < rows; r++)
            {
                double scale = s[r];
                for (int v = 0; v < vectors; v++)
                {
                    int k = indices[(long)r * vectors + v];
                    for (int j = 0; j < d; j++)
                    {
                        double hj = h[v * d + j];
                        sum[k * d + j] += hj * scale * w[(long)r * columns + v * d + j];
                        mass[k * d + j] += hj * scale * scale;
                    }
                }
            }
            var fitted = new double[c.Length];
            for (int i = 0; i < c.Length; i++)
                fitted[i] = mass[i] > 0 ? sum[i] / mass[i] : c[i];
            var codebook = RoundToF16(fitted);
            if (!scaled)
                return (codebook, null);
            var values = Widen(codebook);
            var scales = new ushort[rows];
            for (int r = 0; r < rows; r++)
            {
                double num = 0, den = 0;
                for (int v = 0; v < vectors; v++)
                {
                    int k = indices[(long)r * vectors + v];
                    for (int j = 0; j < d; j++)
                    {
                        double cj = values[k * d + j];
                        num += h[v * d + j] * w[(long)r * columns + v * d + j] * cj;
                        den += h[v * d + j] * cj * cj;
                    }
                }
                scales[r] = HalfConversions.F32ToF16((float)Math.Clamp(den > 0 ? num / den : s[r], -65504, 65504));
            }
            return (codebook, scales);
        }

        /// <summary>Σ_rows eᵀ H e with the Hessian (undamped), else Σ h_j e_j².</summary>
        public double Error(VectorCodebookWeight weight, GptqHessian? hessian)
        {
            var perRow = new double[rows];
            ForRows(rows, (r0, r1) =>
            {
                var decoded = new float[columns];
                var e = new double[columns];
                for (int r = r0; r < r1; r++)
                {
                    weight.DecodeRow(r, decoded);
                    for (int j = 0; j < columns; j++)
                        e[j] = (double)w[(long)r * columns + j] - decoded[j];
                    double total = 0;
                    for (int i = 0; i < columns; i++)
                    {
                        total += hessian is null ? h[i] * e[i] * e[i]
                            : e[i] * LinearAlgebra.Dot(new ReadOnlySpan<double>(hessian.Matrix, i * columns, columns), e);
                    }
                    perRow[r] = total;
                }
            });
            return perRow.Sum();
        }
    }
}
