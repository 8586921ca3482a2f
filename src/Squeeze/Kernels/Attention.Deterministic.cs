using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

internal static unsafe partial class Attention
{
    /// <summary>
    /// The deterministic mode's attention head: the same bits at every SIMD level on every machine. Scores by
    /// <see cref="DeterministicMath.Dot"/>, softmax by <see cref="DeterministicMath.ExpShifted(ReadOnlySpan{float}, float, Span{float})"/> over the maximum and
    /// <see cref="DeterministicMath.Sum"/>, then <c>output[d] += score[p] · values[p, d]</c> in order of position (each
    /// output element on its own, so the vector version over d computes what the scalar one does).
    /// </summary>
    public static void HeadDeterministic(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output)
    {
        DeterministicMath.DotRows(query, keys, stride, positions, headDim, scores);
        float max = float.NegativeInfinity;
        for (int p = 0; p < positions; p++)
        {
            scores[p] *= scale;
            max = MathF.Max(max, scores[p]);
        }
        var s = new Span<float>(scores, positions);
        DeterministicMath.ExpShifted(s, max, s);
        float total = DeterministicMath.Sum(s);
        for (int p = 0; p < positions; p++)
            scores[p] /= total;
        int d0 = 0;
        if (DeterministicMath.UseVector512)
        {
            // the same per-element products and sums, 64 or 48 (then 16) outputs per pass in 512-bit registers
            for (; d0 + 64 <= headDim; d0 += 64)
            {
                Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
                for (int p = 0; p < positions; p++)
                {
                    float* v = values + (long)p * stride + d0;
                    var weight = Vector512.Create(scores[p]);
                    o0 += weight * Vector512.Load(v);
                    o1 += weight * Vector512.Load(v + 16);
                    o2 += weight * Vector512.Load(v + 32);
                    o3 += weight * Vector512.Load(v + 48);
                }
                o0.Store(output + d0);
                o1.Store(output + d0 + 16);
                o2.Store(output + d0 + 32);
                o3.Store(output + d0 + 48);
            }
            if (d0 + 48 <= headDim)
            {
                Vector512<float> o0 = default, o1 = default, o2 = default;
                for (int p = 0; p < positions; p++)
                {
                    float* v = values + (long)p * stride + d0;
                    var weight = Vector512.Create(scores[p]);
                    o0 += weight * Vector512.Load(v);
                    o1 += weight * Vector512.Load(v + 16);
                    o2 += weight * Vector512.Load(v + 32);
                }
                o0.Store(output + d0);
                o1.Store(output + d0 + 16);
                o2.Store(output + d0 + 32);
                d0 += 48;
            }
            for (; d0 + 16 <= headDim; d0 += 16)
            {
                Vector512<float> o = default;
                for (int p = 0; p < positions; p++)
                    o += Vector512.Create(scores[p]) * Vector512.Load(values + (long)p * stride + d0);
                o.Store(output + d0);
            }
        }
        if (DeterministicMath.UseVector)
        {
            // output[d] = Σ_p score[p] · values[p, d] in order of p, 32 outputs (then 8) held in registers across positions
            for (; d0 + 32 <= headDim; d0 += 32)
            {
                Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
                for (int p = 0; p < positions; p++)
                {
                    float* v = values + (long)p * stride + d0;
                    var weight = Vector256.Create(scores[p]);
                    o0 += weight * Vector256.Load(v);
                    o1 += weight * Vector256.Load(v + 8);
                    o2 += weight * Vector256.Load(v + 16);
                    o3 += weight * Vector256.Load(v + 24);
                }
                o0.Store(output + d0);
                o1.Store(output + d0 + 8);
                o2.Store(output + d0 + 16);
                o3.Store(output + d0 + 24);
            }
            for (; d0 + 8 <= headDim; d0 += 8)
            {
                Vector256<float> o = default;
                for (int p = 0; p < positions; p++)
                    o += Vector256.Create(scores[p]) * Vector256.Load(values + (long)p * stride + d0);
                o.Store(output + d0);
            }
        }
        for (int d = d0; d < headDim; d++)
        {
            float o = 0;
            for (int p = 0; p < positions; p++)
                o += scores[p] * values[(long)p * stride + d];
            output[d] = o;
        }
    }
}
