using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Tests.Kernels;

/// <summary>Random weights and activations for the kernel tests, and the naive (dequantize, then multiply) references.</summary>
internal static unsafe class KernelTestData
{
    /// <summary>Every weight type <see cref="MatMul"/> supports.</summary>
    public static readonly GgmlType[] WeightTypes =
    [
        GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0,
        GgmlType.IQ4_NL, GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
    ];

    public static TheoryData<GgmlType> WeightTypeData() => new(WeightTypes);

    /// <summary>Offsets of the f16 scale fields of a block, with the magnitude each gets: everything else in a block is
    /// random bytes (every bit pattern of the quants, scales and masks is a valid encoding).</summary>
    private static (int Offset, float Scale)[] HalfFields(GgmlType type) => type switch
    {
        GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 or GgmlType.IQ4_NL => [(0, 0.02f)],
        GgmlType.Q4_1 or GgmlType.Q5_1 => [(0, 0.02f), (2, 0.2f)],
        GgmlType.Q2_K => [(80, 0.01f), (82, 0.01f)],
        GgmlType.Q3_K => [(108, 0.01f)],
        GgmlType.Q4_K or GgmlType.Q5_K => [(0, 0.002f), (2, 0.002f)],
        GgmlType.Q6_K => [(208, 0.002f)],
        _ => [],
    };

    /// <summary><paramref name="rows"/> random encoded rows of <paramref name="columns"/> values.</summary>
    public static byte[] RandomRows(GgmlType type, int rows, int columns, Random rng)
    {
        long rowBytes = GgmlTypes.RowBytes(type, columns);
        var data = new byte[rowBytes * rows];
        switch (type)
        {
            case GgmlType.F32:
                fixed (byte* p = data)
                    for (int i = 0; i < rows * columns; i++)
                        ((float*)p)[i] = Normal(rng);
                break;
            case GgmlType.F16:
                fixed (byte* p = data)
                    for (int i = 0; i < rows * columns; i++)
                        ((ushort*)p)[i] = HalfConversions.F32ToF16(Normal(rng));
                break;
            case GgmlType.BF16:
                fixed (byte* p = data)
                    for (int i = 0; i < rows * columns; i++)
                        ((ushort*)p)[i] = HalfConversions.F32ToBf16(Normal(rng));
                break;
            default:
                rng.NextBytes(data);
                int blockBytes = GgmlTypes.BlockBytes(type);
                (int Offset, float Scale)[] fields = HalfFields(type);
                for (int b = 0; b < data.Length / blockBytes; b++)
                {
                    foreach ((int offset, float scale) in fields)
                    {
                        float v = scale * (0.1f + (float)rng.NextDouble()) * (rng.Next(2) == 0 ? -1 : 1);
                        BitConverter.TryWriteBytes(data.AsSpan(b * blockBytes + offset, 2), HalfConversions.F32ToF16(v));
                    }
                }
                break;
        }
        return data;
    }

    /// <summary>Activations with a different magnitude per 32 values, some blocks all zero, some values exact ties.</summary>
    public static float[] RandomActivations(int n, Random rng)
    {
        var x = new float[n];
        for (int b = 0; b < n; b += 32)
        {
            int kind = rng.Next(12);
            float scale = MathF.Pow(10, (float)rng.NextDouble() * 4 - 2);
            for (int i = b; i < Math.Min(n, b + 32); i++)
            {
                x[i] = kind switch
                {
                    0 => 0,
                    1 => rng.Next(-6, 7) * 0.5f, // many exact halves: rounding ties in Q8 quantization
                    _ => Normal(rng) * scale,
                };
            }
        }
        return x;
    }

    public static float Normal(Random rng)
    {
        double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }

    /// <summary>All rows decoded with <see cref="Dequantize.Row"/>.</summary>
    public static float[] Dequantized(GgmlType type, byte[] data, int rows, int columns)
    {
        var y = new float[rows * columns];
        int rowBytes = (int)GgmlTypes.RowBytes(type, columns);
        for (int r = 0; r < rows; r++)
            Dequantize.Row(type, data.AsSpan(r * rowBytes, rowBytes), y.AsSpan(r * columns, columns));
        return y;
    }

    /// <summary>Activations converted for <paramref name="weight"/> weights, as <see cref="MatMul"/> converts them.</summary>
    public static byte[] Prepared(GgmlType weight, float[] x, int columns, int tokens)
    {
        var y = new byte[VecDot.ActivationRowBytes(weight, columns) * tokens];
        fixed (float* px = x)
        fixed (byte* py = y)
            VecDot.PrepareActivations(weight, px, columns, tokens, py);
        return y;
    }

    /// <summary>The prepared activations decoded back to f32 (the values the kernels actually multiply).</summary>
    public static float[] PreparedValues(GgmlType weight, byte[] prepared, int columns, int tokens)
    {
        GgmlType type = VecDot.ActivationType(weight);
        if (type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16)
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(prepared).ToArray();
        // each row starts with ggml's blocks (a Q8_0 row has the scales as f32 after them)
        int stride = (int)VecDot.ActivationRowBytes(weight, columns), blocks = (int)GgmlTypes.RowBytes(type, columns);
        var y = new float[tokens * columns];
        for (int t = 0; t < tokens; t++)
            Dequantize.Row(type, prepared.AsSpan(t * stride, blocks), y.AsSpan(t * columns, columns));
        return y;
    }

    /// <summary>Σ_c w[c]·x[c] and Σ_c |w[c]·x[c]| in double (the magnitude the error limits scale with).</summary>
    public static (double Sum, double Magnitude) Dot(ReadOnlySpan<float> w, ReadOnlySpan<float> x)
    {
        double sum = 0, magnitude = 0;
        for (int i = 0; i < w.Length; i++)
        {
            double p = (double)w[i] * x[i];
            sum += p;
            magnitude += Math.Abs(p);
        }
        return (sum, magnitude);
    }

    /// <summary>
    /// The product the kernels should give for one row, in double: Σ_c w[c]·x[c] over the dequantized values, except that
    /// for Q4_1 / Q5_1 the min term of each block is m_w · s_x with the activations' stored s = f16(d·Σq), as ggml
    /// computes it (s is not Σ of the dequantized activations: it rounds d·Σq to f16 once).
    /// </summary>
    public static (double Sum, double Magnitude) ReferenceDot(GgmlType type, ReadOnlySpan<byte> wRow, ReadOnlySpan<float> w, ReadOnlySpan<byte> xRow, ReadOnlySpan<float> x)
    {
        if (type is not (GgmlType.Q4_1 or GgmlType.Q5_1))
            return Dot(w, x);
        // xRow: ggml's Q8_1 blocks
        int blockBytes = GgmlTypes.BlockBytes(type), xBlockBytes = GgmlTypes.BlockBytes(GgmlType.Q8_1);
        double sum = 0, magnitude = 0;
        for (int b = 0; b < w.Length / 32; b++)
        {
            double m = HalfConversions.F16ToF32(BitConverter.ToUInt16(wRow.Slice(b * blockBytes + 2, 2)));
            double s = HalfConversions.F16ToF32(BitConverter.ToUInt16(xRow.Slice(b * xBlockBytes + 2, 2)));
            for (int j = 32 * b; j < 32 * (b + 1); j++)
            {
                double p = (w[j] - m) * x[j];
                sum += p;
                magnitude += Math.Abs(p);
            }
            sum += m * s;
            magnitude += Math.Abs(m * s);
        }
        return (sum, magnitude);
    }
}
