using Squeeze.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

/// <summary>
/// Quantization of f32 activations to the "vec_dot types" ggml pairs with each weight type: Q8_0 (for Q4_0, Q5_0, Q8_0,
/// IQ4_NL), Q8_1 (for Q4_1, Q5_1) and Q8_K (for the k-quants). The scalar versions are the references; the rounding
/// matches what ggml's CPU backend runs on x86 (see each method).
/// </summary>
internal static unsafe partial class QuantizeActivations
{
    private static bool UseVector256 { get; } = Vector256.IsHardwareAccelerated && VecDot.Best >= SimdLevel.Avx2;

    /// <summary>Quantizes <paramref name="n"/> values (a multiple of 32) to Q8_0 blocks, using the best available instruction set.</summary>
    public static void Q8_0(float* x, int n, byte* y)
    {
        if (UseVector256)
            Q8_0Vector256(x, n, y);
        else
            Q8_0Scalar(x, n, y);
    }

    /// <summary>Quantizes <paramref name="n"/> values (a multiple of 32) to Q8_1 blocks, using the best available instruction set.</summary>
    public static void Q8_1(float* x, int n, byte* y)
    {
        if (UseVector256)
            Q8_1Vector256(x, n, y);
        else
            Q8_1Scalar(x, n, y);
    }

    /// <summary>Quantizes <paramref name="n"/> values (a multiple of 256) to Q8_K blocks, using the best available instruction set.</summary>
    public static void Q8_K(float* x, int n, byte* y)
    {
        if (UseVector256)
            Q8_KVector256(x, n, y);
        else
            Q8_KScalar(x, n, y);
    }

    /// <summary>
    /// Q8_0 reference, as ggml's x86 <c>quantize_row_q8_0</c> (the path llama.cpp runs on AVX machines, which differs
    /// from <c>quantize_row_q8_0_ref</c>): per 32-block, amax = max |x|, d = f16(amax / 127), and
    /// q = round-half-even(x · (127 / amax)).
    /// </summary>
    public static void Q8_0Scalar(float* x, int n, byte* y)
    {
        for (int b = 0; b < n / QK; b++, x += QK, y += Q8_0Bytes)
            QuantizeBlock32(x, y, (sbyte*)(y + Q8_0Qs));
    }

    /// <summary>
    /// Q8_1 reference, as ggml's x86 <c>quantize_row_q8_1</c>: like <see cref="Q8_0Scalar"/>, plus s = f16(d · Σ q) with
    /// d the f32 value before rounding to f16.
    /// </summary>
    public static void Q8_1Scalar(float* x, int n, byte* y)
    {
        for (int b = 0; b < n / QK; b++, x += QK, y += Q8_1Bytes)
        {
            float d = QuantizeBlock32(x, y, (sbyte*)(y + Q8_1Qs));
            int sum = 0;
            sbyte* q = (sbyte*)(y + Q8_1Qs);
            for (int j = 0; j < QK; j++)
                sum += q[j];
            Unsafe.WriteUnaligned(y + Q8_1S, HalfConversions.F32ToF16(d * sum));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float QuantizeBlock32(float* x, byte* d16, sbyte* q)
    {
        float amax = 0;
        for (int j = 0; j < QK; j++)
            amax = MathF.Max(amax, MathF.Abs(x[j]));
        float d = amax / 127f;
        Unsafe.WriteUnaligned(d16, HalfConversions.F32ToF16(d));
        float id = amax != 0 ? 127f / amax : 0f;
        for (int j = 0; j < QK; j++)
            q[j] = (sbyte)(int)MathF.Round(x[j] * id); // MathF.Round: nearest, ties to even (_mm256_round_ps)
        return d;
    }

    /// <summary>
    /// Q8_K reference, as ggml's <c>quantize_row_q8_K_ref</c> (which x86 runs too): per 256-block, max = the first value
    /// of largest magnitude (sign kept), iscale = -127 / max, q = min(127, nearest_int(iscale · x)) (nearest_int rounds
    /// half to even), d = 1 / iscale (f32), bsums[j] = Σ q[16j .. 16j+15]. An all-zero block gets d = 0 and q = 0.
    /// </summary>
    public static void Q8_KScalar(float* x, int n, byte* y)
    {
        for (int b = 0; b < n / QK_K; b++, x += QK_K, y += Q8_KBytes)
        {
            float max = 0, amax = 0;
            for (int j = 0; j < QK_K; j++)
            {
                float ax = MathF.Abs(x[j]);
                if (ax > amax)
                {
                    amax = ax;
                    max = x[j];
                }
            }
            sbyte* q = (sbyte*)(y + Q8_KQs);
            short* bsums = (short*)(y + Q8_KBsums);
            if (amax == 0)
            {
                *(float*)y = 0;
                new Span<byte>(q, QK_K).Clear();
                new Span<short>(bsums, 16).Clear();
                continue;
            }
            float iscale = -127f / max;
            for (int j = 0; j < QK_K; j++)
                q[j] = (sbyte)Math.Min(127, (int)MathF.Round(iscale * x[j]));
            for (int j = 0; j < 16; j++)
            {
                int sum = 0;
                for (int i = 0; i < 16; i++)
                    sum += q[16 * j + i];
                bsums[j] = (short)sum;
            }
            *(float*)y = 1 / iscale;
        }
    }

    /// <summary>Rounds <paramref name="n"/> values to binary16 (nearest even) and stores them back as f32: the
    /// activations of an F16 product, as ggml converts them (vec_dot_type F16).</summary>
    public static void RoundToHalf(float* x, int n, float* y)
    {
        for (int i = 0; i < n; i++)
            y[i] = Fp16.RoundToHalf(x[i]);
    }

    /// <summary>Rounds <paramref name="n"/> values to bfloat16 (nearest even) and stores them back as f32: the activations
    /// of a BF16 product (vec_dot_type BF16).</summary>
    public static void RoundToBFloat16(float* x, int n, float* y)
    {
        for (int i = 0; i < n; i++)
            y[i] = Fp16.RoundToBFloat16(x[i]);
    }
}
