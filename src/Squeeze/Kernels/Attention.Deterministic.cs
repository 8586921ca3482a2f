using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

internal static unsafe partial class Attention
{
    /// <summary>
    /// The deterministic mode's attention head: the same bits at every SIMD level on every machine. Scores by
    /// <see cref="DeterministicMath.Dot"/>, softmax by <see cref="DeterministicMath.ExpShifted"/> over the maximum and
    /// <see cref="DeterministicMath.Sum"/>, then <c>output[d] += score[p] · values[p, d]</c> in order of position (each
    /// output element on its own, so the vector version over d computes what the scalar one does).
    /// </summary>
    public static void HeadDeterministic(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output)
    {
        float max = float.NegativeInfinity;
        for (int p = 0; p < positions; p++)
        {
            scores[p] = DeterministicMath.Dot(query, keys + (long)p * stride, headDim) * scale;
            max = MathF.Max(max, scores[p]);
        }
        var s = new Span<float>(scores, positions);
        DeterministicMath.ExpShifted(s, max, s);
        float total = DeterministicMath.Sum(s);
        for (int p = 0; p < positions; p++)
            scores[p] /= total;
        for (int d = 0; d < headDim; d++)
            output[d] = 0;
        int vectorEnd = DeterministicMath.UseVector ? headDim / 8 * 8 : 0;
        for (int p = 0; p < positions; p++)
        {
            float* v = values + (long)p * stride;
            var weight = Vector256.Create(scores[p]);
            int d = 0;
            for (; d < vectorEnd; d += 8)
                (Vector256.Load(output + d) + weight * Vector256.Load(v + d)).Store(output + d);
            for (; d < headDim; d++)
                output[d] += scores[p] * v[d];
        }
    }
}
