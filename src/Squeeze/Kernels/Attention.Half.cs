using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

internal static unsafe partial class Attention
{
    /// <summary>True when <see cref="HeadHalf"/> runs heads of <paramref name="headDim"/> values here: Vector512
    /// accelerated, and a head size that is a multiple of 16 and at most 128.</summary>
    public static bool RunsHalf(int headDim) => UseAvx2 && Vector512.IsHardwareAccelerated && headDim % 16 == 0 && headDim <= MaxInlineDot;

    /// <summary>
    /// One head's attention over keys and values stored as f16 (<paramref name="positions"/> rows, <paramref name="stride"/>
    /// values apart), converted in registers as they are read. Bit for bit what converting each row to f32 and running
    /// <see cref="CacheAttention.Score"/>, <see cref="CacheAttention.Cap"/> (when <paramref name="cap"/> &gt; 0),
    /// <see cref="CacheAttention.Softmax"/> and <see cref="CacheAttention.Accumulate"/> gives: the dot products add 16-value
    /// products vector by vector as TensorPrimitives.Dot does at these sizes, and the weighted sum rounds each multiply
    /// and add separately, position by position. Without the two calls per position that way costs, and without a
    /// converted copy of the rows.
    /// </summary>
    public static void HeadHalf(float* query, ushort* keys, ushort* values, int stride, int positions, int headDim, float scale, float cap, float* scores, float* output)
    {
        int vectors = headDim / 16;
        for (int p = 0; p < positions; p++)
        {
            ushort* k = keys + (long)p * stride;
            Vector512<float> sum = Vector512<float>.Zero;
            for (int i = 0; i < vectors; i++)
                sum += Vector512.Load(query + 16 * i) * Half16(k + 16 * i);
            scores[p] = Vector512.Sum(sum) * scale;
        }
        if (cap > 0)
            CacheAttention.Cap(scores, positions, cap);
        CacheAttention.Softmax(scores, positions);
        switch (vectors)
        {
            case 1: WeightedSumHalf<One>(scores, values, stride, positions, output); break;
            case 2: WeightedSumHalf<Two>(scores, values, stride, positions, output); break;
            case 3: WeightedSumHalf<Two>(scores, values, stride, positions, output); WeightedSumHalf<One>(scores, values + 32, stride, positions, output + 32); break;
            case 4: WeightedSumHalf<Four>(scores, values, stride, positions, output); break;
            case 5: WeightedSumHalf<Four>(scores, values, stride, positions, output); WeightedSumHalf<One>(scores, values + 64, stride, positions, output + 64); break;
            case 6: WeightedSumHalf<Six>(scores, values, stride, positions, output); break;
            case 7: WeightedSumHalf<Six>(scores, values, stride, positions, output); WeightedSumHalf<One>(scores, values + 96, stride, positions, output + 96); break;
            default: WeightedSumHalf<Eight>(scores, values, stride, positions, output); break;
        }
    }

    /// <summary>Query heads of one key/value head (grouped-query attention) processed together by
    /// <see cref="HeadsHalf"/>: each key and value row is converted once for this many heads.</summary>
    public const int HeadsPerPass = 4;

    /// <summary>
    /// <see cref="HeadHalf"/> for <paramref name="heads"/> query heads that read the same keys and values (queries and
    /// outputs [heads, headDim], scores [<see cref="HeadsPerPass"/>, positions]): up to <see cref="HeadsPerPass"/> heads
    /// at a time share each row's conversion from f16, and every head's output is bit for bit what
    /// <see cref="HeadHalf"/> gives it alone (the same products and sums in the same order).
    /// </summary>
    public static void HeadsHalf(float* queries, int heads, ushort* keys, ushort* values, int stride, int positions, int headDim, float scale, float cap, float* scores, float* outputs)
    {
        for (int h = 0; h < heads; h += HeadsPerPass)
        {
            float* q = queries + h * headDim, output = outputs + h * headDim;
            switch (Math.Min(HeadsPerPass, heads - h))
            {
                case 1: HeadPass<OneHead>(q, keys, values, stride, positions, headDim, scale, cap, scores, output); break;
                case 2: HeadPass<TwoHeads>(q, keys, values, stride, positions, headDim, scale, cap, scores, output); break;
                case 3: HeadPass<ThreeHeads>(q, keys, values, stride, positions, headDim, scale, cap, scores, output); break;
                default: HeadPass<FourHeads>(q, keys, values, stride, positions, headDim, scale, cap, scores, output); break;
            }
        }
    }

    private interface IHeadCount
    {
        static abstract int Heads { get; }
    }

    private readonly struct OneHead : IHeadCount { public static int Heads => 1; }

    private readonly struct TwoHeads : IHeadCount { public static int Heads => 2; }

    private readonly struct ThreeHeads : IHeadCount { public static int Heads => 3; }

    private readonly struct FourHeads : IHeadCount { public static int Heads => 4; }

    /// <summary>One pass of <see cref="HeadsHalf"/> over <typeparamref name="T"/>'s count of heads.</summary>
    private static void HeadPass<T>(float* queries, ushort* keys, ushort* values, int stride, int positions, int headDim, float scale, float cap, float* scores, float* outputs)
        where T : IHeadCount
    {
        int vectors = headDim / 16;
        float* q0 = queries, q1 = q0 + headDim, q2 = q1 + headDim, q3 = q2 + headDim;
        float* s0 = scores, s1 = s0 + positions, s2 = s1 + positions, s3 = s2 + positions;
        for (int p = 0; p < positions; p++)
        {
            ushort* k = keys + (long)p * stride;
            Vector512<float> sum0 = Vector512<float>.Zero, sum1 = sum0, sum2 = sum0, sum3 = sum0;
            for (int i = 0; i < vectors; i++)
            {
                Vector512<float> key = Half16(k + 16 * i);
                sum0 += Vector512.Load(q0 + 16 * i) * key;
                if (T.Heads > 1)
                    sum1 += Vector512.Load(q1 + 16 * i) * key;
                if (T.Heads > 2)
                    sum2 += Vector512.Load(q2 + 16 * i) * key;
                if (T.Heads > 3)
                    sum3 += Vector512.Load(q3 + 16 * i) * key;
            }
            s0[p] = Vector512.Sum(sum0) * scale;
            if (T.Heads > 1)
                s1[p] = Vector512.Sum(sum1) * scale;
            if (T.Heads > 2)
                s2[p] = Vector512.Sum(sum2) * scale;
            if (T.Heads > 3)
                s3[p] = Vector512.Sum(sum3) * scale;
        }
        for (int h = 0; h < T.Heads; h++)
        {
            if (cap > 0)
                CacheAttention.Cap(scores + h * positions, positions, cap);
            CacheAttention.Softmax(scores + h * positions, positions);
        }
        for (int i = 0; i < vectors; i++)
        {
            Vector512<float> o0 = Vector512<float>.Zero, o1 = o0, o2 = o0, o3 = o0;
            for (int p = 0; p < positions; p++)
            {
                Vector512<float> value = Half16(values + (long)p * stride + 16 * i);
                o0 = value * Vector512.Create(s0[p]) + o0;
                if (T.Heads > 1)
                    o1 = value * Vector512.Create(s1[p]) + o1;
                if (T.Heads > 2)
                    o2 = value * Vector512.Create(s2[p]) + o2;
                if (T.Heads > 3)
                    o3 = value * Vector512.Create(s3[p]) + o3;
            }
            o0.Store(outputs + 16 * i);
            if (T.Heads > 1)
                o1.Store(outputs + headDim + 16 * i);
            if (T.Heads > 2)
                o2.Store(outputs + 2 * headDim + 16 * i);
            if (T.Heads > 3)
                o3.Store(outputs + 3 * headDim + 16 * i);
        }
    }

    /// <summary>16 f16 values as f32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Half16(ushort* p) => Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)));

    /// <summary>output[0 .. 16·W) = Σ_p weights[p] · values[p] over f16 rows, position by position, multiply and add
    /// rounded separately (as <see cref="WeightedSum{W}"/> over f32 rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightedSumHalf<W>(float* weights, ushort* values, int stride, int positions, float* output) where W : IWidth
    {
        Vector512<float> o0 = Vector512<float>.Zero, o1 = o0, o2 = o0, o3 = o0, o4 = o0, o5 = o0, o6 = o0, o7 = o0;
        for (int p = 0; p < positions; p++)
        {
            ushort* v = values + (long)p * stride;
            Vector512<float> w = Vector512.Create(weights[p]);
            o0 = Half16(v) * w + o0;
            if (W.Vectors >= 2)
                o1 = Half16(v + 16) * w + o1;
            if (W.Vectors >= 4)
            {
                o2 = Half16(v + 32) * w + o2;
                o3 = Half16(v + 48) * w + o3;
            }
            if (W.Vectors >= 6)
            {
                o4 = Half16(v + 64) * w + o4;
                o5 = Half16(v + 80) * w + o5;
            }
            if (W.Vectors >= 8)
            {
                o6 = Half16(v + 96) * w + o6;
                o7 = Half16(v + 112) * w + o7;
            }
        }
        o0.Store(output);
        if (W.Vectors >= 2)
            o1.Store(output + 16);
        if (W.Vectors >= 4)
        {
            o2.Store(output + 32);
            o3.Store(output + 48);
        }
        if (W.Vectors >= 6)
        {
            o4.Store(output + 64);
            o5.Store(output + 80);
        }
        if (W.Vectors >= 8)
        {
            o6.Store(output + 96);
            o7.Store(output + 112);
        }
    }
}
