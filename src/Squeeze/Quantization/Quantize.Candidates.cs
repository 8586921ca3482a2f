using System.Runtime.Intrinsics;

namespace Squeeze.Quantization;

// The refinement's inner loop: the error of many candidate (step, offset) pairs on one sub-block, codes re-chosen as
// the nearest representable value. The scalar definition is BestCodes (one candidate, sequential double sum). The
// vector version puts one candidate in each lane and walks the values in order, so every lane adds the same terms in the
// same order as BestCodes: the sums are bit-identical, not merely close. (BestCodes stops once its sum reaches its
// bound; the terms are non-negative, so its partial sums never decrease and "stopped" is the same as "full sum ≥ bound":
// callers compare the full sums with the bound instead.)
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

    // errors[c] = Σᵢ w[i] · (x[i] − (step[c]·q − offset[c]))², q = nearest code in [qMin, qMax] (BestCodes without its
    // bound), for c < count. step, offset and errors are padded by the caller to a multiple of 8.
    private static void CandidateErrors(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int qMin, int qMax,
        ReadOnlySpan<float> step, ReadOnlySpan<float> offset, int count, Span<double> errors)
    {
        var magic = Vector256.Create(12582912f);
        var hi = Vector256.Create((float)qMax);
        var lo = Vector256.Create((float)qMin);
        for (int c = 0; c < count; c += 8)
        {
            var s = Vector256.Create(step.Slice(c, 8));
            var o = Vector256.Create(offset.Slice(c, 8));
            var inv = Vector256.ConditionalSelect(Vector256.Equals(s, Vector256<float>.Zero), Vector256<float>.Zero, Vector256<float>.One / s);
            var e0 = Vector256<double>.Zero;
            var e1 = Vector256<double>.Zero;
            for (int i = 0; i < x.Length; i++)
            {
                var xi = Vector256.Create(x[i]);
                var t = (xi + o) * inv;
                var r = (t + magic) - magic;
                var q = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(t, hi), hi,
                    Vector256.ConditionalSelect(Vector256.LessThanOrEqual(t, lo), lo, r));
                var v = s * q - o;
                var xd = Vector256.Create((double)x[i]);
                var d0 = xd - Vector256.WidenLower(v);
                var d1 = xd - Vector256.WidenUpper(v);
                if (w.IsEmpty)
                {
                    e0 += d0 * d0;
                    e1 += d1 * d1;
                }
                else
                {
                    var wi = Vector256.Create((double)w[i]);
                    e0 += wi * (d0 * d0);
                    e1 += wi * (d1 * d1);
                }
            }
            e0.CopyTo(errors.Slice(c, 4));
            e1.CopyTo(errors.Slice(c + 4, 4));
        }
    }
}
