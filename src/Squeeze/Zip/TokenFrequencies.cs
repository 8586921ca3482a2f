using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using Squeeze.Kernels;

namespace Squeeze.Zip;

/// <summary>
/// Turns a row of logits into the integer frequencies the range coder codes with: symbols 0 … vocab − 1 are the tokens,
/// symbol vocab is the escape (a byte no token stands for). Token i gets <c>1 + ⌊e_i · (2^28 / Σ e)⌋</c> with
/// <c>e_i = exp(logit_i − max)</c> from <see cref="DeterministicMath"/> and Σ in its fixed order, so every token stays
/// codable and the frequencies have the same bits wherever they are computed; the escape gets 1. The result is
/// cumulative: <c>cumulative[s]</c> is where symbol s starts, <c>cumulative[vocab + 1]</c> the total (below 2^29).
/// </summary>
public static unsafe class TokenFrequencies
{
    /// <summary>Frequency units shared out in proportion to the probabilities (on top of the floor of 1 per symbol).</summary>
    public const int Budget = 1 << 28;

    /// <summary>Fills <paramref name="cumulative"/> ([vocab + 2]) from <paramref name="logits"/> ([vocab]); <paramref name="scratch"/>
    /// holds at least vocab floats. Returns the log of the softmax's denominator, <c>max + ln Σ e</c>, so that a
    /// token's natural log-probability is <c>logit − </c> that.</summary>
    public static double Compute(ReadOnlySpan<float> logits, Span<float> scratch, Span<uint> cumulative)
    {
        int vocab = logits.Length;
        if (vocab < 1 || scratch.Length < vocab || cumulative.Length != vocab + 2)
            throw new ArgumentException($"{vocab} logits need {vocab} floats of scratch and {vocab + 2} cumulative frequencies");
        // The maximum of a set does not depend on the order it is searched in (IEEE maximum: −0 < +0, NaN wins), so the
        // vectorized search gives the same shift everywhere.
        float max = TensorPrimitives.Max(logits);
        var e = scratch[..vocab];
        DeterministicMath.ExpShifted(logits, max, e);
        float sum = DeterministicMath.Sum(e);
        float scale = Budget / sum;

        // frequencies into cumulative[1 ..], then prefix sums in place
        int i = 0;
        fixed (float* pe = e)
        fixed (uint* pc = cumulative)
        {
            if (DeterministicMath.UseVector)
            {
                var s = Vector256.Create(scale);
                var one = Vector256.Create(1);
                for (; i + 8 <= vocab; i += 8)
                    (Vector256.ConvertToInt32(Vector256.Load(pe + i) * s) + one).AsUInt32().Store(pc + 1 + i);
            }
            for (; i < vocab; i++)
                pc[1 + i] = (uint)((int)(pe[i] * scale) + 1);
        }
        cumulative[0] = 0;
        cumulative[vocab + 1] = 1; // the escape
        uint total = 0;
        for (int s = 1; s < cumulative.Length; s++)
        {
            total += cumulative[s];
            cumulative[s] = total;
        }
        return max + Math.Log(sum);
    }

    /// <summary>The symbol s with cumulative[s] ≤ <paramref name="target"/> &lt; cumulative[s + 1].</summary>
    public static int Find(ReadOnlySpan<uint> cumulative, uint target)
    {
        int lo = 0, hi = cumulative.Length - 2; // the answer lies in [lo, hi]
        while (lo < hi)
        {
            int mid = (lo + hi + 1) >> 1;
            if (cumulative[mid] <= target)
                lo = mid;
            else
                hi = mid - 1;
        }
        return lo;
    }
}
