using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using Squeeze.Tensors;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

/// <summary>Instruction-set levels a kernel can run at (the best supported one is picked once per process).</summary>
internal enum SimdLevel
{
    Scalar,
    Avx2,
    Avx512,
}

internal static unsafe partial class VecDot
{
    /// <summary>The best level this process supports (AVX2 + FMA for the 256-bit kernels, AVX-512F on top for the 512-bit
    /// ones), capped by the environment variable <c>SQUEEZE_SIMD</c> (<c>scalar</c>, <c>avx2</c> or <c>avx512</c>) so the
    /// fallbacks can be run on any machine; the runtime's own switches (<c>DOTNET_EnableAVX512=0</c>,
    /// <c>DOTNET_EnableAVX2=0</c>) lower it too.</summary>
    public static SimdLevel Best { get; } = Cap(Avx512F.IsSupported && Avx2.IsSupported && Fma.IsSupported ? SimdLevel.Avx512
        : Avx2.IsSupported && Fma.IsSupported ? SimdLevel.Avx2 : SimdLevel.Scalar);

    private static SimdLevel Cap(SimdLevel hardware)
    {
        string? cap = Environment.GetEnvironmentVariable("SQUEEZE_SIMD");
        if (string.IsNullOrEmpty(cap))
            return hardware;
        if (!Enum.TryParse(cap, ignoreCase: true, out SimdLevel level) || !Enum.IsDefined(level))
            throw new InvalidOperationException($"SQUEEZE_SIMD={cap}: expected scalar, avx2 or avx512");
        return level < hardware ? level : hardware;
    }

    /// <summary>True when <paramref name="level"/> can run on this machine.</summary>
    public static bool IsSupported(SimdLevel level) => level <= Best;

    /// <summary>The dot kernel for <paramref name="type"/> at the best level this machine supports.</summary>
    public static delegate*<byte*, byte*, int, float> For(GgmlType type) => For(type, Best);

    /// <summary>The dot kernel for <paramref name="type"/> at <paramref name="level"/> (or the closest lower level that has
    /// one): (weight row, activation row in the vec_dot type, n) → Σ.</summary>
    public static delegate*<byte*, byte*, int, float> For(GgmlType type, SimdLevel level)
    {
        if (!IsSupported(level))
            throw new PlatformNotSupportedException($"{level} kernels do not run on this machine");
        if (level == SimdLevel.Scalar)
        {
            return type switch
            {
                GgmlType.F32 => &F32Scalar,
                GgmlType.F16 => &F16Scalar,
                GgmlType.BF16 => &BF16Scalar,
                GgmlType.Q4_0 => &Q4_0Scalar,
                GgmlType.Q4_1 => &Q4_1Scalar,
                GgmlType.Q5_0 => &Q5_0Scalar,
                GgmlType.Q5_1 => &Q5_1Scalar,
                GgmlType.Q8_0 => &Q8_0Scalar,
                GgmlType.IQ4_NL => &IQ4_NLScalar,
                GgmlType.Q2_K => &Q2_KScalar,
                GgmlType.Q3_K => &Q3_KScalar,
                GgmlType.Q4_K => &Q4_KScalar,
                GgmlType.Q5_K => &Q5_KScalar,
                GgmlType.Q6_K => &Q6_KScalar,
                _ => throw new NotSupportedException($"no matrix product for {type} weights"),
            };
        }
        if (level == SimdLevel.Avx512)
        {
            switch (type)
            {
                case GgmlType.F32: return &F32Avx512;
                case GgmlType.F16: return &F16Avx512;
                case GgmlType.BF16: return &BF16Avx512;
                case GgmlType.Q4_0: return &Q4_0Avx512;
                case GgmlType.IQ4_NL: return &IQ4_NLAvx512;
                case GgmlType.Q4_K: return &Q4_KAvx512;
                case GgmlType.Q5_K: return &Q5_KAvx512;
            }
        }
        return type switch
        {
            GgmlType.F32 => &F32Avx2,
            GgmlType.F16 => &F16Avx2,
            GgmlType.BF16 => &BF16Avx2,
            GgmlType.Q4_0 => &Q4_0Avx2,
            GgmlType.Q4_1 => &Q4_1Avx2,
            GgmlType.Q5_0 => &Q5_0Avx2,
            GgmlType.Q5_1 => &Q5_1Avx2,
            GgmlType.Q8_0 => &Q8_0Avx2,
            GgmlType.IQ4_NL => &IQ4_NLAvx2,
            GgmlType.Q2_K => &Q2_KAvx2,
            GgmlType.Q3_K => &Q3_KAvx2,
            GgmlType.Q4_K => &Q4_KAvx2,
            GgmlType.Q5_K => &Q5_KAvx2,
            GgmlType.Q6_K => &Q6_KAvx2,
            _ => throw new NotSupportedException($"no matrix product for {type} weights"),
        };
    }

    /// <summary>
    /// The four-token kernel for <paramref name="type"/> at <paramref name="level"/>, or null when there is none:
    /// (w, x, xStride, n, y, yStride) → y[t · yStride] = dot(w, x + t · xStride, n) for t &lt; 4, bit for bit what the
    /// one-token kernel at that level gives. Q4_0, Q5_0 and IQ4_NL have none of their own: their rows are repacked to Q8_0
    /// (<see cref="RepacksToQ8_0"/>) and run by the Q8_0 kernel.
    /// </summary>
    public static delegate*<byte*, byte*, long, int, float*, long, void> For4(GgmlType type, SimdLevel level)
    {
        if (!IsSupported(level))
            throw new PlatformNotSupportedException($"{level} kernels do not run on this machine");
        if (level == SimdLevel.Scalar)
            return null;
        return type switch
        {
            GgmlType.F32 => level == SimdLevel.Avx512 ? &F32x4Avx512 : &F32x4Avx2,
            GgmlType.F16 => level == SimdLevel.Avx512 ? &F16x4Avx512 : &F16x4Avx2,
            GgmlType.BF16 => level == SimdLevel.Avx512 ? &BF16x4Avx512 : &BF16x4Avx2,
            GgmlType.Q8_0 => &Q8_0x4Avx2,
            GgmlType.Q4_K => &Q4_Kx4Avx2,
            GgmlType.Q5_K => &Q5_Kx4Avx2,
            GgmlType.Q6_K => &Q6_Kx4Avx2,
            _ => null,
        };
    }

    /// <summary>
    /// The four-row one-token kernel for <paramref name="type"/> at <paramref name="level"/>, or null when there is none:
    /// (w, rowBytes, x, n, y) → y[r] = dot(w + r · rowBytes, x, n) for r &lt; 4, bit for bit what the one-token kernel at
    /// that level gives, the activation row read once for the four (decode's products).
    /// </summary>
    public static delegate*<byte*, long, byte*, int, float*, void> ForRows4(GgmlType type, SimdLevel level)
    {
        if (!IsSupported(level))
            throw new PlatformNotSupportedException($"{level} kernels do not run on this machine");
        return type switch
        {
            GgmlType.Q4_0 when level == SimdLevel.Avx512 => &Q4_0Rows4Avx512,
            GgmlType.Q4_0 when level == SimdLevel.Avx2 => &Q4_0Rows4Avx2,
            _ => null,
        };
    }

    /// <summary>True for the types whose rows <see cref="RepackToQ8_0Avx2"/> rewrites exactly as Q8_0 (at AVX2 and above).</summary>
    public static bool RepacksToQ8_0(GgmlType type, SimdLevel level)
        => level != SimdLevel.Scalar && type is GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.IQ4_NL;

    /// <summary>The type activations are converted to before a product with <paramref name="weight"/> weights (ggml's
    /// vec_dot_type): F32 for F32, F16 / BF16 (held as rounded f32) for F16 / BF16, else Q8_0, Q8_1 or Q8_K.</summary>
    public static GgmlType ActivationType(GgmlType weight) => weight switch
    {
        GgmlType.F32 => GgmlType.F32,
        GgmlType.F16 => GgmlType.F16,
        GgmlType.BF16 => GgmlType.BF16,
        GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 or GgmlType.IQ4_NL => GgmlType.Q8_0,
        GgmlType.Q4_1 or GgmlType.Q5_1 => GgmlType.Q8_1,
        GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K => GgmlType.Q8_K,
        _ => throw new NotSupportedException($"no matrix product for {weight} weights"),
    };

    /// <summary>Bytes of one activation row of <paramref name="columns"/> values prepared for <paramref name="weight"/>
    /// weights: F16 and BF16 activations are held as rounded f32; a Q8_0 row is ggml's Q8_0 blocks followed by the
    /// blocks' scales d as f32 (exact copies of the f16 values, so the vector kernels load 8 at once) and the blocks'
    /// value sums Σ q as int32 (the kernels that multiply offset, unsigned weight values subtract offset · Σ q); Q8_1
    /// and Q8_K rows are ggml's blocks.</summary>
    public static long ActivationRowBytes(GgmlType weight, int columns) => ActivationType(weight) switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => 4L * columns,
        GgmlType.Q8_0 => GgmlTypes.RowBytes(GgmlType.Q8_0, columns) + 8L * (columns / QK),
        GgmlType activation => GgmlTypes.RowBytes(activation, columns),
    };

    /// <summary>Converts <paramref name="tokens"/> rows of <paramref name="columns"/> f32 activations to the vec_dot type
    /// of <paramref name="weight"/> weights: <paramref name="destination"/> holds tokens · ActivationRowBytes bytes.</summary>
    public static void PrepareActivations(GgmlType weight, float* x, int columns, int tokens, byte* destination)
    {
        long rowBytes = ActivationRowBytes(weight, columns);
        for (int t = 0; t < tokens; t++)
        {
            float* xt = x + (long)t * columns;
            byte* yt = destination + t * rowBytes;
            switch (ActivationType(weight))
            {
                case GgmlType.F32: Buffer.MemoryCopy(xt, yt, rowBytes, rowBytes); break;
                case GgmlType.F16: QuantizeActivations.RoundToHalf(xt, columns, (float*)yt); break;
                case GgmlType.BF16: QuantizeActivations.RoundToBFloat16(xt, columns, (float*)yt); break;
                case GgmlType.Q8_0:
                    QuantizeActivations.Q8_0(xt, columns, yt);
                    int nb = columns / QK;
                    float* scales = (float*)(yt + GgmlTypes.RowBytes(GgmlType.Q8_0, columns));
                    int* sums = (int*)(scales + nb);
                    for (int b = 0; b < nb; b++)
                    {
                        scales[b] = Fp16.ToSingle(Unsafe.ReadUnaligned<ushort>(yt + b * Q8_0Bytes));
                        sbyte* q = (sbyte*)(yt + b * Q8_0Bytes + Q8_0Qs);
                        int sum = 0;
                        for (int i = 0; i < QK; i++)
                            sum += q[i];
                        sums[b] = sum;
                    }
                    break;
                case GgmlType.Q8_1: QuantizeActivations.Q8_1(xt, columns, yt); break;
                default: QuantizeActivations.Q8_K(xt, columns, yt); break;
            }
        }
    }
}
