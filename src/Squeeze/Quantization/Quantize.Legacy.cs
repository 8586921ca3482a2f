using System.Runtime.InteropServices;
using Squeeze.Tensors.Blocks;
using static Squeeze.Tensors.HalfConversions;

namespace Squeeze.Quantization;

// ggml's 32-value blocks: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1. Without importance these are llama.cpp's quantize_row_*_ref,
// byte for byte (f32 arithmetic, truncating casts, roundf for Q8_0, scale from f32 before the half conversion); their
// vector forms are in Quantize.LegacyLanes.cs. With importance they follow llama.cpp's quantize_row_*_impl (weights
// qw[j] * sqrt(sigma2 + x[j]²)).
public static partial class Quantize
{
    private const int QK = 32;

    // d = amax / 127, q = roundf(x / d)
    private static void Q8_0(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<BlockQ8_0> blocks = MemoryMarshal.Cast<byte, BlockQ8_0>(y);
        for (int i = 0; i < blocks.Length; i++)
        {
            ReadOnlySpan<float> xb = x.Slice(i * QK, QK);
            if (UseVectors && Q8_0Lanes(xb, ref blocks[i]))
                continue;
            float amax = 0;
            for (int j = 0; j < QK; j++)
                amax = Math.Max(amax, MathF.Abs(xb[j]));
            float d = amax / ((1 << 7) - 1);
            float id = d != 0 ? 1.0f / d : 0.0f;
            ref BlockQ8_0 b = ref blocks[i];
            b.D = F32ToF16(d);
            for (int j = 0; j < QK; j++)
                b.Qs[j] = (sbyte)MathF.Round(xb[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    // d = max / -8 where max is the value of largest magnitude (first one on ties); q = min(15, trunc(x/d + 8.5))
    private static void Q4_0(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y)
    {
        Span<BlockQ4_0> blocks = MemoryMarshal.Cast<byte, BlockQ4_0>(y);
        if (!importance.IsEmpty)
        {
            Q4_0Weighted(x, importance, blocks);
            return;
        }
        for (int i = 0; i < blocks.Length; i++)
        {
            ReadOnlySpan<float> xb = x.Slice(i * QK, QK);
            if (UseVectors && Q4_0Lanes(xb, ref blocks[i]))
                continue;
            float max = SignedAbsMax(xb);
            float d = max / -8;
            float id = d != 0 ? 1.0f / d : 0.0f;
            ref BlockQ4_0 b = ref blocks[i];
            b.D = F32ToF16(d);
            for (int j = 0; j < QK / 2; j++)
            {
                int q0 = Math.Min(15, (int)(sbyte)(xb[j] * id + 8.5f));
                int q1 = Math.Min(15, (int)(sbyte)(xb[j + QK / 2] * id + 8.5f));
                b.Qs[j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    // d = (max - min) / 15, m = min, q = min(15, trunc((x - min)/d + 0.5))
    private static void Q4_1(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y)
    {
        Span<BlockQ4_1> blocks = MemoryMarshal.Cast<byte, BlockQ4_1>(y);
        if (!importance.IsEmpty)
        {
            Q4_1Weighted(x, importance, blocks);
            return;
        }
        for (int i = 0; i < blocks.Length; i++)
        {
            ReadOnlySpan<float> xb = x.Slice(i * QK, QK);
            if (UseVectors && Q4_1Lanes(xb, ref blocks[i]))
                continue;
            (float min, float max) = MinMax(xb);
            float d = (max - min) / ((1 << 4) - 1);
            float id = d != 0 ? 1.0f / d : 0.0f;
            ref BlockQ4_1 b = ref blocks[i];
            b.D = F32ToF16(d);
            b.M = F32ToF16(min);
            for (int j = 0; j < QK / 2; j++)
            {
                int q0 = Math.Min(15, (int)(sbyte)((xb[j] - min) * id + 0.5f));
                int q1 = Math.Min(15, (int)(sbyte)((xb[j + QK / 2] - min) * id + 0.5f));
                b.Qs[j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    // d = max / -16, q = min(31, trunc(x/d + 16.5)); bit 4 of q goes to Qh
    private static void Q5_0(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y)
    {
        Span<BlockQ5_0> blocks = MemoryMarshal.Cast<byte, BlockQ5_0>(y);
        if (!importance.IsEmpty)
        {
            Q5_0Weighted(x, importance, blocks);
            return;
        }
        Span<byte> L = stackalloc byte[QK];
        for (int i = 0; i < blocks.Length; i++)
        {
            ReadOnlySpan<float> xb = x.Slice(i * QK, QK);
            if (UseVectors && Q5_0Lanes(xb, ref blocks[i]))
                continue;
            float max = SignedAbsMax(xb);
            float d = max / -16;
            float id = d != 0 ? 1.0f / d : 0.0f;
            for (int j = 0; j < QK; j++)
                L[j] = (byte)Math.Min(31, (int)(sbyte)(xb[j] * id + 16.5f));
            ref BlockQ5_0 b = ref blocks[i];
            b.D = F32ToF16(d);
            PackQ5(L, b.Qs, b.Qh);
        }
    }

    // d = (max - min) / 31, m = min, q = trunc((x - min)/d + 0.5)
    private static void Q5_1(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y)
    {
        Span<BlockQ5_1> blocks = MemoryMarshal.Cast<byte, BlockQ5_1>(y);
        if (!importance.IsEmpty)
        {
            Q5_1Weighted(x, importance, blocks);
            return;
        }
        Span<byte> L = stackalloc byte[QK];
        for (int i = 0; i < blocks.Length; i++)
        {
            ReadOnlySpan<float> xb = x.Slice(i * QK, QK);
            if (UseVectors && Q5_1Lanes(xb, ref blocks[i]))
                continue;
            (float min, float max) = MinMax(xb);
            float d = (max - min) / ((1 << 5) - 1);
            float id = d != 0 ? 1.0f / d : 0.0f;
            for (int j = 0; j < QK; j++)
                L[j] = (byte)((xb[j] - min) * id + 0.5f);
            ref BlockQ5_1 b = ref blocks[i];
            b.D = F32ToF16(d);
            b.M = F32ToF16(min);
            PackQ5(L, b.Qs, b.Qh);
        }
    }

    // ---- importance-weighted variants (llama.cpp's quantize_row_q*_impl) ----

    private static float RowSigma2(ReadOnlySpan<float> x)
    {
        float sumX2 = 0;
        for (int j = 0; j < x.Length; j++)
            sumX2 += x[j] * x[j];
        return sumX2 / x.Length;
    }

    private static void ImportanceWeights(ReadOnlySpan<float> xb, ReadOnlySpan<float> qw, float sigma2, Span<float> weight)
    {
        for (int j = 0; j < xb.Length; j++)
            weight[j] = qw[j] * MathF.Sqrt(sigma2 + xb[j] * xb[j]);
    }

    private static void Q4_0Weighted(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<BlockQ4_0> blocks)
    {
        Span<float> weight = stackalloc float[QK];
        Span<sbyte> L = stackalloc sbyte[QK];
        float sigma2 = RowSigma2(x);
        for (int ib = 0; ib < blocks.Length; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(ib * QK, QK);
            ImportanceWeights(xb, importance.Slice(ib * QK, QK), sigma2, weight);
            float d = MakeQxQuants(8, xb, L, 1, weight);
            ref BlockQ4_0 b = ref blocks[ib];
            b.D = F32ToF16(d);
            for (int j = 0; j < 16; j++)
                b.Qs[j] = (byte)((byte)L[j] | ((byte)L[j + 16] << 4));
        }
    }

    private static void Q4_1Weighted(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<BlockQ4_1> blocks)
    {
        Span<float> weight = stackalloc float[QK];
        Span<byte> L = stackalloc byte[QK];
        Span<byte> Laux = stackalloc byte[QK];
        float sigma2 = RowSigma2(x);
        for (int ib = 0; ib < blocks.Length; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(ib * QK, QK);
            ImportanceWeights(xb, importance.Slice(ib * QK, QK), sigma2, weight);
            float d = MakeQkxQuants(15, xb, weight, L, out float min, Laux, -0.9f, 0.05f, 36, false);
            ref BlockQ4_1 b = ref blocks[ib];
            b.D = F32ToF16(d);
            b.M = F32ToF16(-min);
            for (int j = 0; j < 16; j++)
                b.Qs[j] = (byte)(L[j] | (L[j + 16] << 4));
        }
    }

    private static void Q5_0Weighted(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<BlockQ5_0> blocks)
    {
        Span<float> weight = stackalloc float[QK];
        Span<sbyte> L = stackalloc sbyte[QK];
        float sigma2 = RowSigma2(x);
        for (int ib = 0; ib < blocks.Length; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(ib * QK, QK);
            ImportanceWeights(xb, importance.Slice(ib * QK, QK), sigma2, weight);
            float d = MakeQxQuants(16, xb, L, 1, weight);
            ref BlockQ5_0 b = ref blocks[ib];
            b.D = F32ToF16(d);
            PackQ5(MemoryMarshal.AsBytes(L), b.Qs, b.Qh);
        }
    }

    private static void Q5_1Weighted(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<BlockQ5_1> blocks)
    {
        Span<float> weight = stackalloc float[QK];
        Span<byte> L = stackalloc byte[QK];
        Span<byte> Laux = stackalloc byte[QK];
        float sigma2 = RowSigma2(x);
        for (int ib = 0; ib < blocks.Length; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(ib * QK, QK);
            ImportanceWeights(xb, importance.Slice(ib * QK, QK), sigma2, weight);
            float d = MakeQkxQuants(31, xb, weight, L, out float min, Laux, -0.9f, 0.05f, 36, false);
            ref BlockQ5_1 b = ref blocks[ib];
            b.D = F32ToF16(d);
            b.M = F32ToF16(-min);
            PackQ5(L, b.Qs, b.Qh);
        }
    }

    // ---- shared pieces ----

    // The value of largest magnitude, keeping its sign; the first one wins a tie (ggml's `if (amax < fabsf(v))`).
    private static float SignedAbsMax(ReadOnlySpan<float> xb)
    {
        float amax = 0, max = 0;
        for (int j = 0; j < xb.Length; j++)
        {
            float v = xb[j];
            if (amax < MathF.Abs(v))
            {
                amax = MathF.Abs(v);
                max = v;
            }
        }
        return max;
    }

    private static (float Min, float Max) MinMax(ReadOnlySpan<float> xb)
    {
        float min = float.MaxValue, max = -float.MaxValue;
        for (int j = 0; j < xb.Length; j++)
        {
            float v = xb[j];
            if (v < min) min = v;
            if (v > max) max = v;
        }
        return (min, max);
    }

    // 5-bit codes: low nibbles as Q4 (value j low, j+16 high), bit 4 of code j to bit j of the little-endian Qh.
    private static void PackQ5(ReadOnlySpan<byte> L, Span<byte> qs, Span<byte> qhBytes)
    {
        uint qh = 0;
        for (int j = 0; j < QK / 2; j++)
        {
            int q0 = L[j], q1 = L[j + QK / 2];
            qs[j] = (byte)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((uint)(q0 & 0x10) >> 4) << j;
            qh |= ((uint)(q1 & 0x10) >> 4) << (j + QK / 2);
        }
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(qhBytes, qh);
    }
}
