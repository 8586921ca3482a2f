using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
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
    private static void IQ4_NL(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> y, ScaleSearch search)
    {
        Span<BlockIQ4_NL> blocks = MemoryMarshal.Cast<byte, BlockIQ4_NL>(y);
        Span<byte> L = stackalloc byte[QK];
        Span<byte> trial = stackalloc byte[QK];
        Span<float> weight = stackalloc float[QK];
        Span<ushort> candidates = stackalloc ushort[18];
        Span<float> scales = stackalloc float[16];
        Span<double> errors = stackalloc double[16];
        bool vectors = UseVectors;
        for (int ib = 0; ib < blocks.Length; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(ib * QK, QK);
            ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(ib * QK, QK);
            ushort d = IQ4NLStart(xb, qw, weight, L, vectors);

            // Refinement, measured with the metric weights (importance or 1).
            double best = IQ4NLError(xb, qw, F16ToF32(d), L);
            for (int iteration = 0; iteration < (search == ScaleSearch.Refined ? 4 : 0); iteration++)
            {
                bool improved = false;
                int count = 0;
                for (int k = -8; k <= 8; k++)
                {
                    int bits = d + k;
                    if (k != 0 && bits >= 0 && bits <= 0xFFFF && float.IsFinite(F16ToF32((ushort)bits)))
                        candidates[count++] = (ushort)bits;
                }
                float fit = IQ4NLFit(xb, qw, L);
                if (float.IsFinite(fit))
                    candidates[count++] = F32ToF16(fit);
                if (vectors)
                {
                    // Every candidate's error at once (the first 16 in lanes, the rest one at a time), then the same
                    // decisions in the same order; the codes of the one accepted last.
                    int laned = Math.Min(count, 16);
                    for (int c = 0; c < 16; c++)
                        scales[c] = c < laned ? F16ToF32(candidates[c]) : 0;
                    IQ4NLCandidateErrors(xb, qw, scales, errors);
                    for (int c = 0; c < count; c++)
                    {
                        double e = c < laned ? errors[c] : IQ4NLBestCodesLanes(xb, qw, F16ToF32(candidates[c]), trial);
                        if (e < best)
                        {
                            best = e;
                            d = candidates[c];
                            improved = true;
                        }
                    }
                    if (improved)
                        IQ4NLBestCodesLanes(xb, qw, F16ToF32(d), L);
                }
                else
                {
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

    // llama.cpp's quantize_row_iq4_nl_impl for one 32-value block; returns the half bits of d, codes in L. Its 16 trial
    // scales (the first from the largest value, then 15 around it) are summed one per lane when `vectors`, with the same
    // f32 products and sums in the same order, and accepted in trial order as the scalar loop does.
    private static ushort IQ4NLStart(ReadOnlySpan<float> xb, ReadOnlySpan<float> qw, Span<float> weight, Span<byte> L, bool vectors)
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
            Span<float> ids = stackalloc float[2 * ntry + 2];
            Span<float> sumqx = stackalloc float[2 * ntry + 2];
            Span<float> sumq2 = stackalloc float[2 * ntry + 2];
            ids[0] = 1 / (-max / values[0]);
            for (int itry = -ntry; itry <= ntry; itry++)
                ids[itry + ntry + 1] = (itry + values[0]) / max;
            if (vectors)
                IQ4NLTrialSums(xb, weight, ids, sumqx, sumq2);
            else
            {
                for (int t = 0; t < ids.Length; t++)
                {
                    float qx = 0, q2 = 0;
                    for (int j = 0; j < QK; j++)
                    {
                        int l = BestIndexInt8(values, ids[t] * xb[j]);
                        float q = values[l];
                        float w = weight[j];
                        qx += w * q * xb[j];
                        q2 += w * q * q;
                    }
                    (sumqx[t], sumq2[t]) = (qx, q2);
                }
            }
            float d = sumqx[0] / sumq2[0];
            float best = d * sumqx[0];
            for (int t = 1; t < ids.Length; t++)
            {
                if (sumq2[t] > 0 && sumqx[t] * sumqx[t] > best * sumq2[t])
                {
                    d = sumqx[t] / sumq2[t];
                    best = d * sumqx[t];
                }
            }
            scale = d;
        }
        float inv = scale != 0 ? 1 / scale : 0;
        for (int j = 0; j < QK; j++)
            L[j] = (byte)BestIndexInt8(values, inv * xb[j]);
        return F32ToF16(scale);
    }

    // For 16 inverse scales ids (one per lane): the nearest table entry of ids · x_j as BestIndexInt8 finds it, and
    // Σ_j (w_j q_j) x_j and Σ_j (w_j q_j) q_j in f32, summed per lane in j order.
    private static void IQ4NLTrialSums(ReadOnlySpan<float> xb, ReadOnlySpan<float> weight, ReadOnlySpan<float> ids, Span<float> sumqx, Span<float> sumq2)
    {
        var table = IQ4NLTable();
        var first = Vector512.Create(table[0]);
        var last = Vector512.Create(table[15]);
        var id = Vector512.Create(ids);
        var one = Vector512<int>.One;
        Vector512<float> qx = Vector512<float>.Zero, q2 = Vector512<float>.Zero;
        for (int j = 0; j < xb.Length; j++)
        {
            var xj = Vector512.Create(xb[j]);
            var q = Vector512.Shuffle(table, NearestEntry(table, first, last, id * xj, one));
            var wq = Vector512.Create(weight[j]) * q;
            qx += wq * xj;
            q2 += wq * q;
        }
        qx.CopyTo(sumqx);
        q2.CopyTo(sumq2);
    }

    // The 16 entries of IQ4_NL's code book as f32 lanes.
    private static Vector512<float> IQ4NLTable()
    {
        ReadOnlySpan<sbyte> values = Dequantize.IQ4NLValues;
        Span<float> entries = stackalloc float[16];
        for (int k = 0; k < 16; k++)
            entries[k] = values[k];
        return Vector512.Create((ReadOnlySpan<float>)entries);
    }

    // Per lane, BestIndexInt8 of t: 0 at or below the first entry, 15 at or above the last; otherwise mu, the number of
    // entries at most t, and the lower of mu − 1 and mu unless t is strictly nearer the lower.
    private static Vector512<int> NearestEntry(Vector512<float> table, Vector512<float> first, Vector512<float> last, Vector512<float> t, Vector512<int> one)
    {
        var below = Vector512<int>.Zero;
        for (int k = 0; k < 16; k++)
            below -= Vector512.LessThanOrEqual(Vector512.Create(table.GetElement(k)), t).AsInt32();
        var mu = Vector512.Min(Vector512.Max(below, one), Vector512.Create(15));
        var lower = mu - one;
        var nearest = Vector512.ConditionalSelect(Vector512.LessThan(t - Vector512.Shuffle(table, lower), Vector512.Shuffle(table, mu) - t).AsInt32(), lower, mu);
        return Vector512.ConditionalSelect(Vector512.LessThanOrEqual(t, first).AsInt32(), Vector512<int>.Zero,
            Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(t, last).AsInt32(), Vector512.Create(15), nearest));
    }

    // errors[c] = IQ4NLBestCodes(xb, w, scales[c]) for 16 scales, one per lane: the nearest table entry as BestIndexInt8
    // finds it (the entries at most t, the lower one on ties), its neighbours as IQ4NLBestCodes checks them (l − 1 first,
    // and l + 1 only when l − 1 did not win), the errors in double with the decoder's f32 products, summed per lane in order.
    private static void IQ4NLCandidateErrors(ReadOnlySpan<float> xb, ReadOnlySpan<float> w, ReadOnlySpan<float> scales, Span<double> errors)
    {
        var table = IQ4NLTable();
        var first = Vector512.Create(table[0]);
        var last = Vector512.Create(table[15]);
        var d = Vector512.Create(scales);
        var inv = Vector512.ConditionalSelect(Vector512.Equals(d, Vector512<float>.Zero), Vector512<float>.Zero, Vector512<float>.One / d);
        var one = Vector512<int>.One;
        var infinity = Vector512.Create(double.PositiveInfinity);
        Vector512<double> eLo = Vector512<double>.Zero, eHi = Vector512<double>.Zero;
        for (int j = 0; j < xb.Length; j++)
        {
            var xj = Vector512.Create(xb[j]);
            var nearest = NearestEntry(table, first, last, inv * xj, one);
            var down = Vector512.Max(nearest - one, Vector512<int>.Zero);
            var up = Vector512.Min(nearest + one, Vector512.Create(15));
            var (xLo, xHi) = Vector512.Widen(xj);
            var (e0Lo, e0Hi) = SquaredErrors(xLo, xHi, d * Vector512.Shuffle(table, nearest));
            var (emLo, emHi) = SquaredErrors(xLo, xHi, d * Vector512.Shuffle(table, down));
            var (epLo, epHi) = SquaredErrors(xLo, xHi, d * Vector512.Shuffle(table, up));
            // No neighbour below entry 0 or above entry 15.
            var (hasDownLo, hasDownHi) = Vector512.Widen(Vector512.GreaterThan(nearest, Vector512<int>.Zero));
            var (hasUpLo, hasUpHi) = Vector512.Widen(Vector512.LessThan(nearest, Vector512.Create(15)));
            emLo = Vector512.ConditionalSelect(hasDownLo.AsDouble(), emLo, infinity);
            emHi = Vector512.ConditionalSelect(hasDownHi.AsDouble(), emHi, infinity);
            epLo = Vector512.ConditionalSelect(hasUpLo.AsDouble(), epLo, infinity);
            epHi = Vector512.ConditionalSelect(hasUpHi.AsDouble(), epHi, infinity);
            var bestLo = Vector512.ConditionalSelect(Vector512.LessThan(emLo, e0Lo), emLo, Vector512.ConditionalSelect(Vector512.LessThan(epLo, e0Lo), epLo, e0Lo));
            var bestHi = Vector512.ConditionalSelect(Vector512.LessThan(emHi, e0Hi), emHi, Vector512.ConditionalSelect(Vector512.LessThan(epHi, e0Hi), epHi, e0Hi));
            if (w.IsEmpty)
            {
                eLo += bestLo;
                eHi += bestHi;
            }
            else
            {
                var wj = Vector512.Create((double)w[j]);
                eLo += wj * bestLo;
                eHi += wj * bestHi;
            }
        }
        eLo.CopyTo(errors);
        eHi.CopyTo(errors[8..]);
    }

    // IQ4NLBestCodes with one value per lane: the same codes (the nearest entry as BestIndexInt8 finds it, then l − 1 and
    // l + 1 each taken when strictly better than the best so far, in that order), the same double terms, added in value order.
    private static double IQ4NLBestCodesLanes(ReadOnlySpan<float> xb, ReadOnlySpan<float> w, float d, Span<byte> L)
    {
        var table = IQ4NLTable();
        var first = Vector512.Create(table[0]);
        var last = Vector512.Create(table[15]);
        var one = Vector512<int>.One;
        var top = Vector512.Create(15);
        var vd = Vector512.Create(d);
        var inv = Vector512.Create(d != 0 ? 1 / d : 0);
        Span<double> terms = stackalloc double[QK];
        for (int k = 0; k < QK; k += 16)
        {
            var xv = Vector512.Create(xb.Slice(k, 16));
            var nearest = NearestEntry(table, first, last, inv * xv, one);
            var down = Vector512.Max(nearest - one, Vector512<int>.Zero);
            var up = Vector512.Min(nearest + one, top);
            var (xLo, xHi) = Vector512.Widen(xv);
            var (e0Lo, e0Hi) = SquaredErrors(xLo, xHi, vd * Vector512.Shuffle(table, nearest));
            var (emLo, emHi) = SquaredErrors(xLo, xHi, vd * Vector512.Shuffle(table, down));
            var (epLo, epHi) = SquaredErrors(xLo, xHi, vd * Vector512.Shuffle(table, up));
            // down = nearest at entry 0 and up = nearest at entry 15: not strictly better, so never taken.
            var (takeDownLo, takeDownHi) = (Vector512.LessThan(emLo, e0Lo), Vector512.LessThan(emHi, e0Hi));
            var bestLo = Vector512.ConditionalSelect(takeDownLo, emLo, e0Lo);
            var bestHi = Vector512.ConditionalSelect(takeDownHi, emHi, e0Hi);
            var (takeUpLo, takeUpHi) = (Vector512.LessThan(epLo, bestLo), Vector512.LessThan(epHi, bestHi));
            bestLo = Vector512.ConditionalSelect(takeUpLo, epLo, bestLo);
            bestHi = Vector512.ConditionalSelect(takeUpHi, epHi, bestHi);
            var takeDown = Vector512.Narrow(takeDownLo.AsInt64(), takeDownHi.AsInt64());
            var takeUp = Vector512.Narrow(takeUpLo.AsInt64(), takeUpHi.AsInt64());
            var code = Vector512.ConditionalSelect(takeUp, up, Vector512.ConditionalSelect(takeDown, down, nearest));
            for (int j = 0; j < 16; j++)
                L[k + j] = (byte)code.GetElement(j);
            if (w.IsEmpty)
            {
                bestLo.CopyTo(terms.Slice(k, 8));
                bestHi.CopyTo(terms.Slice(k + 8, 8));
            }
            else
            {
                var (wLo, wHi) = Vector512.Widen(Vector512.Create(w.Slice(k, 16)));
                (wLo * bestLo).CopyTo(terms.Slice(k, 8));
                (wHi * bestHi).CopyTo(terms.Slice(k + 8, 8));
            }
        }
        double e = 0;
        for (int j = 0; j < QK; j++)
            e += terms[j];
        return e;
    }

    // (x − v)² in double for the two halves of 16 lanes of f32 values v.
    private static (Vector512<double> Lower, Vector512<double> Upper) SquaredErrors(Vector512<double> xLo, Vector512<double> xHi, Vector512<float> v)
    {
        var (vLo, vHi) = Vector512.Widen(v);
        var dLo = xLo - vLo;
        var dHi = xHi - vHi;
        return (dLo * dLo, dHi * dHi);
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
