using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Kernels;

/// <summary>
/// The two halves of attention over a cache read in tiles (compressed caches decode a small tile of keys or values,
/// score or accumulate it, and move on): scores of a tile of keys, then after the softmax, the weighted sum of a tile
/// of values. Vectorized by <see cref="TensorPrimitives"/>; the whole computation is tested against
/// <see cref="Attention.HeadScalar"/> over the decoded cache.
/// </summary>
internal static unsafe class CacheAttention
{
    /// <summary><c>scores[i] = scale · query · rows[i]</c> for i in [0, count); row i starts at <c>rows + i·stride</c>.</summary>
    public static void Score(float* query, float* rows, int stride, int count, int headDim, float scale, float* scores)
    {
        var q = new ReadOnlySpan<float>(query, headDim);
        for (int i = 0; i < count; i++)
            scores[i] = TensorPrimitives.Dot(q, new ReadOnlySpan<float>(rows + (long)i * stride, headDim)) * scale;
    }

    /// <summary><c>output += Σ_i weights[i] · rows[i]</c> for i in [0, count), in order of i.</summary>
    public static void Accumulate(float* weights, float* rows, int stride, int count, int headDim, float* output)
    {
        var o = new Span<float>(output, headDim);
        for (int i = 0; i < count; i++)
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(rows + (long)i * stride, headDim), weights[i], o, o);
    }

    /// <summary>In place: scores = cap · tanh(scores / cap), Gemma 2's soft-capping of attention scores (as
    /// <see cref="Attention.HeadSoftCapped"/> computes it).</summary>
    public static void Cap(float* scores, int count, float cap)
    {
        float inverse = 1f / cap;
        for (int p = 0; p < count; p++)
            scores[p] = MathF.Tanh(scores[p] * inverse) * cap;
    }

    /// <summary>In place softmax of <paramref name="count"/> scores, the maximum subtracted first (large scores do not overflow).</summary>
    public static void Softmax(float* scores, int count)
    {
        if (count == 0)
            return;
        var s = new Span<float>(scores, count);
        TensorPrimitives.Subtract(s, TensorPrimitives.Max(s), s);
        TensorPrimitives.Exp(s, s);
        TensorPrimitives.Divide(s, TensorPrimitives.Sum(s), s);
    }
}
