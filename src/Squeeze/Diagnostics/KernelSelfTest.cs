using System.Runtime.Intrinsics.X86;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Diagnostics;

/// <summary>
/// A quick check, runnable in any process, that the kernels this machine dispatches to agree with the scalar references:
/// <see cref="MatMul"/> (one-token and four-token kernels, repacking, interleaved stripes, several threads) against the scalar
/// <see cref="VecDot"/> on the same activations, the activation quantizers against their scalar versions (exactly),
/// attention against its scalar version, and the fused uniform kernel against its scalar reference. Tests run it in child
/// processes with <c>DOTNET_EnableAVX512=0</c> and <c>DOTNET_EnableAVX2=0</c>, so the fallback paths are exercised on a
/// machine that has the wide ones.
/// </summary>
public static unsafe class KernelSelfTest
{
    // Σ in a different order: relative to Σ|w·x| (float rounding of a few hundred terms, with margin)
    private const double SumOrderLimit = 1e-5;
    private const float AttentionLimit = 2e-5f;

    private static readonly GgmlType[] Types =
    [
        GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0,
        GgmlType.IQ4_NL, GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    ];

    /// <summary>Runs every check, writes one line per group and every mismatch to <paramref name="log"/>; returns the
    /// number of mismatches (0: all agree).</summary>
    public static int Run(TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(log);
        log.WriteLine($"kernel level {VecDot.Best}; Avx2 {Avx2.IsSupported}, Fma {Fma.IsSupported}, Avx512F {Avx512F.IsSupported}, AvxVnni {AvxVnni.IsSupported}; interleaved stripes {VecDot.Interleaves(GgmlType.Q8_0, VecDot.Best)}, k-quant stripes {VecDot.Interleaves(GgmlType.Q4_K, VecDot.Best)}");
        int failures = 0;
        using var context = new ComputeContext(2);
        foreach (GgmlType type in Types)
        {
            int checks = 0, before = failures;
            int block = GgmlTypes.BlockSize(type);
            foreach (int blocks in block == 1 ? new[] { 1, 7, 8, 15, 16, 17, 33, 64, 288 } : block == 256 ? new[] { 1, 2, 3 } : new[] { 1, 3, 8, 9, 17, 24 })
            {
                for (int seed = 0; seed < 3; seed++)
                {
                    foreach (int tokens in new[] { 1, 5, 9 })
                    {
                        failures += CheckProduct(type, rows: 19, columns: blocks * block, tokens, seed, context, log);
                        checks++;
                    }
                }
            }
            log.WriteLine($"{type}: {checks} products, {failures - before} mismatches");
        }
        failures += CheckQuantizers(log);
        failures += CheckAttention(log);
        failures += CheckCodebookDecoding(log);
        failures += CheckSparse(context, log);
        failures += CheckRowGroupProducts(log);
        failures += CheckUniformDot(log);
        log.WriteLine(failures == 0 ? "all kernels agree with the scalar references" : $"{failures} mismatches");
        return failures;
    }

    private static int CheckProduct(GgmlType type, int rows, int columns, int tokens, int seed, ComputeContext context, TextWriter log)
    {
        var rng = new Random(seed * 7919 + columns * 31 + tokens);
        var weights = new float[rows * columns];
        for (int i = 0; i < weights.Length; i++)
            weights[i] = Normal(rng);
        long rowBytes = GgmlTypes.RowBytes(type, columns);
        var encoded = new byte[rowBytes * rows];
        for (int r = 0; r < rows; r++)
            Quantize.Row(type, weights.AsSpan(r * columns, columns), [], encoded.AsSpan((int)(r * rowBytes), (int)rowBytes));
        var decoded = new float[rows * columns];
        for (int r = 0; r < rows; r++)
            Dequantize.Row(type, encoded.AsSpan((int)(r * rowBytes), (int)rowBytes), decoded.AsSpan(r * columns, columns));
        var x = new float[tokens * columns];
        for (int i = 0; i < x.Length; i++)
            x[i] = Normal(rng) * (i % 13 == 0 ? 8 : 1); // some outliers, as activations have
        var y = new float[tokens * rows];
        var prepared = new byte[VecDot.ActivationRowBytes(type, columns) * tokens];
        int failures = 0;
        fixed (byte* w = encoded, xq = prepared)
        fixed (float* px = x, py = y)
        {
            MatMul.Multiply(type, w, px, rows, columns, tokens, rows, context, py);
            VecDot.PrepareActivations(type, px, columns, tokens, xq);
            delegate*<byte*, byte*, int, float> scalar = VecDot.For(type, SimdLevel.Scalar);
            long xRowBytes = VecDot.ActivationRowBytes(type, columns);
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < rows; r++)
                {
                    float expected = scalar(w + r * rowBytes, xq + t * xRowBytes, columns);
                    double magnitude = 0;
                    for (int c = 0; c < columns; c++)
                        magnitude += Math.Abs((double)decoded[r * columns + c] * x[t * columns + c]);
                    double error = Math.Abs((double)py[t * rows + r] - expected);
                    if (!(error <= SumOrderLimit * magnitude + 1e-30))
                    {
                        if (failures++ < 3)
                            log.WriteLine($"  {type} columns {columns} tokens {tokens} seed {seed}: y[{t}, {r}] = {py[t * rows + r]}, scalar {expected}, |diff| {error:g3} > {SumOrderLimit} x {magnitude:g3}");
                    }
                }
            }
        }
        return failures;
    }

    // The sparse products (2:4 and 50 % bitmask over f16 values: fused dots, gathers, the transposed batch) against the
    // decoded weights' product in double.
    private static int CheckSparse(ComputeContext context, TextWriter log)
    {
        int failures = 0, checks = 0;
        foreach (int columns in new[] { 8, 20, 64, 172, 288 })
        {
            for (int seed = 0; seed < 3; seed++)
            {
                var rng = new Random(seed * 131 + columns);
                const int rows = 13;
                var dense = new float[rows * columns];
                for (int i = 0; i < dense.Length; i++)
                    dense[i] = Normal(rng);
                foreach (var pattern in new Pruning.SparsityPattern[] { new Pruning.SparsityPattern.NOfM(2, 4), new Pruning.SparsityPattern.Unstructured(0.5) })
                {
                    var weight = Pruning.PrunedWeights.For("w", Pruning.Pruner.Prune(dense, rows, columns, pattern, Pruning.PruningMethod.Magnitude), pattern);
                    var decoded = weight.Decode();
                    foreach (int tokens in new[] { 1, 5, 9 })
                    {
                        var x = new float[tokens * columns];
                        for (int i = 0; i < x.Length; i++)
                            x[i] = Normal(rng);
                        var y = new float[tokens * rows];
                        weight.Multiply(x, tokens, context, y);
                        checks++;
                        for (int t = 0; t < tokens; t++)
                        {
                            for (int r = 0; r < rows; r++)
                            {
                                double expected = 0, magnitude = 0;
                                for (int c = 0; c < columns; c++)
                                {
                                    expected += (double)decoded[r * columns + c] * x[t * columns + c];
                                    magnitude += Math.Abs((double)decoded[r * columns + c] * x[t * columns + c]);
                                }
                                double error = Math.Abs(y[t * rows + r] - expected);
                                if (!(error <= SumOrderLimit * magnitude + 1e-30) && failures++ < 3)
                                    log.WriteLine($"  {weight.Scheme} columns {columns} tokens {tokens} seed {seed}: y[{t}, {r}] = {y[t * rows + r]}, reference {expected}, |diff| {error:g3}");
                            }
                        }
                    }
                }
            }
        }
        log.WriteLine($"sparse 2:4 and bitmask: {checks} products, {failures} mismatches");
        return failures;
    }

    // GPTQ's row-group products against one Axpy / Dot per row: bit-identical.
    private static int CheckRowGroupProducts(TextWriter log)
    {
        int failures = 0;
        foreach (int length in new[] { 0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 100 })
        {
            foreach (int rows in new[] { 1, 3, 4, 5, 8, 9 })
            {
                var rng = new Random(length * 13 + rows);
                int count = 1 + rng.Next(6);
                var c = new double[rows * count];
                var x = new double[count * length];
                var y = new double[rows * length];
                for (int i = 0; i < c.Length; i++)
                    c[i] = Normal(rng);
                for (int i = 0; i < x.Length; i++)
                    x[i] = Normal(rng);
                for (int i = 0; i < y.Length; i++)
                    y[i] = Normal(rng);
                var expected = (double[])y.Clone();
                LinearAlgebra.SubtractProductsReference(c, 0, count, x, 0, length, rows, count, length, expected, 0, length);
                LinearAlgebra.SubtractProducts(c, 0, count, x, 0, length, rows, count, length, y, 0, length);
                var dotsExpected = new double[rows * count];
                var dots = new double[rows * count];
                LinearAlgebra.DotRowsReference(y, 0, length, x, 0, length, rows, count, length, dotsExpected, 0, count);
                LinearAlgebra.DotRows(y, 0, length, x, 0, length, rows, count, length, dots, 0, count);
                if (!expected.AsSpan().SequenceEqual(y) || !dotsExpected.AsSpan().SequenceEqual(dots))
                {
                    failures++;
                    log.WriteLine($"  row-group products length {length} rows {rows}: differ from one Axpy / Dot per row");
                }
            }
        }
        log.WriteLine($"row-group products: {failures} mismatches");
        return failures;
    }

    private delegate void Quantizer(float* x, int n, byte* y);

    private static int CheckQuantizers(TextWriter log)
    {
        int failures = 0;
        foreach ((GgmlType type, Quantizer best, Quantizer scalar) in new (GgmlType, Quantizer, Quantizer)[]
        {
            (GgmlType.Q8_0, QuantizeActivations.Q8_0, QuantizeActivations.Q8_0Scalar),
            (GgmlType.Q8_1, QuantizeActivations.Q8_1, QuantizeActivations.Q8_1Scalar),
            (GgmlType.Q8_K, QuantizeActivations.Q8_K, QuantizeActivations.Q8_KScalar),
        })
        {
            int block = GgmlTypes.BlockSize(type);
            for (int seed = 0; seed < 10; seed++)
            {
                var rng = new Random(seed);
                int n = block * (1 + seed);
                var x = new float[n];
                for (int i = 0; i < n; i++)
                    x[i] = Normal(rng) * (i % 11 == 0 ? 10 : 1);
                byte[] a = new byte[GgmlTypes.RowBytes(type, n)], b = new byte[a.Length];
                fixed (float* px = x)
                fixed (byte* pa = a, pb = b)
                {
                    best(px, n, pa);
                    scalar(px, n, pb);
                }
                if (!a.AsSpan().SequenceEqual(b))
                {
                    failures++;
                    log.WriteLine($"  activation quantizer {type} n {n} seed {seed}: differs from the scalar version");
                }
            }
        }
        log.WriteLine($"activation quantizers: {failures} mismatches");
        return failures;
    }

    private static int CheckAttention(TextWriter log)
    {
        int failures = 0;
        foreach (int headDim in new[] { 8, 12, 48, 64, 128 })
        {
            foreach (int positions in new[] { 1, 3, 4, 5, 17, 64, 129 })
            {
                var rng = new Random(headDim * 1000 + positions);
                int stride = 2 * headDim + 8;
                var q = new float[headDim];
                var kv = new float[2 * positions * stride];
                for (int i = 0; i < q.Length; i++)
                    q[i] = Normal(rng);
                for (int i = 0; i < kv.Length; i++)
                    kv[i] = Normal(rng);
                float[] expected = new float[headDim], actual = new float[headDim], scores = new float[positions];
                fixed (float* pq = q, pk = kv, ps = scores, pe = expected, pa = actual)
                {
                    float* pv = pk + positions * stride;
                    float scale = 1 / MathF.Sqrt(headDim);
                    Attention.HeadScalar(pq, pk, pv, stride, positions, headDim, scale, ps, pe);
                    Attention.Head(pq, pk, pv, stride, positions, headDim, scale, ps, pa);
                }
                for (int d = 0; d < headDim; d++)
                {
                    if (!(MathF.Abs(expected[d] - actual[d]) <= AttentionLimit * (1 + MathF.Abs(expected[d]))))
                    {
                        failures++;
                        log.WriteLine($"  attention headDim {headDim} positions {positions} d {d}: {actual[d]}, scalar {expected[d]}");
                        break;
                    }
                }
            }
        }
        log.WriteLine($"attention: {failures} mismatches");
        return failures;
    }

    // CodebookWeight's table-decoding kernel against its scalar reference, bit for bit, at every width and odd groups.
    private static int CheckCodebookDecoding(TextWriter log)
    {
        int failures = 0, checks = 0;
        for (int bits = Weights.CodebookWeight.MinBits; bits <= Weights.CodebookWeight.MaxBits; bits++)
        {
            foreach (var (columns, group) in new[] { (8, 8), (13, 13), (40, 5), (96, 32), (288, 48), (288, 288), (1000, 8) })
            {
                var rng = new Random(bits * 1009 + columns * 7 + group);
                int rows = 5, levels = 1 << bits, rowBytes = (columns * bits + 7) / 8;
                var codes = new byte[columns];
                var packed = new byte[rows * rowBytes];
                for (int r = 0; r < rows; r++)
                {
                    for (int c = 0; c < columns; c++)
                        codes[c] = (byte)rng.Next(levels);
                    Weights.UniformCodec.Pack(codes, bits, packed.AsSpan(r * rowBytes, rowBytes));
                }
                var table = new ushort[rows * (columns / group) * levels];
                for (int i = 0; i < table.Length; i++)
                    table[i] = HalfConversions.F32ToF16(Normal(rng));
                var weight = new Weights.CodebookWeight("selftest", rows, columns, bits, group, packed, table);
                var expected = new float[columns];
                var actual = new float[columns];
                var scratch = new float[Math.Max(levels, 16)];
                for (int r = 0; r < rows; r++)
                {
                    weight.DecodeRow(r, expected);
                    fixed (float* a = actual, l = scratch)
                        weight.DecodeRowFast(r, a, l);
                    int bad = Enumerable.Range(0, columns).FirstOrDefault(c => BitConverter.SingleToInt32Bits(expected[c]) != BitConverter.SingleToInt32Bits(actual[c]), -1);
                    if (bad >= 0)
                    {
                        log.WriteLine($"  codebook b{bits} g{group} [{rows}, {columns}] row {r}: column {bad} decodes to {actual[bad]}, reference {expected[bad]}");
                        failures++;
                    }
                    checks++;
                }
            }
        }
        log.WriteLine($"codebook decoding: {checks} rows, {failures} mismatches");
        return failures;
    }

    // The fused uniform kernel this machine dispatches to against its scalar reference on the same quantized activations,
    // at every width, asymmetric and symmetric, groups with and without a masked last step, and rows that reach the end.
    private static int CheckUniformDot(TextWriter log)
    {
        int failures = 0, checks = 0;
        for (int bits = 2; bits <= 8; bits++)
        {
            foreach (var (columns, group, symmetric) in new[] { (32, 16, false), (96, 32, true), (288, 144, false), (288, 48, true), (768, 256, false), (2048, 128, true) })
            {
                const int rows = 7;
                var rng = new Random(bits * 131 + columns + group);
                var values = new float[rows * columns];
                for (int i = 0; i < values.Length; i++)
                    values[i] = Normal(rng) * 0.05f;
                var weight = Weights.UniformWeight.Encode("selftest", values, rows, columns, new Weights.UniformScheme(bits, group, symmetric));
                var x = new float[columns];
                for (int i = 0; i < columns; i++)
                    x[i] = Normal(rng) * (i % 13 == 0 ? 8 : 1);
                var prepared = new byte[UniformDot.ActivationRowBytes(columns, group) + 64];
                var scratch = new byte[UniformDot.PrepareScratchBytes(columns)];
                var expected = new float[rows];
                var actual = new float[rows];
                fixed (byte* codes = weight.Codes, p0 = prepared, s = scratch)
                fixed (ushort* scales = weight.Scales, mins = weight.Mins)
                fixed (float* px = x, pe = expected, pa = actual)
                {
                    byte* p = (byte*)(((nint)p0 + 63) & ~63);
                    UniformDot.PrepareActivations(px, columns, group, 1, s, p);
                    var w = new UniformRows(codes, codes + weight.Codes.Length, weight.UniformScheme.RowBytes(columns), scales, symmetric ? null : mins, bits, group, columns);
                    UniformDot.RowsScalar(w, 0, rows, p, pe);
                    UniformDot.For(bits)(in w, 0, rows, p, pa);
                    var decoded = new float[columns];
                    for (int r = 0; r < rows; r++)
                    {
                        weight.DecodeRow(r, decoded);
                        double magnitude = 0;
                        for (int c = 0; c < columns; c++)
                        {
                            double min = symmetric ? 0 : Math.Abs(HalfConversions.F16ToF32(mins[r * (columns / group) + c / group]));
                            magnitude += (Math.Abs(decoded[c]) + 2 * min) * Math.Abs(UniformDot.PreparedActivation(p, columns, group, c));
                        }
                        if (!(Math.Abs(actual[r] - expected[r]) <= SumOrderLimit * magnitude + 1e-30))
                        {
                            log.WriteLine($"  {weight.Scheme} [{rows}, {columns}] row {r}: {actual[r]}, scalar reference {expected[r]}");
                            failures++;
                        }
                        checks++;
                    }
                }
            }
        }
        log.WriteLine($"fused uniform products: {checks} rows, {failures} mismatches");
        return failures;
    }

    private static float Normal(Random rng)
        => (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
}
