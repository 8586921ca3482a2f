using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Kernels;

internal static unsafe partial class Attention
{
    /// <summary>AVX2 + FMA version of <see cref="HeadScalar"/> for a head size that is a multiple of 8.</summary>
    public static void HeadAvx2(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output)
    {
        // scores: four positions at a time, one accumulator each, summed across lanes together
        int p = 0;
        for (; p + 4 <= positions; p += 4)
        {
            float* k0 = keys + (long)p * stride, k1 = k0 + stride, k2 = k1 + stride, k3 = k2 + stride;
            Vector256<float> a0 = Vector256<float>.Zero, a1 = a0, a2 = a0, a3 = a0;
            for (int d = 0; d < headDim; d += 8)
            {
                Vector256<float> q = Avx.LoadVector256(query + d);
                a0 = Fma.MultiplyAdd(q, Avx.LoadVector256(k0 + d), a0);
                a1 = Fma.MultiplyAdd(q, Avx.LoadVector256(k1 + d), a1);
                a2 = Fma.MultiplyAdd(q, Avx.LoadVector256(k2 + d), a2);
                a3 = Fma.MultiplyAdd(q, Avx.LoadVector256(k3 + d), a3);
            }
            Vector256<float> h = Avx.HorizontalAdd(Avx.HorizontalAdd(a0, a1), Avx.HorizontalAdd(a2, a3));
            Vector128<float> sums = Sse.Add(h.GetLower(), h.GetUpper());
            Sse.Store(scores + p, Sse.Multiply(sums, Vector128.Create(scale)));
        }
        for (; p < positions; p++)
        {
            float* k = keys + (long)p * stride;
            Vector256<float> a = Vector256<float>.Zero;
            for (int d = 0; d < headDim; d += 8)
                a = Fma.MultiplyAdd(Avx.LoadVector256(query + d), Avx.LoadVector256(k + d), a);
            scores[p] = Vector256.Sum(a) * scale;
        }

        var s = new Span<float>(scores, positions);
        TensorPrimitives.SoftMax(s, s);

        // output: up to 64 values at a time held in registers across every position; narrower chunks keep two
        // positions in flight (even and odd positions in separate accumulators) so the additions do not wait on each other
        int offset = 0;
        for (; offset + 64 <= headDim; offset += 64)
            WeightedSum8(scores, values + offset, stride, positions, output + offset);
        if (offset + 32 <= headDim)
        {
            WeightedSum4(scores, values + offset, stride, positions, output + offset);
            offset += 32;
        }
        if (offset + 16 <= headDim)
        {
            WeightedSum2(scores, values + offset, stride, positions, output + offset);
            offset += 16;
        }
        if (offset < headDim)
            WeightedSum1(scores, values + offset, stride, positions, output + offset);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightedSum8(float* weights, float* values, int stride, int positions, float* output)
    {
        Vector256<float> o0 = Vector256<float>.Zero, o1 = o0, o2 = o0, o3 = o0, o4 = o0, o5 = o0, o6 = o0, o7 = o0;
        for (int p = 0; p < positions; p++)
        {
            float* v = values + (long)p * stride;
            Vector256<float> w = Vector256.Create(weights[p]);
            o0 = Fma.MultiplyAdd(Avx.LoadVector256(v), w, o0);
            o1 = Fma.MultiplyAdd(Avx.LoadVector256(v + 8), w, o1);
            o2 = Fma.MultiplyAdd(Avx.LoadVector256(v + 16), w, o2);
            o3 = Fma.MultiplyAdd(Avx.LoadVector256(v + 24), w, o3);
            o4 = Fma.MultiplyAdd(Avx.LoadVector256(v + 32), w, o4);
            o5 = Fma.MultiplyAdd(Avx.LoadVector256(v + 40), w, o5);
            o6 = Fma.MultiplyAdd(Avx.LoadVector256(v + 48), w, o6);
            o7 = Fma.MultiplyAdd(Avx.LoadVector256(v + 56), w, o7);
        }
        Avx.Store(output, o0);
        Avx.Store(output + 8, o1);
        Avx.Store(output + 16, o2);
        Avx.Store(output + 24, o3);
        Avx.Store(output + 32, o4);
        Avx.Store(output + 40, o5);
        Avx.Store(output + 48, o6);
        Avx.Store(output + 56, o7);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightedSum4(float* weights, float* values, int stride, int positions, float* output)
    {
        Vector256<float> o0 = Vector256<float>.Zero, o1 = o0, o2 = o0, o3 = o0, e0 = o0, e1 = o0, e2 = o0, e3 = o0;
        int p = 0;
        for (; p + 2 <= positions; p += 2)
        {
            float* v = values + (long)p * stride, u = v + stride;
            Vector256<float> w = Vector256.Create(weights[p]), x = Vector256.Create(weights[p + 1]);
            o0 = Fma.MultiplyAdd(Avx.LoadVector256(v), w, o0);
            o1 = Fma.MultiplyAdd(Avx.LoadVector256(v + 8), w, o1);
            o2 = Fma.MultiplyAdd(Avx.LoadVector256(v + 16), w, o2);
            o3 = Fma.MultiplyAdd(Avx.LoadVector256(v + 24), w, o3);
            e0 = Fma.MultiplyAdd(Avx.LoadVector256(u), x, e0);
            e1 = Fma.MultiplyAdd(Avx.LoadVector256(u + 8), x, e1);
            e2 = Fma.MultiplyAdd(Avx.LoadVector256(u + 16), x, e2);
            e3 = Fma.MultiplyAdd(Avx.LoadVector256(u + 24), x, e3);
        }
        if (p < positions)
        {
            float* v = values + (long)p * stride;
            Vector256<float> w = Vector256.Create(weights[p]);
            o0 = Fma.MultiplyAdd(Avx.LoadVector256(v), w, o0);
            o1 = Fma.MultiplyAdd(Avx.LoadVector256(v + 8), w, o1);
            o2 = Fma.MultiplyAdd(Avx.LoadVector256(v + 16), w, o2);
            o3 = Fma.MultiplyAdd(Avx.LoadVector256(v + 24), w, o3);
        }
        Avx.Store(output, o0 + e0);
        Avx.Store(output + 8, o1 + e1);
        Avx.Store(output + 16, o2 + e2);
        Avx.Store(output + 24, o3 + e3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightedSum2(float* weights, float* values, int stride, int positions, float* output)
    {
        Vector256<float> o0 = Vector256<float>.Zero, o1 = o0, e0 = o0, e1 = o0;
        int p = 0;
        for (; p + 2 <= positions; p += 2)
        {
            float* v = values + (long)p * stride, u = v + stride;
            Vector256<float> w = Vector256.Create(weights[p]), x = Vector256.Create(weights[p + 1]);
            o0 = Fma.MultiplyAdd(Avx.LoadVector256(v), w, o0);
            o1 = Fma.MultiplyAdd(Avx.LoadVector256(v + 8), w, o1);
            e0 = Fma.MultiplyAdd(Avx.LoadVector256(u), x, e0);
            e1 = Fma.MultiplyAdd(Avx.LoadVector256(u + 8), x, e1);
        }
        if (p < positions)
        {
            float* v = values + (long)p * stride;
            Vector256<float> w = Vector256.Create(weights[p]);
            o0 = Fma.MultiplyAdd(Avx.LoadVector256(v), w, o0);
            o1 = Fma.MultiplyAdd(Avx.LoadVector256(v + 8), w, o1);
        }
        Avx.Store(output, o0 + e0);
        Avx.Store(output + 8, o1 + e1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WeightedSum1(float* weights, float* values, int stride, int positions, float* output)
    {
        Vector256<float> o = Vector256<float>.Zero, e = o;
        int p = 0;
        for (; p + 2 <= positions; p += 2)
        {
            float* v = values + (long)p * stride;
            o = Fma.MultiplyAdd(Avx.LoadVector256(v), Vector256.Create(weights[p]), o);
            e = Fma.MultiplyAdd(Avx.LoadVector256(v + stride), Vector256.Create(weights[p + 1]), e);
        }
        if (p < positions)
            o = Fma.MultiplyAdd(Avx.LoadVector256(values + (long)p * stride), Vector256.Create(weights[p]), o);
        Avx.Store(output, o + e);
    }
}
