using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

/// <summary>
/// Scaled dot-product attention of one query head over the cached positions of its key/value head:
/// <c>output = Σ_p softmax_p(scale · query · keys[p]) · values[p]</c>. The scalar version is the reference; the AVX2
/// version (the weighted sum of the values held in registers across positions) is tested against it.
/// </summary>
internal static unsafe partial class Attention
{
    private static bool UseAvx2 { get; } = VecDot.Best >= SimdLevel.Avx2 && Avx2.IsSupported && Fma.IsSupported;

    /// <summary>
    /// <paramref name="query"/> is [headDim]; <paramref name="keys"/> and <paramref name="values"/> point at position 0
    /// of the head, one position every <paramref name="stride"/> floats; <paramref name="scores"/> receives the
    /// <paramref name="positions"/> attention weights; <paramref name="output"/> is [headDim]. Uses the best available
    /// instruction set.
    /// </summary>
    public static void Head(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output)
    {
        if (UseAvx2 && headDim % 8 == 0)
            HeadAvx2(query, keys, values, stride, positions, headDim, scale, scores, output);
        else
            HeadScalar(query, keys, values, stride, positions, headDim, scale, scores, output);
    }

    /// <summary>Reference: scores in order of position, softmax with the maximum subtracted, then the weighted sum of
    /// the values in order of position.</summary>
    public static void HeadScalar(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output)
    {
        float max = float.NegativeInfinity;
        for (int p = 0; p < positions; p++)
        {
            float* k = keys + (long)p * stride;
            float sum = 0;
            for (int d = 0; d < headDim; d++)
                sum += query[d] * k[d];
            scores[p] = sum * scale;
            max = MathF.Max(max, scores[p]);
        }
        float total = 0;
        for (int p = 0; p < positions; p++)
        {
            scores[p] = MathF.Exp(scores[p] - max);
            total += scores[p];
        }
        for (int p = 0; p < positions; p++)
            scores[p] /= total;
        for (int d = 0; d < headDim; d++)
            output[d] = 0;
        for (int p = 0; p < positions; p++)
        {
            float* v = values + (long)p * stride;
            for (int d = 0; d < headDim; d++)
                output[d] += scores[p] * v[d];
        }
    }

    /// <summary>
    /// <see cref="HeadScalar"/> with soft-capped scores (Gemma 2): each score s = scale · query · keys[p] becomes
    /// cap · tanh(s · (1/cap)) before the softmax, computed in the order of ggml's graph (multiply by the reciprocal,
    /// tanh, multiply by the cap). One scalar version, the reference.
    /// </summary>
    public static void HeadSoftCapped(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float cap, float* scores, float* output)
    {
        float inverse = 1f / cap;
        float max = float.NegativeInfinity;
        for (int p = 0; p < positions; p++)
        {
            float* k = keys + (long)p * stride;
            float sum = 0;
            for (int d = 0; d < headDim; d++)
                sum += query[d] * k[d];
            scores[p] = MathF.Tanh(sum * scale * inverse) * cap;
            max = MathF.Max(max, scores[p]);
        }
        float total = 0;
        for (int p = 0; p < positions; p++)
        {
            scores[p] = MathF.Exp(scores[p] - max);
            total += scores[p];
        }
        for (int p = 0; p < positions; p++)
            scores[p] /= total;
        for (int d = 0; d < headDim; d++)
            output[d] = 0;
        for (int p = 0; p < positions; p++)
        {
            float* v = values + (long)p * stride;
            for (int d = 0; d < headDim; d++)
                output[d] += scores[p] * v[d];
        }
    }
}
