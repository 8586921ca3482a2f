using System.Runtime.Intrinsics;

namespace Squeeze.Quantization;

// The refinement's inner loop: the error of many candidate (step, offset) pairs on one sub-block, codes re-chosen as
// the nearest representable value. The definition is BestCodes (one candidate, its error summed in double). The vector
// version screens: one candidate per lane, the error summed in f32, and a candidate whose f32 error is certainly not
// below the bound is rejected without BestCodes; every other one goes through BestCodes itself, so the result is the
// scalar search's, byte for byte. (The terms are non-negative, so the f32 sum of n terms is within (n + 4)·2⁻²⁴ of the
// exact one, relatively, while no term underflows or overflows: ScreenedOut allows 10⁻⁵ and acts only on bounds in
// [10⁻³⁰, 10³⁰].) MakeQkxQuants' trial scales are put in lanes too, with the same f32 sums in the same order.
public static partial class Quantize
{
    // Set only inside ScalarRow: the refinement evaluates its candidates one at a time with BestCodes.
    [ThreadStatic]
    private static bool scalarOnly;

    /// <summary>Test hook: encodes a row with the scalar definition of every search (no vector lanes), to show that the
    /// vector code gives byte-identical blocks.</summary>
    internal static void ScalarRow(Squeeze.Tensors.GgmlType type, ReadOnlySpan<float> source, ReadOnlySpan<float> importance, Span<byte> destination)
    {
        scalarOnly = true;
        try
        {
            RowCore(type, source, importance, destination, -1);
        }
        finally
        {
            scalarOnly = false;
        }
    }

    private static bool UseVectors => !scalarOnly && Vector256.IsHardwareAccelerated;

    // errors[c] ≈ Σᵢ w[i] · (x[i] − (step[c]·q − offset[c]))² in f32, q = nearest code in [qMin, qMax] (BestCodes' codes),
    // for c < count. step, offset and errors are padded by the caller to a multiple of 8.
    private static void CandidateErrors(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int qMin, int qMax,
        ReadOnlySpan<float> step, ReadOnlySpan<float> offset, int count, Span<float> errors)
    {
        var magic = Vector256.Create(12582912f);
        var hi = Vector256.Create((float)qMax);
        var lo = Vector256.Create((float)qMin);
        for (int c = 0; c < count; c += 8)
        {
            var s = Vector256.Create(step.Slice(c, 8));
            var o = Vector256.Create(offset.Slice(c, 8));
            var inv = Vector256.ConditionalSelect(Vector256.Equals(s, Vector256<float>.Zero), Vector256<float>.Zero, Vector256<float>.One / s);
            var e = Vector256<float>.Zero;
            for (int i = 0; i < x.Length; i++)
            {
                var xi = Vector256.Create(x[i]);
                var t = (xi + o) * inv;
                var q = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(t, hi), hi,
                    Vector256.ConditionalSelect(Vector256.LessThanOrEqual(t, lo), lo, (t + magic) - magic));
                var d = xi - (s * q - o);
                e += w.IsEmpty ? d * d : Vector256.Create(w[i]) * (d * d);
            }
            e.CopyTo(errors.Slice(c, 8));
        }
    }

    // True when an error whose f32 estimate is estimate is certainly not below bound (see above).
    private static bool ScreenedOut(float estimate, double bound) => bound is >= 1e-30 and <= 1e30 && estimate >= bound * (1 + 1e-5);

    // MakeQkxQuants' trial scales, one per lane, with the same f32 sums in the same order per lane. The scalar loop moves
    // min when it accepts a trial, and later trials depend on min; so the lanes are evaluated from the first trial not yet
    // decided up to the last, and walked in step order: at the first acceptance min moves and the rest are evaluated again.
    private static float MakeQkxQuantsLanes(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> L, out float theMin,
        float rmin, float rdelta, int nstep, bool useMad, float min, float max, float sumW, float sumX, float bestError, float scale)
    {
        int n = x.Length, trials = nstep + 1;
        Span<float> iscales = stackalloc float[72];
        Span<float> sumL = stackalloc float[72];
        Span<float> sumL2 = stackalloc float[72];
        Span<float> sumXL = stackalloc float[72];
        Span<float> scales = stackalloc float[72];
        Span<float> mins = stackalloc float[72];
        Span<float> errors = stackalloc float[72];
        var magic = Vector256.Create(12582912f);
        var top = Vector256.Create((float)nmax);
        int first = 0;
        while (first < trials)
        {
            int padded = first + (trials - first + 7) / 8 * 8;
            for (int step = first; step < padded; step++)
                iscales[step] = step < trials ? (rmin + rdelta * step + nmax) / (max - min) : 0;
            var vmin = Vector256.Create(min);
            for (int c = first; c < padded; c += 8)
            {
                var iscale = Vector256.Create(iscales.Slice(c, 8));
                Vector256<float> sl = Vector256<float>.Zero, sl2 = Vector256<float>.Zero, sxl = Vector256<float>.Zero;
                for (int i = 0; i < n; i++)
                {
                    var xi = Vector256.Create(x[i]);
                    var l = Vector256.Min(top, Vector256.Max(Vector256<float>.Zero, (iscale * (xi - vmin) + magic) - magic));
                    var wl = Vector256.Create(weights[i]) * l;
                    sl += wl;
                    sl2 += wl * l;
                    sxl += wl * xi;
                }
                sl.CopyTo(sumL.Slice(c, 8));
                sl2.CopyTo(sumL2.Slice(c, 8));
                sxl.CopyTo(sumXL.Slice(c, 8));
            }
            for (int step = first; step < padded; step++)
            {
                scales[step] = 0;
                mins[step] = 0;
                float D = sumW * sumL2[step] - sumL[step] * sumL[step];
                if (step < trials && D > 0)
                {
                    float thisScale = (sumW * sumXL[step] - sumX * sumL[step]) / D;
                    float thisMin = (sumL2[step] * sumX - sumL[step] * sumXL[step]) / D;
                    if (thisMin > 0)
                    {
                        thisMin = 0;
                        thisScale = sumXL[step] / sumL2[step];
                    }
                    scales[step] = thisScale;
                    mins[step] = thisMin;
                }
            }
            for (int c = first; c < padded; c += 8)
            {
                var iscale = Vector256.Create(iscales.Slice(c, 8));
                var s = Vector256.Create(scales.Slice(c, 8));
                var m = Vector256.Create(mins.Slice(c, 8));
                var e = Vector256<float>.Zero;
                for (int i = 0; i < n; i++)
                {
                    var xi = Vector256.Create(x[i]);
                    var l = Vector256.Min(top, Vector256.Max(Vector256<float>.Zero, (iscale * (xi - vmin) + magic) - magic));
                    var diff = s * l + m - xi;
                    diff = useMad ? Vector256.Abs(diff) : diff * diff;
                    e += Vector256.Create(weights[i]) * diff;
                }
                e.CopyTo(errors.Slice(c, 8));
            }
            int accepted = -1;
            for (int step = first; step < trials; step++)
            {
                float D = sumW * sumL2[step] - sumL[step] * sumL[step];
                if (D > 0 && errors[step] < bestError)
                {
                    accepted = step;
                    break;
                }
            }
            if (accepted < 0)
                break;
            // The accepted trial's codes, with the min they were chosen with.
            for (int i = 0; i < n; i++)
                L[i] = (byte)Math.Max(0, Math.Min(nmax, NearestInt(iscales[accepted] * (x[i] - min))));
            bestError = errors[accepted];
            scale = scales[accepted];
            min = mins[accepted];
            first = accepted + 1;
        }
        theMin = -min;
        return scale;
    }

    // MakeQxQuants' 18 trial scales, one per lane: each trial's sums do not depend on which earlier trial won, so the
    // lanes give every trial's f32 sums (same order as the scalar loop) and the trials are then accepted in step order.
    private static float MakeQxQuantsLanes(int nmax, ReadOnlySpan<float> x, Span<sbyte> L, int rmseType, ReadOnlySpan<float> weights, float max, float scale, float best)
    {
        int n = x.Length;
        Span<float> iscales = stackalloc float[24];
        Span<float> sumLx = stackalloc float[24];
        Span<float> sumL2 = stackalloc float[24];
        Span<float> w = stackalloc float[n];
        for (int i = 0; i < n; i++)
            w[i] = QxWeight(x[i], i, rmseType, weights);
        for (int k = 0; k < 24; k++)
        {
            int step = k < 9 ? k - 9 : k - 8; // -9 … -1, 1 … 9, then padding
            iscales[k] = k < 18 ? -(nmax + 0.1f * step) / max : 0;
        }
        var magic = Vector256.Create(12582912f);
        var lo = Vector256.Create((float)-nmax);
        var hi = Vector256.Create((float)(nmax - 1));
        for (int c = 0; c < 24; c += 8)
        {
            var iscale = Vector256.Create(iscales.Slice(c, 8));
            Vector256<float> slx = Vector256<float>.Zero, sl2 = Vector256<float>.Zero;
            for (int i = 0; i < n; i++)
            {
                var xi = Vector256.Create(x[i]);
                var l = Vector256.Min(hi, Vector256.Max(lo, (iscale * xi + magic) - magic));
                var wi = Vector256.Create(w[i]);
                slx += wi * xi * l;
                sl2 += wi * l * l;
            }
            slx.CopyTo(sumLx.Slice(c, 8));
            sl2.CopyTo(sumL2.Slice(c, 8));
        }
        int winner = -1;
        for (int k = 0; k < 18; k++)
        {
            if (sumL2[k] > 0 && sumLx[k] * sumLx[k] > best * sumL2[k])
            {
                scale = sumLx[k] / sumL2[k];
                best = scale * sumLx[k];
                winner = k;
            }
        }
        if (winner >= 0)
        {
            for (int i = 0; i < n; i++)
            {
                int l = NearestInt(iscales[winner] * x[i]);
                L[i] = (sbyte)(nmax + Math.Max(-nmax, Math.Min(nmax - 1, l)));
            }
        }
        return scale;
    }
}
