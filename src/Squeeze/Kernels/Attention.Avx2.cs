using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Kernels;

internal static unsafe partial class Attention
{
    /// <summary>
    /// Vector version of <see cref="HeadScalar"/> for a head size that is a multiple of 8. It computes exactly what the
    /// forward pass computed with one <see cref="TensorPrimitives"/> call per position (scores by
    /// <see cref="TensorPrimitives.Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/>, softmax by
    /// <see cref="TensorPrimitives.SoftMax(ReadOnlySpan{float}, Span{float})"/> of the scores less their maximum, then <c>output += score · value</c>
    /// position by position, multiply and add rounded separately), so quantized models keep their perplexity to the last
    /// digit: the weighted sum holds up to 64 outputs in registers across every position instead of one call per position.
    /// </summary>
    public static void HeadAvx2(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output)
    {
        if (Vector512.IsHardwareAccelerated && headDim % 16 == 0 && headDim <= MaxInlineDot)
        {
            InlineDotScores(query, keys, stride, positions, headDim, scale, scores);
        }
        else
        {
            var q = new ReadOnlySpan<float>(query, headDim);
            for (int p = 0; p < positions; p++)
                scores[p] = TensorPrimitives.Dot(q, new ReadOnlySpan<float>(keys + (long)p * stride, headDim)) * scale;
        }
        var s = new Span<float>(scores, positions);
        // TensorPrimitives.SoftMax does not subtract the maximum (a score above ~88 would overflow to NaN); shifting by
        // it first leaves the softmax unchanged mathematically.
        TensorPrimitives.Subtract(s, TensorPrimitives.Max(s), s);
        TensorPrimitives.SoftMax(s, s);

        int offset = 0;
        while (offset < headDim)
        {
            int width = Math.Min(64, headDim - offset);
            switch (width / 8)
            {
                case 8: WeightedSum<Eight>(scores, values + offset, stride, positions, output + offset); break;
                case 7:
                case 6: WeightedSum<Six>(scores, values + offset, stride, positions, output + offset); width = 48; break;
                case 5:
                case 4: WeightedSum<Four>(scores, values + offset, stride, positions, output + offset); width = 32; break;
                case 3:
                case 2: WeightedSum<Two>(scores, values + offset, stride, positions, output + offset); width = 16; break;
                default: WeightedSum<One>(scores, values + offset, stride, positions, output + offset); width = 8; break;
            }
            offset += width;
        }
    }

    // Up to this many values TensorPrimitives.Dot's 512-bit path adds whole vectors one by one (no main loop).
    private const int MaxInlineDot = 128;

    /// <summary>
    /// scores[p] = TensorPrimitives.Dot(query, keys[p]) · scale, bit for bit, without a call per position, for a head size
    /// that is a multiple of 16 and at most 128 on a machine where Vector512 is accelerated: there Dot multiplies 16 values
    /// at a time, adds the products vector by vector to a zero vector in order (its masked tail adds one more zero, a no-op:
    /// a sum started at +0 is never −0), and ends with Vector512.Sum.
    /// </summary>
    private static void InlineDotScores(float* query, float* keys, int stride, int positions, int headDim, float scale, float* scores)
    {
        int vectors = headDim / 16;
        for (int p = 0; p < positions; p++)
        {
            float* k = keys + (long)p * stride;
            Vector512<float> sum = Vector512<float>.Zero;
            for (int i = 0; i < vectors; i++)
                sum += Vector512.Load(query + 16 * i) * Vector512.Load(k + 16 * i);
            scores[p] = Vector512.Sum(sum) * scale;
        }
    }

    private interface IWidth
    {
        static abstract int Vectors { get; }
    }

    private readonly struct One : IWidth { public static int Vectors => 1; }

    private readonly struct Two : IWidth { public static int Vectors => 2; }

    private readonly struct Four : IWidth { public static int Vectors => 4; }

    private readonly struct Six : IWidth { public static int Vectors => 6; }

    private readonly struct Eight : IWidth { public static int Vectors => 8; }

    /// <summary>output[0 .. 8·W) = Σ_p weights[p] · values[p], position by position, multiply and add rounded separately
    /// (as <see cref="TensorPrimitives.MultiplyAdd(ReadOnlySpan{float}, float, ReadOnlySpan{float}, Span{float})"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightedSum<W>(float* weights, float* values, int stride, int positions, float* output) where W : IWidth
    {
        Vector256<float> o0 = Vector256<float>.Zero, o1 = o0, o2 = o0, o3 = o0, o4 = o0, o5 = o0, o6 = o0, o7 = o0;
        for (int p = 0; p < positions; p++)
        {
            float* v = values + (long)p * stride;
            Vector256<float> w = Vector256.Create(weights[p]);
            o0 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v), w), o0);
            if (W.Vectors >= 2)
                o1 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 8), w), o1);
            if (W.Vectors >= 4)
            {
                o2 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 16), w), o2);
                o3 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 24), w), o3);
            }
            if (W.Vectors >= 6)
            {
                o4 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 32), w), o4);
                o5 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 40), w), o5);
            }
            if (W.Vectors >= 8)
            {
                o6 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 48), w), o6);
                o7 = Avx.Add(Avx.Multiply(Avx.LoadVector256(v + 56), w), o7);
            }
        }
        Avx.Store(output, o0);
        if (W.Vectors >= 2)
            Avx.Store(output + 8, o1);
        if (W.Vectors >= 4)
        {
            Avx.Store(output + 16, o2);
            Avx.Store(output + 24, o3);
        }
        if (W.Vectors >= 6)
        {
            Avx.Store(output + 32, o4);
            Avx.Store(output + 40, o5);
        }
        if (W.Vectors >= 8)
        {
            Avx.Store(output + 48, o6);
            Avx.Store(output + 56, o7);
        }
    }
}
