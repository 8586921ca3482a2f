using System.Runtime.InteropServices;
using Squeeze.Tensors;
using Squeeze.Tensors.Blocks;
using static Squeeze.Tensors.HalfConversions;

namespace Squeeze.Quantization;

// IQ4_NL: 32 values per block, x̂ = d * kvalues[q] with ggml's fixed non-linear 16-entry code book. The start is
// llama.cpp's quantize_row_iq4_nl_impl (block 32, ntry 7: 15 trial scales, weights x² or importance * sqrt(sigma2 + x²));
// then the half-precision d is refined (neighbouring half values and the least-squares fit, codes re-chosen each time),
// keeping a change only when it lowers Σ w (x - x̂)².
public static partial class Quantize
{
    private static void IQ4_NL(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y)
    {
        Span<BlockIQ4_NL> blocks = MemoryMarshal.Cast<byte, BlockIQ4_NL>(y);
        Span<byte> L = stackalloc byte[QK];
        Span<byte> trial = stackalloc byte[QK];
        Span<float> weight = stackalloc float[QK];
        Span<ushort> candidates = stackalloc ushort[10];
        for (int ib = 0; ib < blocks.Length; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(ib * QK, QK);
            ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(ib * QK, QK);
            ushort d = IQ4NLStart(xb, qw, weight, L);

            // Refinement, measured with the metric weights (importance or 1).
            double best = IQ4NLError(xb, qw, F16ToF32(d), L);
            for (int iteration = 0; iteration < (llamaCppOnly ? 0 : 4); iteration++)
            {
                bool improved = false;
                int count = 0;
                for (int k = -4; k <= 4; k++)
                {
                    int bits = d + k;
                    if (k != 0 && bits >= 0 && bits <= 0xFFFF && float.IsFinite(F16ToF32((ushort)bits)))
                        candidates[count++] = (ushort)bits;
                }
                float fit = IQ4NLFit(xb, qw, L);
                if (float.IsFinite(fit))
                    candidates[count++] = F32ToF16(fit);
                for (int c = 0; c < count; c++)
                {
                    double e = IQ4NLBestCodes(xb, qw, F16ToF32(candidates[c]), trial);
                    if (e < best)
                    {
                        best = e;
                        d = candidates[c];
                        trial.CopyTo(L);
                        improved = true;
                    }
                }
                if (!improved)
                    break;
            }

            ref BlockIQ4_NL b = ref blocks[ib];
            b.D = d;
            for (int j = 0; j < 16; j++)
                b.Qs[j] = (byte)(L[j] | (L[j + 16] << 4));
        }
    }

    // llama.cpp's quantize_row_iq4_nl_impl for one 32-value block; returns the half bits of d, codes in L.
    private static ushort IQ4NLStart(ReadOnlySpan<float> xb, ReadOnlySpan<float> qw, Span<float> weight, Span<byte> L)
    {
        ReadOnlySpan<sbyte> values = Dequantize.IQ4NLValues;
        const int ntry = 7;
        float sigma2 = 0;
        for (int j = 0; j < QK; j++)
            sigma2 += xb[j] * xb[j];
        sigma2 *= 2f / QK;
        for (int j = 0; j < QK; j++)
            weight[j] = qw.IsEmpty ? xb[j] * xb[j] : qw[j] * MathF.Sqrt(sigma2 + xb[j] * xb[j]);
        float amax = 0, max = 0;
        for (int j = 0; j < QK; j++)
        {
            float ax = MathF.Abs(xb[j]);
            if (ax > amax) { amax = ax; max = xb[j]; }
        }
        float scale;
        if (amax < GroupMaxEps)
        {
            scale = 0;
        }
        else
        {
            float d = -max / values[0];
            float id = 1 / d;
            float sumqx = 0, sumq2 = 0;
            for (int j = 0; j < QK; j++)
            {
                int l = BestIndexInt8(values, id * xb[j]);
                float q = values[l];
                float w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            d = sumqx / sumq2;
            float best = d * sumqx;
            for (int itry = -ntry; itry <= ntry; itry++)
            {
                id = (itry + values[0]) / max;
                sumqx = sumq2 = 0;
                for (int j = 0; j < QK; j++)
                {
                    int l = BestIndexInt8(values, id * xb[j]);
                    float q = values[l];
                    float w = weight[j];
                    sumqx += w * q * xb[j];
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
                {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scale = d;
        }
        float inv = scale != 0 ? 1 / scale : 0;
        for (int j = 0; j < QK; j++)
            L[j] = (byte)BestIndexInt8(values, inv * xb[j]);
        return F32ToF16(scale);
    }

    // ggml's best_index_int8 (Feb 2025): the index of the sorted table entry nearest to x, the lower one on ties.
    private static int BestIndexInt8(ReadOnlySpan<sbyte> values, float x)
    {
        int n = values.Length;
        if (x <= values[0]) return 0;
        if (x >= values[n - 1]) return n - 1;
        int ml = 0, mu = n - 1;
        while (mu - ml > 1)
        {
            int mav = (ml + mu) / 2;
            if (x < values[mav]) mu = mav; else ml = mav;
        }
        return x - values[mu - 1] < values[mu] - x ? mu - 1 : mu;
    }

    private static double IQ4NLError(ReadOnlySpan<float> xb, ReadOnlySpan<float> w, float d, ReadOnlySpan<byte> L)
    {
        ReadOnlySpan<sbyte> values = Dequantize.IQ4NLValues;
        double e = 0;
        for (int j = 0; j < QK; j++)
        {
            double diff = (double)xb[j] - d * values[L[j]];
            e += (w.IsEmpty ? 1.0 : w[j]) * diff * diff;
        }
        return e;
    }

    // Nearest code for each value given d, checked against the neighbouring entries with the exact decoded value.
    private static double IQ4NLBestCodes(ReadOnlySpan<float> xb, ReadOnlySpan<float> w, float d, Span<byte> L)
    {
        ReadOnlySpan<sbyte> values = Dequantize.IQ4NLValues;
        float inv = d != 0 ? 1 / d : 0;
        double e = 0;
        for (int j = 0; j < QK; j++)
        {
            int l = BestIndexInt8(values, inv * xb[j]);
            double best = Sq((double)xb[j] - d * values[l]);
            for (int k = Math.Max(0, l - 1); k <= Math.Min(15, l + 1); k++)
            {
                double ek = Sq((double)xb[j] - d * values[k]);
                if (ek < best) { best = ek; l = k; }
            }
            L[j] = (byte)l;
            e += (w.IsEmpty ? 1.0 : w[j]) * best;
        }
        return e;
    }

    // Weighted least-squares d for the codes: Σ w x v / Σ w v².
    private static float IQ4NLFit(ReadOnlySpan<float> xb, ReadOnlySpan<float> w, ReadOnlySpan<byte> L)
    {
        ReadOnlySpan<sbyte> values = Dequantize.IQ4NLValues;
        double num = 0, den = 0;
        for (int j = 0; j < QK; j++)
        {
            double wj = w.IsEmpty ? 1.0 : w[j];
            double v = values[L[j]];
            num += wj * xb[j] * v;
            den += wj * v * v;
        }
        return den > 0 ? (float)(num / den) : float.NaN;
    }
}
