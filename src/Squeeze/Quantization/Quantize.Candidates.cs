using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using static Squeeze.Tensors.HalfConversions;

namespace Squeeze.Quantization;

// The searches' vector forms, each giving its scalar definition's bytes. The refinement's sub-block step (Refine, step 1)
// evaluates many candidate (step, offset) pairs on each sub-block, codes re-chosen as the nearest representable value;
// the definition is BestCodes (one candidate, its error summed in double). Its vector form screens: every sub-block's
// candidates on the transposed super-block, one (sub-block, candidate) per lane, each error (16 or 32 terms) summed in
// f32, and a candidate whose f32 error is certainly not below the bound is rejected without an exact evaluation; every
// other one is evaluated exactly (BestCodesLanes: BestCodes' terms, added in its order). (The terms are non-negative, so
// an f32 sum of n terms is within (n + 4)·2⁻²⁴ of the exact one, relatively, in any order of its additions, while no
// term underflows or overflows: the screen allows 10⁻⁵ and acts only on bounds in [10⁻³⁰, 10³⁰].) The super-block step
// is screened the same way and its survivors are evaluated exactly in lanes (RefineLanes). llama.cpp's searches run one
// trial scale per lane (MakeQkxQuantsLanes, MakeQxQuantsLanes) or, for whole super-blocks, one sub-block per lane
// (MakeQkxQuantsLanes16, MakeQxQuantsSubBlocks, MakeQ3QuantsSubBlocks), with each lane's f32 operations in the scalar
// order. Sums whose order the vector form changes are used only where their rounding is bounded and cannot change a
// decision (the screens, LeastSquaresHalfLanes).
public static partial class Quantize
{
    // Set only inside ScalarRow: the refinement evaluates its candidates one at a time with BestCodes.
    [ThreadStatic]
    private static bool scalarOnly;

    /// <summary>Per lane of 16 sub-blocks transposed (16 values each, value v of every sub-block at 16v): the largest
    /// magnitude and the signed value that has it, the first of equal magnitudes (the scalar search's choice).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<float> AbsMax, Vector512<float> Max) SignedAbsMax16(ref float xs)
    {
        Vector512<float> amax = Vector512<float>.Zero, max = Vector512<float>.Zero;
        for (int i = 0; i < 16; i++)
        {
            var xi = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
            var larger = Vector512.GreaterThan(Vector512.Abs(xi), amax);
            amax = Vector512.ConditionalSelect(larger, Vector512.Abs(xi), amax);
            max = Vector512.ConditionalSelect(larger, xi, max);
        }
        return (amax, max);
    }

    /// <summary>Test hook: encodes a row with the scalar definition of every search (no vector lanes), to show that the
    /// vector code gives byte-identical blocks.</summary>
    internal static void ScalarRow(Squeeze.Tensors.GgmlType type, ReadOnlySpan<float> source, ReadOnlySpan<float> importance, Span<byte> destination)
    {
        scalarOnly = true;
        try
        {
            RowCore(type, source, importance, destination, -1, ScaleSearch.Refined);
        }
        finally
        {
            scalarOnly = false;
        }
    }

    private static bool UseVectors => !scalarOnly && Vector256.IsHardwareAccelerated;

    // codes[i] = clamp(NearestInt((x[i] + offset) / step), lo, hi) for 16 or 32 values, with NearestInt's own bit
    // arithmetic (the shifted f32 value's low 23 bits), so that even quotients beyond its range give its integers.
    // (The requantizations without a min pass offset 0: x + 0 differs from x only for −0, whose quotient rounds to 0 either way.)
    private static void RequantizeLanes(ReadOnlySpan<float> x, float offset, float step, int lo, int hi, Span<int> codes)
    {
        var o = Vector512.Create(offset);
        var s = Vector512.Create(step);
        var magic = Vector512.Create(12582912f);
        var low = Vector512.Create(lo);
        var high = Vector512.Create(hi);
        for (int k = 0; k < x.Length; k += 16)
        {
            var shifted = (Vector512.Create(x.Slice(k, 16)) + o) / s + magic;
            var nearest = (shifted.AsInt32() & Vector512.Create(0x007fffff)) - Vector512.Create(0x00400000);
            Vector512.Max(low, Vector512.Min(high, nearest)).CopyTo(codes.Slice(k, 16));
        }
    }

    // Refine's step 1 estimates, every sub-block at once on the transposed super-block: candidate k of sub-block j is
    // (sc[j] + ScOffsets[k], m[j] + MOffsets[k]), the scalar loop's (sc, m) in its order; lane l holds sub-block l mod S (S
    // sub-blocks) of candidate row·16/S + l div S, and sums that sub-block's error in f32 in value order with BestCodes'
    // codes: candidate k of sub-block j at estimates[k·S + j]. Bit k of survivors[j] is set unless that estimate is
    // screened out by bounds[j], the sub-block's error before the step: RefineLanes screens the survivors again with the
    // bound as it falls during the step, and one screened out here would be screened out by the lower bound too, or,
    // where that bound is below the screen's range, rejected by BestCodes (its error is not below the higher bound).
    // (A candidate outside the format's ranges gets an estimate and a bit that RefineLanes does not use.) wl is empty
    // without importance (every weight 1).
    private static void SubBlockCandidateErrors(KFormat f, ReadOnlySpan<float> xl, ReadOnlySpan<float> wl, float d, float dmin, KBlock b,
        ReadOnlySpan<double> bounds, Span<float> estimates, Span<ulong> survivors)
    {
        int subBlocks = f.SubBlocks, n = f.SubSize;
        Span<double> thresholds = stackalloc double[16];
        for (int l = 0; l < 16; l++)
            thresholds[l] = ScreenThreshold(bounds[l & (subBlocks - 1)]);
        var thresholdLo = Vector512.Create((ReadOnlySpan<double>)thresholds[..8]);
        var thresholdHi = Vector512.Create((ReadOnlySpan<double>)thresholds[8..]);
        survivors[..subBlocks].Clear();
        var magic = Vector512.Create(12582912f);
        var hi = Vector512.Create((float)f.QMax);
        var lo = Vector512.Create((float)f.QMin);
        var vd = Vector512.Create(d);
        var vdmin = Vector512.Create(dmin);
        var scBase = FactorLanes(f, b.Sc);
        var mBase = FactorLanes(f, b.M);
        ref float xs = ref MemoryMarshal.GetReference(xl);
        ref float ws = ref MemoryMarshal.GetReference(wl);
        bool weighted = !wl.IsEmpty, minTerm = f.MMax != 0;
        float[] scOffsets = f.ScOffsetLanes, mOffsets = f.MOffsetLanes;
        int rows = scOffsets.Length / 16;
        // Two rows at a time (an odd count's last row alone): two independent running sums.
        for (int row = 0; row < rows; row += 2)
        {
            int other = Math.Min(row + 1, rows - 1);
            var step0 = vd * (scBase + Vector512.Create(scOffsets, 16 * row));
            var offset0 = vdmin * (mBase + Vector512.Create(mOffsets, 16 * row));
            var inv0 = Vector512.ConditionalSelect(Vector512.Equals(step0, Vector512<float>.Zero), Vector512<float>.Zero, Vector512<float>.One / step0);
            var step1 = vd * (scBase + Vector512.Create(scOffsets, 16 * other));
            var offset1 = vdmin * (mBase + Vector512.Create(mOffsets, 16 * other));
            var inv1 = Vector512.ConditionalSelect(Vector512.Equals(step1, Vector512<float>.Zero), Vector512<float>.Zero, Vector512<float>.One / step1);
            Vector512<float> e0 = Vector512<float>.Zero, e1 = Vector512<float>.Zero;
            bool two = other != row;
            for (int i = 0; i < n; i++)
            {
                var xv = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
                var sq0 = SquaredDifference(xv, step0, offset0, inv0, lo, hi, magic, minTerm);
                var sq1 = two ? SquaredDifference(xv, step1, offset1, inv1, lo, hi, magic, minTerm) : Vector512<float>.Zero;
                if (weighted)
                {
                    var wv = Vector512.LoadUnsafe(ref ws, (nuint)(16 * i));
                    sq0 = wv * sq0;
                    sq1 = wv * sq1;
                }
                e0 += sq0;
                e1 += sq1;
            }
            Survivors(f, row, e0, thresholdLo, thresholdHi, estimates, survivors);
            if (two)
                Survivors(f, other, e1, thresholdLo, thresholdHi, estimates, survivors);
        }
    }

    // (x − (step·q − offset))² in f32 with BestCodes' clamped nearest code q: rounding (t + magic) − magic is monotone and
    // exact on the codes' range, so clamping its result equals clamping t first. Without a min term (minTerm false) the
    // offsets are +0, and x + 0 and y − 0 are left out: they differ from x and y only for x = −0, whose quotient rounds to
    // code 0 either way.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> SquaredDifference(Vector512<float> x, Vector512<float> step, Vector512<float> offset, Vector512<float> inv,
        Vector512<float> lo, Vector512<float> hi, Vector512<float> magic, bool minTerm)
    {
        var q = Vector512.MinNative(hi, Vector512.MaxNative(lo, ((minTerm ? x + offset : x) * inv + magic) - magic));
        var v = step * q;
        var diff = x - (minTerm ? v - offset : v);
        return diff * diff;
    }

    // Stores a row of SubBlockCandidateErrors' estimates and sets the bits of the candidates its screen keeps.
    private static void Survivors(KFormat f, int row, Vector512<float> e, Vector512<double> thresholdLo, Vector512<double> thresholdHi,
        Span<float> estimates, Span<ulong> survivors)
    {
        int subBlocks = f.SubBlocks;
        e.CopyTo(estimates.Slice(16 * row, 16));
        var (eLo, eHi) = Vector512.Widen(e);
        uint kept = ~((uint)Vector512.GreaterThanOrEqual(eLo, thresholdLo).ExtractMostSignificantBits()
            | (uint)Vector512.GreaterThanOrEqual(eHi, thresholdHi).ExtractMostSignificantBits() << 8) & 0xFFFF;
        for (; kept != 0; kept &= kept - 1)
        {
            int l = BitOperations.TrailingZeroCount(kept);
            int k = row * (16 / subBlocks) + l / subBlocks;
            if (k < f.ScOffsets.Length)
                survivors[l & (subBlocks - 1)] |= 1UL << k;
        }
    }

    // True when an error whose f32 estimate is estimate is certainly not below bound (see above).
    private static bool ScreenedOut(float estimate, double bound) => estimate >= ScreenThreshold(bound);

    // An error whose f32 estimate is at least this is certainly not below bound; NaN (nothing reaches it) outside
    // [10⁻³⁰, 10³⁰].
    private static double ScreenThreshold(double bound) => bound is >= 1e-30 and <= 1e30 ? bound * (1 + 1e-5) : double.NaN;

    // BestCodes with its terms in lanes: the same codes, the same double terms, added one after another in value order.
    // BestCodes stops at the first partial sum that reaches the bound; the terms are non-negative, so the partial sums only
    // grow and one reaches the bound exactly when the whole sum does: +∞ then, as BestCodes returns.
    [SkipLocalsInit] // the n terms are written before they are read
    private static double BestCodesLanes(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, float step, float offset, Span<int> codes, double bound)
    {
        int n = x.Length;
        Span<double> terms = stackalloc double[32];
        var magic = Vector512.Create(12582912f);
        var hi = Vector512.Create((float)f.QMax);
        var lo = Vector512.Create((float)f.QMin);
        var s = Vector512.Create(step);
        var o = Vector512.Create(offset);
        // step 0: BestCodes' code is clamp(0) for every value; (x + offset)·0 is ±0, which rounds and clamps to it.
        var inv = Vector512.Create(step != 0 ? 1 / step : 0);
        for (int k = 0; k < n; k += 16)
        {
            var xv = Vector512.Create(x.Slice(k, 16));
            var t = (xv + o) * inv;
            var q = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(t, hi), hi,
                Vector512.ConditionalSelect(Vector512.LessThanOrEqual(t, lo), lo, (t + magic) - magic));
            Vector512.ConvertToInt32(q).CopyTo(codes.Slice(k, 16));
            var (xLo, xHi) = Vector512.Widen(xv);
            var (vLo, vHi) = Vector512.Widen(s * q - o);
            var dLo = xLo - vLo;
            var dHi = xHi - vHi;
            if (w.IsEmpty)
            {
                (dLo * dLo).CopyTo(terms.Slice(k, 8));
                (dHi * dHi).CopyTo(terms.Slice(k + 8, 8));
            }
            else
            {
                var (wLo, wHi) = Vector512.Widen(Vector512.Create(w.Slice(k, 16)));
                (wLo * (dLo * dLo)).CopyTo(terms.Slice(k, 8));
                (wHi * (dHi * dHi)).CopyTo(terms.Slice(k + 8, 8));
            }
        }
        double e = 0;
        for (int i = 0; i < n; i++)
            e += terms[i];
        return e < bound ? e : double.PositiveInfinity;
    }

    // MakeQkxQuants' trial scales, one per lane, with the same f32 sums in the same order per lane. The scalar loop moves
    // min when it accepts a trial, and later trials depend on min; so 16 trials are evaluated at a time from the first
    // one not yet decided and walked in step order: at the first acceptance min moves and the next 16 start after it.
    // (Clamping with MinNative / MaxNative: the codes are never NaN or -0, so they equal Math.Min / Math.Max.)
    [SkipLocalsInit] // QkxSums writes every code before QkxErrors reads it
    private static float MakeQkxQuantsLanes(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> L, out float theMin,
        float rmin, float rdelta, int nstep, bool useMad, float min, float max, float sumW, float sumX, float bestError, float scale)
    {
        int n = x.Length, trials = nstep + 1;
        ref float xs = ref MemoryMarshal.GetReference(x);
        ref float ws = ref MemoryMarshal.GetReference(weights);
        var lane = Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        var vSumW = Vector512.Create(sumW);
        var vSumX = Vector512.Create(sumX);
        Span<float> codes = stackalloc float[16 * n];
        ref float cs = ref MemoryMarshal.GetReference(codes);
        int first = 0;
        while (first < trials)
        {
            // The scalar loop's f32 operations, lane by lane: iscale = (rmin + rdelta·step + nmax) / (max − min), then the
            // least-squares scale and min of each trial's codes.
            var step = Vector512.Create((float)first) + lane;
            var valid = Vector512.LessThan(step, Vector512.Create((float)trials));
            var iscale = Vector512.ConditionalSelect(valid,
                (Vector512.Create(rmin) + Vector512.Create(rdelta) * step + Vector512.Create((float)nmax)) / Vector512.Create(max - min), Vector512<float>.Zero);
            var vmin = Vector512.Create(min);
            QkxSums(ref xs, ref ws, n, nmax, iscale, vmin, ref cs, out var sumL, out var sumL2, out var sumXL);
            var D = vSumW * sumL2 - sumL * sumL;
            var solved = valid & Vector512.GreaterThan(D, Vector512<float>.Zero);
            var thisScale = (vSumW * sumXL - vSumX * sumL) / D;
            var thisMin = (sumL2 * vSumX - sumL * sumXL) / D;
            var positive = Vector512.GreaterThan(thisMin, Vector512<float>.Zero);
            var scales = Vector512.ConditionalSelect(solved, Vector512.ConditionalSelect(positive, sumXL / sumL2, thisScale), Vector512<float>.Zero);
            var mins = Vector512.ConditionalSelect(solved & ~positive, thisMin, Vector512<float>.Zero);
            var errors = QkxErrors(ref xs, ref ws, n, ref cs, scales, mins, useMad);
            ulong better = (solved & Vector512.LessThan(errors, Vector512.Create(bestError))).ExtractMostSignificantBits();
            if (better == 0)
            {
                first += 16;
                continue;
            }
            // The first better trial in step order is accepted; its codes, with the min they were chosen with.
            int accepted = BitOperations.TrailingZeroCount(better);
            float acceptedIscale = iscale.GetElement(accepted);
            for (int i = 0; i < n; i++)
                L[i] = (byte)Math.Max(0, Math.Min(nmax, NearestInt(acceptedIscale * (x[i] - min))));
            bestError = errors.GetElement(accepted);
            scale = scales.GetElement(accepted);
            min = mins.GetElement(accepted);
            first += accepted + 1;
        }
        theMin = -min;
        return scale;
    }

    // Σ w·l, Σ w·l·l, Σ w·l·x per lane, l = clamp(round(iscale·(x − min)), 0, nmax), in the scalar loop's order; the
    // codes l of value i at codes[16 i …].
    private static void QkxSums(ref float x, ref float w, int n, int nmax, Vector512<float> iscale, Vector512<float> vmin, ref float codes,
        out Vector512<float> sumL, out Vector512<float> sumL2, out Vector512<float> sumXL)
    {
        var magic = Vector512.Create(12582912f);
        var top = Vector512.Create((float)nmax);
        Vector512<float> sl = Vector512<float>.Zero, sl2 = Vector512<float>.Zero, sxl = Vector512<float>.Zero;
        for (int i = 0; i < n; i++)
        {
            var xi = Vector512.Create(Unsafe.Add(ref x, i));
            var l = Vector512.MinNative(top, Vector512.MaxNative(Vector512<float>.Zero, (iscale * (xi - vmin) + magic) - magic));
            l.StoreUnsafe(ref codes, (nuint)(16 * i));
            var wl = Vector512.Create(Unsafe.Add(ref w, i)) * l;
            sl += wl;
            sl2 += wl * l;
            sxl += wl * xi;
        }
        sumL = sl;
        sumL2 = sl2;
        sumXL = sxl;
    }

    // Σ w·|s·l + m − x| (useMad) or Σ w·(s·l + m − x)² per lane, with QkxSums' codes.
    private static Vector512<float> QkxErrors(ref float x, ref float w, int n, ref float codes, Vector512<float> s, Vector512<float> m, bool useMad)
    {
        var e = Vector512<float>.Zero;
        for (int i = 0; i < n; i++)
        {
            var xi = Vector512.Create(Unsafe.Add(ref x, i));
            var l = Vector512.LoadUnsafe(ref codes, (nuint)(16 * i));
            var diff = s * l + m - xi;
            e += Vector512.Create(Unsafe.Add(ref w, i)) * (useMad ? Vector512.Abs(diff) : diff * diff);
        }
        return e;
    }

    // MakeQxQuants' 18 trial scales, one per lane: each trial's sums do not depend on which earlier trial won, so the
    // lanes give every trial's f32 sums (same order as the scalar loop) and the trials are then accepted in step order.
    private static float MakeQxQuantsLanes(int nmax, ReadOnlySpan<float> x, Span<sbyte> L, int rmseType, ReadOnlySpan<float> weights, float max, float scale, float best)
    {
        int n = x.Length;
        Span<float> iscales = stackalloc float[32];
        Span<float> sumLx = stackalloc float[32];
        Span<float> sumL2 = stackalloc float[32];
        Span<float> w = stackalloc float[n];
        for (int i = 0; i < n; i++)
            w[i] = QxWeight(x[i], i, rmseType, weights);
        for (int k = 0; k < 32; k++)
        {
            int step = k < 9 ? k - 9 : k - 8; // -9 … -1, 1 … 9, then padding
            iscales[k] = k < 18 ? -(nmax + 0.1f * step) / max : 0;
        }
        var magic = Vector512.Create(12582912f);
        var lo = Vector512.Create((float)-nmax);
        var hi = Vector512.Create((float)(nmax - 1));
        for (int c = 0; c < 32; c += 16)
        {
            var iscale = Vector512.Create((ReadOnlySpan<float>)iscales.Slice(c, 16));
            Vector512<float> slx = Vector512<float>.Zero, sl2 = Vector512<float>.Zero;
            for (int i = 0; i < n; i++)
            {
                var xi = Vector512.Create(x[i]);
                var l = Vector512.MinNative(hi, Vector512.MaxNative(lo, (iscale * xi + magic) - magic));
                var wi = Vector512.Create(w[i]);
                slx += wi * xi * l;
                sl2 += wi * l * l;
            }
            slx.CopyTo(sumLx.Slice(c, 16));
            sl2.CopyTo(sumL2.Slice(c, 16));
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

    // MakeQkxQuants for the 16 sub-blocks of 16 values of a super-block at once, sub-block j in lane j of the transposed
    // values (MakeQkxQuantsLanes16). Writes the codes to L, −min to mins and the scales to scales, as 16 calls of
    // MakeQkxQuants would.
    [SkipLocalsInit] // every element of the buffers is written before it is read
    private static void MakeQkxQuantsSubBlocks(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> L, Span<float> mins,
        Span<float> scales, float rmin, float rdelta, int nstep, bool useMad)
    {
        Span<float> xt = stackalloc float[QK_K];
        Span<float> wt = stackalloc float[QK_K];
        Span<float> codes = stackalloc float[QK_K];
        Transpose(x, 16, xt);
        Transpose(weights, 16, wt);
        MakeQkxQuantsLanes16(nmax, 16, xt, wt, codes, mins, scales, Vector512.Create(rmin), Vector512.Create(rdelta), nstep, nstep, useMad);
        for (int j = 0; j < 16; j++)
        {
            for (int i = 0; i < 16; i++)
                L[16 * j + i] = (byte)codes[16 * i + j];
        }
    }

    // MakeQkxQuants for 16 independent groups of n values, group l in lane l (value i at xt[16 i + l], its weight at
    // wt[16 i + l]), each lane with its group's f32 operations in the scalar order (the trials' codes rounded and clamped
    // as MakeQkxQuantsLanes does): its minimum and maximum, the first codes and their error, then its trial scales (the
    // first lanes use nstep0 + 1 of them, from lane split on nstep1 + 1), each accepted where its error is lower, which
    // moves that lane's min for the later trials. Writes the codes to codes (as xt, 0 for a flat group), −min to mins and
    // the scales to scales.
    [SkipLocalsInit] // the trial buffer is written before it is read
    private static void MakeQkxQuantsLanes16(int nmax, int n, ReadOnlySpan<float> xt, ReadOnlySpan<float> wt, Span<float> codes, Span<float> mins,
        Span<float> scales, Vector512<float> rmin, Vector512<float> rdelta, int nstep0, int nstep1, bool useMad, int split = 16)
    {
        Span<float> trial = stackalloc float[16 * n];
        ref float xs = ref MemoryMarshal.GetReference(xt);
        ref float ws = ref MemoryMarshal.GetReference(wt);
        ref float cs = ref MemoryMarshal.GetReference(codes);
        ref float ts = ref MemoryMarshal.GetReference(trial);
        var magic = Vector512.Create(12582912f);
        var top = Vector512.Create((float)nmax);
        var lane = Vector512.Create(0f, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        var lastStep = Vector512.ConditionalSelect(Vector512.LessThan(lane, Vector512.Create((float)split)),
            Vector512.Create((float)nstep0), Vector512.Create((float)nstep1));
        var min = Vector512.LoadUnsafe(ref xs);
        var max = min;
        var sumW = Vector512.LoadUnsafe(ref ws);
        var sumX = sumW * min;
        for (int i = 1; i < n; i++)
        {
            var xi = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
            min = Vector512.ConditionalSelect(Vector512.LessThan(xi, min), xi, min);
            max = Vector512.ConditionalSelect(Vector512.GreaterThan(xi, max), xi, max);
            var wi = Vector512.LoadUnsafe(ref ws, (nuint)(16 * i));
            sumW += wi;
            sumX += wi * xi;
        }
        min = Vector512.ConditionalSelect(Vector512.GreaterThan(min, Vector512<float>.Zero), Vector512<float>.Zero, min);
        var flat = Vector512.Equals(max, min);
        var iscale = top / (max - min);
        var scale = Vector512<float>.One / iscale;
        var bestError = Vector512<float>.Zero;
        for (int i = 0; i < n; i++)
        {
            // NearestInt of iscale·(x − min) ∈ [0, nmax] (up to rounding): the shifted value's rounding is exact there.
            var xi = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
            var l = Vector512.Max(Vector512<float>.Zero, Vector512.Min(top, (iscale * (xi - min) + magic) - magic));
            l.StoreUnsafe(ref cs, (nuint)(16 * i));
            var diff = scale * l + min - xi;
            bestError += Vector512.LoadUnsafe(ref ws, (nuint)(16 * i)) * (useMad ? Vector512.Abs(diff) : diff * diff);
        }
        for (int step = 0; step <= Math.Max(nstep0, nstep1); step++)
        {
            // The scalar loop's (rmin + rdelta·step + nmax) / (max − min), with this lane's current min.
            var trialIscale = (rmin + rdelta * Vector512.Create((float)step) + top) / (max - min);
            Vector512<float> sumL = Vector512<float>.Zero, sumL2 = Vector512<float>.Zero, sumXL = Vector512<float>.Zero;
            for (int i = 0; i < n; i++)
            {
                var xi = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
                var l = Vector512.MinNative(top, Vector512.MaxNative(Vector512<float>.Zero, (trialIscale * (xi - min) + magic) - magic));
                l.StoreUnsafe(ref ts, (nuint)(16 * i));
                var wl = Vector512.LoadUnsafe(ref ws, (nuint)(16 * i)) * l;
                sumL += wl;
                sumL2 += wl * l;
                sumXL += wl * xi;
            }
            var D = sumW * sumL2 - sumL * sumL;
            var solved = Vector512.GreaterThan(D, Vector512<float>.Zero) & Vector512.LessThanOrEqual(Vector512.Create((float)step), lastStep) & ~flat;
            if (solved == Vector512<float>.Zero)
                continue;
            var thisScale = (sumW * sumXL - sumX * sumL) / D;
            var thisMin = (sumL2 * sumX - sumL * sumXL) / D;
            var positive = Vector512.GreaterThan(thisMin, Vector512<float>.Zero);
            thisScale = Vector512.ConditionalSelect(positive, sumXL / sumL2, thisScale);
            thisMin = Vector512.ConditionalSelect(positive, Vector512<float>.Zero, thisMin);
            var curError = Vector512<float>.Zero;
            for (int i = 0; i < n; i++)
            {
                var diff = thisScale * Vector512.LoadUnsafe(ref ts, (nuint)(16 * i)) + thisMin - Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
                curError += Vector512.LoadUnsafe(ref ws, (nuint)(16 * i)) * (useMad ? Vector512.Abs(diff) : diff * diff);
            }
            var accept = solved & Vector512.LessThan(curError, bestError);
            if (accept == Vector512<float>.Zero)
                continue;
            for (int i = 0; i < n; i++)
            {
                var kept = Vector512.LoadUnsafe(ref cs, (nuint)(16 * i));
                Vector512.ConditionalSelect(accept, Vector512.LoadUnsafe(ref ts, (nuint)(16 * i)), kept).StoreUnsafe(ref cs, (nuint)(16 * i));
            }
            bestError = Vector512.ConditionalSelect(accept, curError, bestError);
            scale = Vector512.ConditionalSelect(accept, thisScale, scale);
            min = Vector512.ConditionalSelect(accept, thisMin, min);
        }
        // A flat group (max = min): codes 0, scale 0, its min as found.
        Vector512.ConditionalSelect(flat, Vector512<float>.Zero, scale).CopyTo(scales);
        (-min).CopyTo(mins);
        for (int i = 0; i < n; i++)
            Vector512.ConditionalSelect(flat, Vector512<float>.Zero, Vector512.LoadUnsafe(ref cs, (nuint)(16 * i))).StoreUnsafe(ref cs, (nuint)(16 * i));
    }

    // Both starts without importance at once (StartQ45KRef into first, StartQ45KWeighted into second): their 8 + 8
    // sub-blocks' make_qkx2/qkx3_quants side by side in 16 lanes (MakeQkxQuantsLanes16), each with its own trials.
    [SkipLocalsInit] // every element of the buffers is written before it is read
    private static void StartQ45KPair(ReadOnlySpan<float> x, KBlock first, KBlock second, int nmax, QkxTrials refTrials)
    {
        Span<float> weights = stackalloc float[2 * QK_K];
        Span<float> sw = stackalloc float[8];
        Q45KRefWeights(x, weights[..QK_K]);
        Q45KWeights(x, default, weights[QK_K..], sw);
        Span<float> xt = stackalloc float[2 * QK_K];
        Span<float> wt = stackalloc float[2 * QK_K];
        Span<float> codes = stackalloc float[2 * QK_K];
        for (int l = 0; l < 16; l++)
        {
            int j = l & 7, source = l < 8 ? 0 : QK_K;
            for (int i = 0; i < 32; i++)
            {
                xt[16 * i + l] = x[32 * j + i];
                wt[16 * i + l] = weights[source + 32 * j + i];
            }
        }
        Span<float> mins = stackalloc float[16];
        Span<float> scales = stackalloc float[16];
        var split = Vector512.Create(0f, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        var rmin = Vector512.ConditionalSelect(Vector512.Equals(split, Vector512<float>.Zero), Vector512.Create(refTrials.RMin), Vector512.Create(Q45KWeightedTrials.RMin));
        var rdelta = Vector512.ConditionalSelect(Vector512.Equals(split, Vector512<float>.Zero), Vector512.Create(refTrials.RDelta), Vector512.Create(Q45KWeightedTrials.RDelta));
        MakeQkxQuantsLanes16(nmax, 32, xt, wt, codes, mins, scales, rmin, rdelta, refTrials.NStep, Q45KWeightedTrials.NStep, false, split: 8);
        Span<byte> L = stackalloc byte[QK_K];
        for (int half = 0; half < 2; half++)
        {
            for (int j = 0; j < 8; j++)
            {
                for (int i = 0; i < 32; i++)
                    L[32 * j + i] = (byte)codes[16 * i + 8 * half + j];
            }
            if (half == 0)
                Q45KRefFinish(x, first, L, scales[..8], mins[..8], nmax);
            else
                Q45KWeightedFinish(x, second, L, scales[8..], mins[8..], sw, nmax);
        }
    }

    // MakeQ3Quants (with its refinement) for the 16 sub-blocks of 16 values of two super-blocks at once (x0 and x1; the
    // same span twice for one), sub-block j of each in lane j of its transposed values, each lane with its sub-block's f32
    // operations in the scalar order and NearestInt's own bit arithmetic. The refinement's passes are one chain of
    // dependent operations per super-block; the two chains are interleaved so that each hides the other's latency. The
    // scalar loop stops after a pass that changes nothing; such a pass leaves its state as it was, so every later pass
    // would change nothing either, and the lanes run until no lane of either super-block changes. Writes the codes to L0
    // and L1 and the scales to scales0 and scales1, as 16 calls of MakeQ3Quants per super-block would.
    [SkipLocalsInit] // every element of the buffers is written before it is read
    private static void MakeQ3QuantsSubBlocks(int nmax, ReadOnlySpan<float> x0, ReadOnlySpan<float> x1, Span<sbyte> L0, Span<sbyte> L1,
        Span<float> scales0, Span<float> scales1)
    {
        Span<float> xt = stackalloc float[2 * QK_K];
        Span<float> codes = stackalloc float[2 * QK_K];
        Transpose(x0, 16, xt[..QK_K]);
        Transpose(x1, 16, xt[QK_K..]);
        ref float xs0 = ref MemoryMarshal.GetReference(xt);
        ref float xs1 = ref Unsafe.Add(ref xs0, QK_K);
        ref float cs0 = ref MemoryMarshal.GetReference(codes);
        ref float cs1 = ref Unsafe.Add(ref cs0, QK_K);
        var lo = Vector512.Create(-nmax);
        var hi = Vector512.Create(nmax - 1);
        var (amax0, max0) = SignedAbsMax16(ref xs0);
        var (amax1, max1) = SignedAbsMax16(ref xs1);
        var iscale0 = Vector512.Create((float)-nmax) / max0;
        var iscale1 = Vector512.Create((float)-nmax) / max1;
        Vector512<float> sumlx0 = Vector512<float>.Zero, suml20 = Vector512<float>.Zero, sumlx1 = Vector512<float>.Zero, suml21 = Vector512<float>.Zero;
        for (int i = 0; i < 16; i++)
        {
            Q3FirstCodes(ref xs0, ref cs0, i, iscale0, lo, hi, ref sumlx0, ref suml20);
            Q3FirstCodes(ref xs1, ref cs1, i, iscale1, lo, hi, ref sumlx1, ref suml21);
        }
        for (int itry = 0; itry < 5; itry++)
        {
            var changed = Vector512<float>.Zero;
            for (int i = 0; i < 16; i++)
            {
                changed |= Q3Pass(ref xs0, ref cs0, i, lo, hi, ref sumlx0, ref suml20);
                changed |= Q3Pass(ref xs1, ref cs1, i, lo, hi, ref sumlx1, ref suml21);
            }
            if (changed == Vector512<float>.Zero)
                break;
        }
        Q3Results(nmax, codes[..QK_K], amax0, sumlx0, suml20, L0, scales0);
        Q3Results(nmax, codes[QK_K..], amax1, sumlx1, suml21, L1, scales1);
    }

    // MakeQ3Quants' first codes at value i of every sub-block and their sums.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q3FirstCodes(ref float xs, ref float cs, int i, Vector512<float> iscale, Vector512<int> lo, Vector512<int> hi,
        ref Vector512<float> sumlx, ref Vector512<float> suml2)
    {
        var xi = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
        var l = Vector512.ConvertToSingle(Vector512.Max(lo, Vector512.Min(hi, NearestIntLanes(iscale * xi))));
        l.StoreUnsafe(ref cs, (nuint)(16 * i));
        var w = xi * xi;
        sumlx += w * xi * l;
        suml2 += w * l * l;
    }

    // One step of MakeQ3Quants' refinement pass at value i of every sub-block: the lanes whose code changes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Q3Pass(ref float xs, ref float cs, int i, Vector512<int> lo, Vector512<int> hi,
        ref Vector512<float> sumlx, ref Vector512<float> suml2)
    {
        var xi = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
        var l = Vector512.LoadUnsafe(ref cs, (nuint)(16 * i));
        var w = xi * xi;
        var slx = sumlx - w * xi * l;
        var sl2 = suml2 - w * l * l;
        var newL = Vector512.ConvertToSingle(Vector512.Max(lo, Vector512.Min(hi, NearestIntLanes(xi * sl2 / slx))));
        var accept = Vector512.GreaterThan(slx, Vector512<float>.Zero) & ~Vector512.Equals(newL, l);
        slx += w * xi * newL;
        sl2 += w * newL * newL;
        accept &= Vector512.GreaterThan(sl2, Vector512<float>.Zero) & Vector512.GreaterThan(slx * slx * suml2, sumlx * sumlx * sl2);
        Vector512.ConditionalSelect(accept, newL, l).StoreUnsafe(ref cs, (nuint)(16 * i));
        sumlx = Vector512.ConditionalSelect(accept, slx, sumlx);
        suml2 = Vector512.ConditionalSelect(accept, sl2, suml2);
        return accept;
    }

    // MakeQ3Quants' scales and codes (offset by nmax; all zero for a sub-block whose largest magnitude is below GroupMaxEps).
    private static void Q3Results(int nmax, ReadOnlySpan<float> codes, Vector512<float> amax, Vector512<float> sumlx, Vector512<float> suml2,
        Span<sbyte> L, Span<float> scales)
    {
        var zero = Vector512.LessThan(amax, Vector512.Create(GroupMaxEps));
        var scale = Vector512.ConditionalSelect(Vector512.GreaterThan(suml2, Vector512<float>.Zero), sumlx / suml2, Vector512<float>.Zero);
        Vector512.ConditionalSelect(zero, Vector512<float>.Zero, scale).CopyTo(scales);
        SubBlockCodes(nmax, codes, (uint)zero.ExtractMostSignificantBits(), L);
    }

    // The searches' codes on transposed sub-blocks (value i of sub-block j at 16 i + j; whole numbers from −nmax) as
    // L[16 j + i] = code + nmax, 0 in every sub-block whose bit of empty is set.
    [SkipLocalsInit] // every element of the buffer is written before it is read
    private static void SubBlockCodes(int nmax, ReadOnlySpan<float> codes, uint empty, Span<sbyte> L)
    {
        Span<float> ordered = stackalloc float[QK_K];
        Transpose(codes, 16, ordered);
        // Codes plus nmax from 0 to 2·nmax − 1 ≤ 63: narrowing keeps them.
        var vnmax = Vector512.Create((float)nmax);
        for (int k = 0; k < QK_K; k += 64)
        {
            var low = Vector512.Narrow(Offset(ordered, k, vnmax), Offset(ordered, k + 16, vnmax));
            var high = Vector512.Narrow(Offset(ordered, k + 32, vnmax), Offset(ordered, k + 48, vnmax));
            Vector512.Narrow(low, high).CopyTo(L.Slice(k, 64));
        }
        for (; empty != 0; empty &= empty - 1)
            L.Slice(16 * BitOperations.TrailingZeroCount(empty), 16).Clear();

        static Vector512<int> Offset(ReadOnlySpan<float> codes, int k, Vector512<float> nmax)
            => Vector512.ConvertToInt32(Vector512.Create(codes.Slice(k, 16)) + nmax);
    }

    // NearestInt per lane, with its bit arithmetic: the low 23 bits of value + 1.5·2²³, less 2²².
    private static Vector512<int> NearestIntLanes(Vector512<float> value)
        => ((value + Vector512.Create(12582912f)).AsInt32() & Vector512.Create(0x007fffff)) - Vector512.Create(0x00400000);

    // MakeQxQuants (rmseType 1) for the 16 sub-blocks of 16 values of a super-block at once, sub-block j in lane j of the
    // transposed values, each lane with its sub-block's f32 operations in the scalar order: the first value of largest
    // magnitude, the sums of the first scale, then the 18 trial scales accepted in step order. weights: one per value, or
    // empty for x². The codes go to L and the scales to scales, as 16 calls of MakeQxQuants would write them. The trials'
    // sums do not depend on one another, so they are summed two at a time (two independent chains of additions) and only
    // the acceptances run in step order; each lane keeps the inverse scale it accepted last, and its codes are computed
    // once at the end (the same operations on the same values give the codes the accepted trial had).
    // (Rounding by (t + magic) − magic equals NearestInt here: |t| ≤ nmax + 1 wherever the sub-block is not all but zero.)
    [SkipLocalsInit] // every element of the buffers is written before it is read
    private static void MakeQxQuantsSubBlocks(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<sbyte> L, Span<float> scales)
    {
        Span<float> xt = stackalloc float[QK_K];
        Span<float> wt = stackalloc float[QK_K];
        Transpose(x, 16, xt);
        if (weights.IsEmpty)
        {
            for (int k = 0; k < QK_K; k++)
                wt[k] = xt[k] * xt[k];
        }
        else
        {
            Transpose(weights, 16, wt);
        }
        ref float xs = ref MemoryMarshal.GetReference(xt);
        ref float ws = ref MemoryMarshal.GetReference(wt);
        var (amax, max) = SignedAbsMax16(ref xs);
        var zero = Vector512.LessThan(amax, Vector512.Create(GroupMaxEps));
        var iscale = Vector512.Create((float)-nmax) / max;
        QxSums(ref xs, ref ws, nmax, iscale, iscale, out var sumlx, out var suml2, out _, out _);
        var scale = Vector512.ConditionalSelect(Vector512.Equals(suml2, Vector512<float>.Zero), Vector512<float>.Zero, sumlx / suml2);
        var best = scale * sumlx;
        // Steps −9 … −1, 1 … 9 in pairs: (−9, −8), …, (−1, 1), …, (8, 9).
        for (int pair = 0; pair < 9; pair++)
        {
            int stepA = pair < 4 ? 2 * pair - 9 : pair == 4 ? -1 : 2 * pair - 8;
            int stepB = pair < 4 ? stepA + 1 : pair == 4 ? 1 : stepA + 1;
            var iscaleA = Vector512.Create(-(nmax + 0.1f * stepA)) / max;
            var iscaleB = Vector512.Create(-(nmax + 0.1f * stepB)) / max;
            QxSums(ref xs, ref ws, nmax, iscaleA, iscaleB, out var slxA, out var sl2A, out var slxB, out var sl2B);
            var acceptA = Vector512.GreaterThan(sl2A, Vector512<float>.Zero) & Vector512.GreaterThan(slxA * slxA, best * sl2A);
            iscale = Vector512.ConditionalSelect(acceptA, iscaleA, iscale);
            scale = Vector512.ConditionalSelect(acceptA, slxA / sl2A, scale);
            best = Vector512.ConditionalSelect(acceptA, scale * slxA, best);
            var acceptB = Vector512.GreaterThan(sl2B, Vector512<float>.Zero) & Vector512.GreaterThan(slxB * slxB, best * sl2B);
            iscale = Vector512.ConditionalSelect(acceptB, iscaleB, iscale);
            scale = Vector512.ConditionalSelect(acceptB, slxB / sl2B, scale);
            best = Vector512.ConditionalSelect(acceptB, scale * slxB, best);
        }
        Vector512.ConditionalSelect(zero, Vector512<float>.Zero, scale).CopyTo(scales);
        uint empty = (uint)zero.ExtractMostSignificantBits();
        Span<float> codes = stackalloc float[QK_K];
        var magic = Vector512.Create(12582912f);
        var lo = Vector512.Create((float)-nmax);
        var hi = Vector512.Create((float)(nmax - 1));
        for (int i = 0; i < 16; i++)
            QxCode(Vector512.LoadUnsafe(ref xs, (nuint)(16 * i)), iscale, lo, hi, magic).CopyTo(codes.Slice(16 * i, 16));
        SubBlockCodes(nmax, codes, empty, L);
    }

    // MakeQxQuants' code for one scale per lane: clamp(NearestInt(iscale·x), −nmax, nmax − 1).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> QxCode(Vector512<float> x, Vector512<float> iscale, Vector512<float> lo, Vector512<float> hi, Vector512<float> magic)
        => Vector512.MinNative(hi, Vector512.MaxNative(lo, (iscale * x + magic) - magic));

    // MakeQxQuants' sums for two scales per lane (a and b) on transposed sub-blocks, with l the code of QxCode: Σ (w·x)·l
    // and Σ (w·l)·l of each in value order.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void QxSums(ref float xs, ref float ws, int nmax, Vector512<float> iscaleA, Vector512<float> iscaleB,
        out Vector512<float> sumLxA, out Vector512<float> sumL2A, out Vector512<float> sumLxB, out Vector512<float> sumL2B)
    {
        var magic = Vector512.Create(12582912f);
        var lo = Vector512.Create((float)-nmax);
        var hi = Vector512.Create((float)(nmax - 1));
        Vector512<float> slxA = Vector512<float>.Zero, sl2A = Vector512<float>.Zero, slxB = Vector512<float>.Zero, sl2B = Vector512<float>.Zero;
        for (int i = 0; i < 16; i++)
        {
            var xi = Vector512.LoadUnsafe(ref xs, (nuint)(16 * i));
            var wi = Vector512.LoadUnsafe(ref ws, (nuint)(16 * i));
            var wx = wi * xi;
            var lA = QxCode(xi, iscaleA, lo, hi, magic);
            var lB = QxCode(xi, iscaleB, lo, hi, magic);
            slxA += wx * lA;
            sl2A += wi * lA * lA;
            slxB += wx * lB;
            sl2B += wi * lB * lB;
        }
        sumLxA = slxA;
        sumL2A = sl2A;
        sumLxB = slxB;
        sumL2B = sl2B;
    }

    /// <summary>RefineLanes' buffers: the super-block transposed (value i of sub-block j at [i * sub-blocks + j]), the
    /// sub-block screen's lanes (value i of every sub-block at [16 i …], twice over for 8 sub-blocks), the block's codes
    /// transposed and its sub-block errors (and a start's, while it is compared), and the super-block candidates' exact
    /// errors.</summary>
    private sealed class RefineBuffers
    {
        public readonly float[] X = new float[QK_K];
        public readonly float[] W = new float[QK_K];
        public readonly float[] XLanes = new float[2 * QK_K];
        public readonly float[] WLanes = new float[2 * QK_K];
        public float[] Q = new float[QK_K];
        public double[] SubErrors = new double[16];
        public float[] StartQ = new float[QK_K];
        public double[] StartSubErrors = new double[16];
        public readonly double[] CandidateErrors = new double[16 * (2 * RefineUlpRadius + 2)];

        /// <summary>True when Q and SubErrors hold the block to refine (BlockErrorLanes of the start kept).</summary>
        public bool HoldsBest;

        /// <summary>Transposes a super-block's values and, when given, its weights into X and W.</summary>
        public void Load(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w)
        {
            Transpose(x, f.SubBlocks, X);
            if (!w.IsEmpty)
                Transpose(w, f.SubBlocks, W);
            HoldsBest = false;
        }

        /// <summary>The start of the last BlockErrorLanes is kept: its codes and errors become Q and SubErrors.</summary>
        public void KeepStart()
        {
            (Q, StartQ) = (StartQ, Q);
            (SubErrors, StartSubErrors) = (StartSubErrors, SubErrors);
            HoldsBest = true;
        }
    }

    // BlockError's result for a block on the super-block that buffers hold (Load): each sub-block's error in its own lane
    // in SubBlockError's order and terms (LaneErrors), then their sum in sub-block order. The transposed codes and the
    // errors stay in StartQ and StartSubErrors (KeepStart).
    private static double BlockErrorLanes(KFormat f, ReadOnlySpan<float> w, KBlock b, RefineBuffers buffers)
    {
        TransposeCodes(b.Q, f.SubBlocks, buffers.StartQ);
        LaneErrors(f, buffers.X, w.IsEmpty ? default : buffers.W, Vector512.Create(F16ToF32(b.D)) * FactorLanes(f, b.Sc),
            Vector512.Create(F16ToF32(b.DMin)) * FactorLanes(f, b.M), buffers.StartQ, chooseCodes: false, buffers.StartSubErrors);
        return Sum(buffers.StartSubErrors.AsSpan(0, f.SubBlocks));
    }

    // Refine's vector form, with the same decisions. Sub-block scales (step 1) are screened in f32 lanes as described
    // above. The super-block scales (step 2) are screened by their f32 estimate against the total before the step, and the
    // others evaluated exactly in lanes: the super-block is transposed so that 16 lanes hold one position of 16 sub-blocks
    // (or two consecutive positions of 8), and each sub-block's error is summed in double in its own lane, in BestCodes'
    // order with BestCodes' terms; AllBestCodes' early exits are then replayed on those sums (the terms are non-negative,
    // so a partial sum reaches a bound exactly when the whole sum does). buffers hold the super-block (Load), and the
    // block's transposed codes and sub-block errors when HoldsBest.
    private static double RefineLanes(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, KBlock b, RefineBuffers buffers)
    {
        int n = f.SubSize, subBlocks = f.SubBlocks;
        Span<float> xt = buffers.X, qt = buffers.Q;
        Span<float> wt = w.IsEmpty ? default : buffers.W;
        ReadOnlySpan<float> xl = ScreenLanes(xt, subBlocks, buffers.XLanes);
        ReadOnlySpan<float> wl = w.IsEmpty ? default : ScreenLanes(wt, subBlocks, buffers.WLanes);
        Span<int> codes = stackalloc int[32];
        Span<double> subError = buffers.SubErrors;
        Span<ushort> candidates = stackalloc ushort[2 * RefineUlpRadius + 2];
        Span<float> estimates = stackalloc float[f.ScOffsetLanes.Length];
        Span<ulong> survivors = stackalloc ulong[16];
        Span<double> exact = buffers.CandidateErrors;
        float d = F16ToF32(b.D), dmin = F16ToF32(b.DMin);
        if (!buffers.HoldsBest)
        {
            TransposeCodes(b.Q, subBlocks, qt);
            LaneErrors(f, xt, wt, Vector512.Create(d) * FactorLanes(f, b.Sc), Vector512.Create(dmin) * FactorLanes(f, b.M), qt, chooseCodes: false, subError);
        }
        double total = Sum(subError[..subBlocks]);
        // True while subError holds the errors as the re-derivation below computes them for the current state (its
        // computation again would give the same numbers). Without importance BestCodes' terms, 1·(diff²), and
        // SubBlockError's, (1·diff)·diff, are the same numbers, added in the same order: the errors that accepted
        // candidates bring are the re-derived ones.
        bool derived = true;
        bool termsAgree = w.IsEmpty;
        for (int iteration = 0; iteration < RefineIterations; iteration++)
        {
            bool improved = false;
            d = F16ToF32(b.D);
            dmin = F16ToF32(b.DMin);

            // 1. sub-block scales and mins, screened in f32 lanes, the rest through BestCodes in the scalar loop's order.
            SubBlockCandidateErrors(f, xl, wl, d, dmin, b, subError, estimates, survivors);
            for (int j = 0; j < subBlocks; j++)
            {
                ReadOnlySpan<float> xs = x.Slice(j * n, n);
                ReadOnlySpan<float> ws = Sub(w, j, n);
                int sc0 = b.Sc[j], m0 = b.M[j];
                for (ulong kept = survivors[j]; kept != 0; kept &= kept - 1)
                {
                    int k = BitOperations.TrailingZeroCount(kept);
                    int sc = sc0 + f.ScOffsets[k], m = m0 + f.MOffsets[k];
                    if (sc < f.ScMin || sc > f.ScMax || m < 0 || m > f.MMax || sc == b.Sc[j] && m == b.M[j]
                        || ScreenedOut(estimates[k * subBlocks + j], subError[j]))
                        continue;
                    double e = BestCodesLanes(f, xs, ws, d * sc, dmin * m, codes, subError[j]);
                    if (e < subError[j])
                    {
                        subError[j] = e;
                        b.Sc[j] = sc;
                        b.M[j] = m;
                        codes[..n].CopyTo(b.Q.AsSpan(j * n, n));
                        for (int i = 0; i < n; i++)
                            qt[i * subBlocks + j] = codes[i];
                        improved = true;
                        derived = termsAgree;
                    }
                }
            }
            total = Sum(subError[..subBlocks]);

            // 2. the super-block scale d, then dmin: every candidate's sub-block errors exactly, then AllBestCodes' decisions.
            for (int which = 0; which < (f.MMax == 0 ? 1 : 2); which++)
            {
                int count = ScaleCandidates(f, x, w, b, which, candidates);
                // Sc and M stay as they are in this step: lane l holds sc[l mod sub-blocks] and m[l mod sub-blocks] as f32.
                var scLanes = FactorLanes(f, b.Sc);
                var mLanes = FactorLanes(f, b.M);
                var fixedLanes = which == 0 ? Vector512.Create(F16ToF32(b.DMin)) * mLanes : Vector512.Create(F16ToF32(b.D)) * scLanes;
                // A candidate whose f32 estimate is certainly not below the total before the step is rejected by
                // AllBestCodes (the total only falls during the step); the others are evaluated exactly.
                double threshold = ScreenThreshold(total);
                uint screened = 0;
                for (int c = 0; c < count; c++)
                {
                    var value = Vector512.Create(F16ToF32(candidates[c]));
                    var step = which == 0 ? value * scLanes : fixedLanes;
                    var offset = which == 1 ? value * mLanes : fixedLanes;
                    if (SuperBlockEstimate(f, xt, wt, step, offset) >= threshold)
                        screened |= 1u << c;
                    else
                        LaneErrors(f, xt, wt, step, offset, default, chooseCodes: true, exact.Slice(c * 16, 16));
                }
                bool accepted = false;
                for (int c = 0; c < count; c++)
                {
                    if ((screened >> c & 1) != 0)
                        continue;
                    double e = ReplayAllBestCodes(exact.Slice(c * 16, subBlocks), total);
                    if (e < total)
                    {
                        if (which == 0) b.D = candidates[c]; else b.DMin = candidates[c];
                        total = e;
                        accepted = improved = true;
                    }
                }
                float dd = F16ToF32(b.D), mm = F16ToF32(b.DMin);
                var stepLanes = Vector512.Create(dd) * scLanes;
                var offsetLanes = Vector512.Create(mm) * mLanes;
                if (accepted)
                {
                    // The accepted candidate's codes (AllBestCodes' for it), then the per-sub-block errors as Refine re-derives them.
                    LaneErrors(f, xt, wt, stepLanes, offsetLanes, qt, chooseCodes: true, subError);
                    UntransposeCodes(qt, subBlocks, b.Q);
                }
                if (accepted && !termsAgree || !derived)
                    LaneErrors(f, xt, wt, stepLanes, offsetLanes, qt, chooseCodes: false, subError);
                derived = true;
                total = Sum(subError[..subBlocks]);
            }
            if (!improved)
                break;
        }
        return total;
    }

    // The f32 estimate of a super-block's error for the lanes' steps and offsets (RefineLanes' layout), with BestCodes'
    // codes and terms, summed in f32 (each of 64 running sums adds 4 terms) and then in double: within 2⁻²⁰ of the exact
    // error, relatively, as the sub-block screen above. wt is empty without importance (every weight 1, and 1·y is y).
    private static double SuperBlockEstimate(KFormat f, ReadOnlySpan<float> xt, ReadOnlySpan<float> wt, Vector512<float> step, Vector512<float> offset)
    {
        var magic = Vector512.Create(12582912f);
        var hi = Vector512.Create((float)f.QMax);
        var lo = Vector512.Create((float)f.QMin);
        var inv = Vector512.ConditionalSelect(Vector512.Equals(step, Vector512<float>.Zero), Vector512<float>.Zero, Vector512<float>.One / step);
        bool weighted = !wt.IsEmpty, minTerm = f.MMax != 0;
        ref float xs = ref MemoryMarshal.GetReference(xt);
        ref float ws = ref MemoryMarshal.GetReference(wt);
        // Four running sums (an estimate's bound holds for any order of its additions).
        Vector512<float> e0 = Vector512<float>.Zero, e1 = Vector512<float>.Zero, e2 = Vector512<float>.Zero, e3 = Vector512<float>.Zero;
        for (int k = 0; k < QK_K; k += 64)
        {
            e0 += Term(ref xs, ref ws, k, step, offset, inv, lo, hi, magic, weighted, minTerm);
            e1 += Term(ref xs, ref ws, k + 16, step, offset, inv, lo, hi, magic, weighted, minTerm);
            e2 += Term(ref xs, ref ws, k + 32, step, offset, inv, lo, hi, magic, weighted, minTerm);
            e3 += Term(ref xs, ref ws, k + 48, step, offset, inv, lo, hi, magic, weighted, minTerm);
        }
        var (aLo, aHi) = Vector512.Widen(e0 + e1);
        var (bLo, bHi) = Vector512.Widen(e2 + e3);
        return Vector512.Sum(aLo + aHi + bLo + bHi);

        // w·(x − (step·q − offset))² in f32 with BestCodes' clamped nearest code q.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static Vector512<float> Term(ref float xs, ref float ws, int k, Vector512<float> step, Vector512<float> offset, Vector512<float> inv,
            Vector512<float> lo, Vector512<float> hi, Vector512<float> magic, bool weighted, bool minTerm)
        {
            var sq = SquaredDifference(Vector512.LoadUnsafe(ref xs, (nuint)k), step, offset, inv, lo, hi, magic, minTerm);
            return weighted ? Vector512.LoadUnsafe(ref ws, (nuint)k) * sq : sq;
        }
    }

    // LeastSquaresScale's half value without its sequential sums, when that is certain. The same terms (the same double
    // operations per value) are added in lanes, in another order; either order's sum of n terms is within γₙ·Σ|term| of
    // the exact one (γₙ = n·2⁻⁵³/(1 − n·2⁻⁵³), below 3·10⁻¹⁴ for 256 terms), so the scalar order's numerator and denominator
    // lie within 2·10⁻¹³·Σ|term| of the lanes'. Its quotient then lies between the quotients of that box's corners, and
    // rounding to double, f32 and half is monotone: when the lowest and highest corner round to the same finite half,
    // that is LeastSquaresScale's half (true, exists). A zero denominator is zero in every order (terms w·a² ≥ 0): no fit
    // (true, not exists). Otherwise false: the caller runs LeastSquaresScale.
    private static bool LeastSquaresHalfLanes(KFormat f, ReadOnlySpan<float> x, ReadOnlySpan<float> w, KBlock b, int which, out ushort half, out bool exists)
    {
        int n = f.SubSize;
        var d = Vector512.Create((double)F16ToF32(b.D));
        var dmin = Vector512.Create((double)F16ToF32(b.DMin));
        var one = Vector512.Create(1.0);
        ref float xs = ref MemoryMarshal.GetReference(x);
        ref float ws = ref MemoryMarshal.GetReference(w);
        ref int qs = ref MemoryMarshal.GetArrayDataReference(b.Q);
        Vector512<double> num = Vector512<double>.Zero, den = Vector512<double>.Zero, magnitude = Vector512<double>.Zero;
        for (int j = 0; j < f.SubBlocks; j++)
        {
            var sc = Vector512.Create((double)b.Sc[j]);
            var c = Vector512.Create((double)b.M[j]);
            for (int i = j * n; i < (j + 1) * n; i += 8)
            {
                var xi = Vector512.WidenLower(Vector256.LoadUnsafe(ref xs, (nuint)i).ToVector512Unsafe());
                var wi = w.IsEmpty ? one : Vector512.WidenLower(Vector256.LoadUnsafe(ref ws, (nuint)i).ToVector512Unsafe());
                var a = sc * Vector512.ConvertToDouble(Vector512.WidenLower(Vector256.LoadUnsafe(ref qs, (nuint)i).ToVector512Unsafe()));
                Vector512<double> numTerm, denTerm;
                if (which == 0)
                {
                    numTerm = wi * a * (xi + dmin * c);
                    denTerm = wi * a * a;
                }
                else
                {
                    numTerm = wi * c * (d * a - xi);
                    denTerm = wi * c * c;
                }
                num += numTerm;
                den += denTerm;
                magnitude += Vector512.Abs(numTerm);
            }
        }
        half = 0;
        double numerator = Vector512.Sum(num), denominator = Vector512.Sum(den), slack = 2e-13 * Vector512.Sum(magnitude);
        exists = denominator > 0;
        if (!exists)
            return true;
        double denLo = denominator * (1 - 2e-13), denHi = denominator * (1 + 2e-13);
        double numLo = numerator - slack, numHi = numerator + slack;
        double lowest = Math.Min(numLo / denLo, numLo / denHi), highest = Math.Max(numHi / denLo, numHi / denHi);
        float low = (float)lowest, high = (float)highest;
        if (!float.IsFinite(low) || !float.IsFinite(high) || F32ToF16(low) != F32ToF16(high))
            return false;
        half = F32ToF16(low);
        return true;
    }

    // AllBestCodes' result from the full sub-block errors: +∞ where it stops early (a sub-block's error reaches what is
    // left of the bound, or the running total reaches the bound), else the total.
    private static double ReplayAllBestCodes(ReadOnlySpan<double> subErrors, double bound)
    {
        double total = 0;
        foreach (double e in subErrors)
        {
            if (e >= bound - total)
                return double.PositiveInfinity;
            total += e;
            if (total >= bound)
                return double.PositiveInfinity;
        }
        return total;
    }

    // The transposed super-block as the sub-block screen's lanes: itself for 16 sub-blocks; for 8, each position's 8
    // values twice (lanes[16 i + l] = transposed[8 i + l mod 8]), written to buffer.
    private static ReadOnlySpan<float> ScreenLanes(ReadOnlySpan<float> transposed, int subBlocks, Span<float> buffer)
    {
        if (subBlocks == 16)
            return transposed[..QK_K];
        for (int i = 0; i < QK_K / 8; i++)
        {
            transposed.Slice(8 * i, 8).CopyTo(buffer.Slice(16 * i, 8));
            transposed.Slice(8 * i, 8).CopyTo(buffer.Slice(16 * i + 8, 8));
        }
        return buffer;
    }

    // transposed[i * subBlocks + j] = values[j * n + i] for a super-block.
    private static void Transpose(ReadOnlySpan<float> values, int subBlocks, Span<float> transposed)
        => Transpose32(ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(values[..QK_K])), subBlocks,
            ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(transposed[..QK_K])));

    // destination[i * rows + j] = source[j * (256 / rows) + i] for 256 values of 32 bits (rows 8, 16 or 32; both spans
    // checked by the callers' slices). 16 × 16 in lanes: four rounds, each swapping the off-diagonal s × s blocks of every
    // 2s × 2s block (s = 8, 4, 2, 1), exchange element (r, c) with (r + s, c − s) wherever bit s of c is set and of r is not.
    private static void Transpose32(ref uint source, int rows, ref uint destination)
    {
        if (rows == 16)
        {
            var m0 = Vector512.LoadUnsafe(ref source, 0);
            var m1 = Vector512.LoadUnsafe(ref source, 16);
            var m2 = Vector512.LoadUnsafe(ref source, 32);
            var m3 = Vector512.LoadUnsafe(ref source, 48);
            var m4 = Vector512.LoadUnsafe(ref source, 64);
            var m5 = Vector512.LoadUnsafe(ref source, 80);
            var m6 = Vector512.LoadUnsafe(ref source, 96);
            var m7 = Vector512.LoadUnsafe(ref source, 112);
            var m8 = Vector512.LoadUnsafe(ref source, 128);
            var m9 = Vector512.LoadUnsafe(ref source, 144);
            var m10 = Vector512.LoadUnsafe(ref source, 160);
            var m11 = Vector512.LoadUnsafe(ref source, 176);
            var m12 = Vector512.LoadUnsafe(ref source, 192);
            var m13 = Vector512.LoadUnsafe(ref source, 208);
            var m14 = Vector512.LoadUnsafe(ref source, 224);
            var m15 = Vector512.LoadUnsafe(ref source, 240);
            var lane = Vector512.Create(0u, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            var p8 = lane ^ Vector512.Create(8u);
            var h8 = Vector512.Equals(lane & Vector512.Create(8u), Vector512.Create(8u));
            (m0, m8) = SwapBlocks(m0, m8, p8, h8);
            (m1, m9) = SwapBlocks(m1, m9, p8, h8);
            (m2, m10) = SwapBlocks(m2, m10, p8, h8);
            (m3, m11) = SwapBlocks(m3, m11, p8, h8);
            (m4, m12) = SwapBlocks(m4, m12, p8, h8);
            (m5, m13) = SwapBlocks(m5, m13, p8, h8);
            (m6, m14) = SwapBlocks(m6, m14, p8, h8);
            (m7, m15) = SwapBlocks(m7, m15, p8, h8);
            var p4 = lane ^ Vector512.Create(4u);
            var h4 = Vector512.Equals(lane & Vector512.Create(4u), Vector512.Create(4u));
            (m0, m4) = SwapBlocks(m0, m4, p4, h4);
            (m1, m5) = SwapBlocks(m1, m5, p4, h4);
            (m2, m6) = SwapBlocks(m2, m6, p4, h4);
            (m3, m7) = SwapBlocks(m3, m7, p4, h4);
            (m8, m12) = SwapBlocks(m8, m12, p4, h4);
            (m9, m13) = SwapBlocks(m9, m13, p4, h4);
            (m10, m14) = SwapBlocks(m10, m14, p4, h4);
            (m11, m15) = SwapBlocks(m11, m15, p4, h4);
            var p2 = lane ^ Vector512.Create(2u);
            var h2 = Vector512.Equals(lane & Vector512.Create(2u), Vector512.Create(2u));
            (m0, m2) = SwapBlocks(m0, m2, p2, h2);
            (m1, m3) = SwapBlocks(m1, m3, p2, h2);
            (m4, m6) = SwapBlocks(m4, m6, p2, h2);
            (m5, m7) = SwapBlocks(m5, m7, p2, h2);
            (m8, m10) = SwapBlocks(m8, m10, p2, h2);
            (m9, m11) = SwapBlocks(m9, m11, p2, h2);
            (m12, m14) = SwapBlocks(m12, m14, p2, h2);
            (m13, m15) = SwapBlocks(m13, m15, p2, h2);
            var p1 = lane ^ Vector512.Create(1u);
            var h1 = Vector512.Equals(lane & Vector512.Create(1u), Vector512.Create(1u));
            (m0, m1) = SwapBlocks(m0, m1, p1, h1);
            (m2, m3) = SwapBlocks(m2, m3, p1, h1);
            (m4, m5) = SwapBlocks(m4, m5, p1, h1);
            (m6, m7) = SwapBlocks(m6, m7, p1, h1);
            (m8, m9) = SwapBlocks(m8, m9, p1, h1);
            (m10, m11) = SwapBlocks(m10, m11, p1, h1);
            (m12, m13) = SwapBlocks(m12, m13, p1, h1);
            (m14, m15) = SwapBlocks(m14, m15, p1, h1);
            m0.StoreUnsafe(ref destination, 0);
            m1.StoreUnsafe(ref destination, 16);
            m2.StoreUnsafe(ref destination, 32);
            m3.StoreUnsafe(ref destination, 48);
            m4.StoreUnsafe(ref destination, 64);
            m5.StoreUnsafe(ref destination, 80);
            m6.StoreUnsafe(ref destination, 96);
            m7.StoreUnsafe(ref destination, 112);
            m8.StoreUnsafe(ref destination, 128);
            m9.StoreUnsafe(ref destination, 144);
            m10.StoreUnsafe(ref destination, 160);
            m11.StoreUnsafe(ref destination, 176);
            m12.StoreUnsafe(ref destination, 192);
            m13.StoreUnsafe(ref destination, 208);
            m14.StoreUnsafe(ref destination, 224);
            m15.StoreUnsafe(ref destination, 240);
            return;
        }
        int columns = QK_K / rows;
        for (int j = 0; j < rows; j++)
        {
            ref uint row = ref Unsafe.Add(ref source, j * columns);
            ref uint column = ref Unsafe.Add(ref destination, j);
            for (int i = 0; i < columns; i += 4)
            {
                Unsafe.Add(ref column, i * rows) = Unsafe.Add(ref row, i);
                Unsafe.Add(ref column, (i + 1) * rows) = Unsafe.Add(ref row, i + 1);
                Unsafe.Add(ref column, (i + 2) * rows) = Unsafe.Add(ref row, i + 2);
                Unsafe.Add(ref column, (i + 3) * rows) = Unsafe.Add(ref row, i + 3);
            }
        }
    }

    // Lane l holds factors[l mod sub-blocks] as f32 (a lane times a scale is the decoder's f32 product scale · factor).
    private static Vector512<float> FactorLanes(KFormat f, int[] factors)
    {
        var low = Vector256.Create(factors.AsSpan(0, 8));
        var high = f.SubBlocks == 8 ? low : Vector256.Create(factors.AsSpan(8, 8));
        return Vector512.ConvertToSingle(Vector512.Create(low, high));
    }

    // transposed[i * subBlocks + j] = codes[j * n + i] as f32 for a super-block's codes (converted in lanes, then moved).
    [SkipLocalsInit] // every element of the buffer is written before it is read
    private static void TransposeCodes(int[] codes, int subBlocks, Span<float> transposed)
    {
        Span<float> converted = stackalloc float[QK_K];
        for (int k = 0; k < QK_K; k += 16)
            Vector512.ConvertToSingle(Vector512.Create(codes.AsSpan(k, 16))).CopyTo(converted.Slice(k, 16));
        Transpose(converted, subBlocks, transposed);
    }

    // Rows a and b of Transpose32's round: a takes b's lanes that are partner of its lanes in high, b takes a's elsewhere.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<uint> A, Vector512<uint> B) SwapBlocks(Vector512<uint> a, Vector512<uint> b, Vector512<uint> partner, Vector512<uint> high)
        => (Vector512.ConditionalSelect(high, Vector512.Shuffle(b, partner), a), Vector512.ConditionalSelect(high, b, Vector512.Shuffle(a, partner)));

    // TransposeCodes' inverse: codes[j * n + i] = transposed[i * subBlocks + j] (whole numbers) as integers.
    [SkipLocalsInit] // every element of the buffer is written before it is read
    private static void UntransposeCodes(ReadOnlySpan<float> transposed, int subBlocks, int[] codes)
    {
        Span<int> converted = stackalloc int[QK_K];
        for (int k = 0; k < QK_K; k += 16)
            Vector512.ConvertToInt32(Vector512.Create(transposed.Slice(k, 16))).CopyTo(converted.Slice(k, 16));
        Transpose32(ref Unsafe.As<int, uint>(ref MemoryMarshal.GetReference(converted)), QK_K / subBlocks,
            ref Unsafe.As<int, uint>(ref MemoryMarshal.GetArrayDataReference(codes)));
    }

    // errors[j] = Σᵢ wᵢ (xᵢ − (step_j·qᵢ − offset_j))² of each sub-block j in double, summed in the scalar order, on a
    // transposed super-block. chooseCodes: q is the nearest code and the terms are BestCodes' (w·(diff²)); the codes are
    // written to codes when it is not empty. Otherwise q is read from codes and the terms are SubBlockError's ((w·diff)·diff).
    private static void LaneErrors(KFormat f, ReadOnlySpan<float> xt, ReadOnlySpan<float> wt, Vector512<float> step, Vector512<float> offset,
        Span<float> codes, bool chooseCodes, Span<double> errors)
    {
        var magic = Vector512.Create(12582912f);
        var hi = Vector512.Create((float)f.QMax);
        var lo = Vector512.Create((float)f.QMin);
        var inv = Vector512.ConditionalSelect(Vector512.Equals(step, Vector512<float>.Zero), Vector512<float>.Zero, Vector512<float>.One / step);
        bool weighted = !wt.IsEmpty, minTerm = f.MMax != 0;
        bool paired = f.SubBlocks == 8;
        Vector512<double> e0 = Vector512<double>.Zero, e1 = Vector512<double>.Zero;
        for (int k = 0; k < QK_K; k += 16)
        {
            var xv = Vector512.Create(xt.Slice(k, 16));
            Vector512<float> q;
            if (chooseCodes)
            {
                // Without a min term the offsets are +0 (see SquaredDifference).
                var t = (minTerm ? xv + offset : xv) * inv;
                q = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(t, hi), hi,
                    Vector512.ConditionalSelect(Vector512.LessThanOrEqual(t, lo), lo, (t + magic) - magic));
                if (!codes.IsEmpty)
                    q.CopyTo(codes.Slice(k, 16));
            }
            else
            {
                q = Vector512.Create((ReadOnlySpan<float>)codes.Slice(k, 16));
            }
            var v = minTerm ? step * q - offset : step * q;
            var (xLo, xHi) = Vector512.Widen(xv);
            var (vLo, vHi) = Vector512.Widen(v);
            var diffLo = xLo - vLo;
            var diffHi = xHi - vHi;
            Vector512<double> termLo, termHi;
            if (!weighted)
            {
                termLo = diffLo * diffLo;
                termHi = diffHi * diffHi;
            }
            else
            {
                var (wLo, wHi) = Vector512.Widen(Vector512.Create(wt.Slice(k, 16)));
                termLo = chooseCodes ? wLo * (diffLo * diffLo) : wLo * diffLo * diffLo;
                termHi = chooseCodes ? wHi * (diffHi * diffHi) : wHi * diffHi * diffHi;
            }
            if (paired)
            {
                // Lanes 0-7: position k/8 of sub-blocks 0-7, lanes 8-15: the next position; one running sum per sub-block.
                e0 += termLo;
                e0 += termHi;
            }
            else
            {
                e0 += termLo;
                e1 += termHi;
            }
        }
        e0.CopyTo(errors);
        if (!paired)
            e1.CopyTo(errors[8..]);
    }
}
