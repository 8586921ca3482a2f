using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Tensors;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

// Four-token versions of the AVX2 kernels for the prompt (matrix-matrix) case: each weight block is loaded and decoded
// once and multiplied with four activation rows. Every output is bit for bit what the one-token kernel gives (same
// operations in the same order), so a prompt and a token-by-token run agree exactly.
// Signature: (w, x, xStride, n, y, yStride) → y[t · yStride] = dot(w, x + t · xStride, n) for t < 4.
internal static unsafe partial class VecDot
{
    /// <summary>Four tokens of <see cref="F32Avx2"/>, bit for bit.</summary>
    public static void F32x4Avx2(byte* w, byte* x, long xStride, int n, float* y, long yStride)
    {
        float* a = (float*)w;
        float* b0 = (float*)x, b1 = (float*)(x + xStride), b2 = (float*)(x + 2 * xStride), b3 = (float*)(x + 3 * xStride);
        Vector256<float> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Vector256<float> w0 = Vector256.Load(a + i), w1 = Vector256.Load(a + i + 8);
            s00 = MulAdd(w0, Vector256.Load(b0 + i), s00);
            s01 = MulAdd(w1, Vector256.Load(b0 + i + 8), s01);
            s10 = MulAdd(w0, Vector256.Load(b1 + i), s10);
            s11 = MulAdd(w1, Vector256.Load(b1 + i + 8), s11);
            s20 = MulAdd(w0, Vector256.Load(b2 + i), s20);
            s21 = MulAdd(w1, Vector256.Load(b2 + i + 8), s21);
            s30 = MulAdd(w0, Vector256.Load(b3 + i), s30);
            s31 = MulAdd(w1, Vector256.Load(b3 + i + 8), s31);
        }
        for (; i + 8 <= n; i += 8)
        {
            Vector256<float> w0 = Vector256.Load(a + i);
            s00 = MulAdd(w0, Vector256.Load(b0 + i), s00);
            s10 = MulAdd(w0, Vector256.Load(b1 + i), s10);
            s20 = MulAdd(w0, Vector256.Load(b2 + i), s20);
            s30 = MulAdd(w0, Vector256.Load(b3 + i), s30);
        }
        float y0 = Vector256.Sum(s00 + s01), y1 = Vector256.Sum(s10 + s11), y2 = Vector256.Sum(s20 + s21), y3 = Vector256.Sum(s30 + s31);
        for (; i < n; i++)
        {
            y0 += a[i] * b0[i];
            y1 += a[i] * b1[i];
            y2 += a[i] * b2[i];
            y3 += a[i] * b3[i];
        }
        y[0] = y0;
        y[yStride] = y1;
        y[2 * yStride] = y2;
        y[3 * yStride] = y3;
    }

    /// <summary>Four tokens of <see cref="F16Avx2"/>, bit for bit (each weight converted once).</summary>
    public static void F16x4Avx2(byte* w, byte* x, long xStride, int n, float* y, long yStride)
        => Half16x4Avx2<HalfWeights>(w, x, xStride, n, y, yStride);

    /// <summary>Four tokens of <see cref="BF16Avx2"/>, bit for bit.</summary>
    public static void BF16x4Avx2(byte* w, byte* x, long xStride, int n, float* y, long yStride)
        => Half16x4Avx2<BFloat16Weights>(w, x, xStride, n, y, yStride);

    /// <summary>Eight 16-bit float weights as f32.</summary>
    private interface IHalfWeights
    {
        static abstract Vector256<float> Load8(ushort* p);

        static abstract Vector512<float> Load16(ushort* p);

        static abstract float Load1(ushort* p);
    }

    private readonly struct HalfWeights : IHalfWeights
    {
        public static Vector256<float> Load8(ushort* p) => Fp16.ToSingle(Avx2.ConvertToVector256Int32(p).AsUInt32());

        public static Vector512<float> Load16(ushort* p) => Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)));

        public static float Load1(ushort* p) => Fp16.ToSingle(*p);
    }

    private readonly struct BFloat16Weights : IHalfWeights
    {
        public static Vector256<float> Load8(ushort* p) => Vector256.ShiftLeft(Avx2.ConvertToVector256Int32(p), 16).AsSingle();

        public static Vector512<float> Load16(ushort* p) => Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load(p)), 16).AsSingle();

        public static float Load1(ushort* p) => HalfConversions.Bf16ToF32(*p);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Half16x4Avx2<T>(byte* w, byte* x, long xStride, int n, float* y, long yStride) where T : IHalfWeights
    {
        ushort* a = (ushort*)w;
        float* b0 = (float*)x, b1 = (float*)(x + xStride), b2 = (float*)(x + 2 * xStride), b3 = (float*)(x + 3 * xStride);
        Vector256<float> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Vector256<float> w0 = T.Load8(a + i), w1 = T.Load8(a + i + 8);
            s00 = MulAdd(w0, Vector256.Load(b0 + i), s00);
            s01 = MulAdd(w1, Vector256.Load(b0 + i + 8), s01);
            s10 = MulAdd(w0, Vector256.Load(b1 + i), s10);
            s11 = MulAdd(w1, Vector256.Load(b1 + i + 8), s11);
            s20 = MulAdd(w0, Vector256.Load(b2 + i), s20);
            s21 = MulAdd(w1, Vector256.Load(b2 + i + 8), s21);
            s30 = MulAdd(w0, Vector256.Load(b3 + i), s30);
            s31 = MulAdd(w1, Vector256.Load(b3 + i + 8), s31);
        }
        float y0 = Vector256.Sum(s00 + s01), y1 = Vector256.Sum(s10 + s11), y2 = Vector256.Sum(s20 + s21), y3 = Vector256.Sum(s30 + s31);
        for (; i < n; i++)
        {
            float wi = T.Load1(a + i);
            y0 += wi * b0[i];
            y1 += wi * b1[i];
            y2 += wi * b2[i];
            y3 += wi * b3[i];
        }
        y[0] = y0;
        y[yStride] = y1;
        y[2 * yStride] = y2;
        y[3 * yStride] = y3;
    }

    /// <summary>Hadd of the block sums of two consecutive Q8_0 blocks (weights given as |q| and q) with one token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q8Pair(Vector256<byte> a0, Vector256<sbyte> q0, Vector256<byte> a1, Vector256<sbyte> q1, byte* xb)
        => Hadd(DotU8(a0, Avx2.Sign(Vector256.Load((sbyte*)(xb + Q8_0Qs)), q0)), DotU8(a1, Avx2.Sign(Vector256.Load((sbyte*)(xb + Q8_0Bytes + Q8_0Qs)), q1)));

    /// <summary>Four tokens of <see cref="Q8_0Avx2"/>, bit for bit (also runs Q4_0, Q5_0 and IQ4_NL rows repacked to Q8_0).</summary>
    public static void Q8_0x4Avx2(byte* w, byte* x, long xStride, int n, float* y, long yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        byte* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        int nb = n / QK, b = 0;
        float* d0 = (float*)(x0 + nb * Q8_0Bytes), d1 = (float*)(x1 + nb * Q8_0Bytes), d2 = (float*)(x2 + nb * Q8_0Bytes), d3 = (float*)(x3 + nb * Q8_0Bytes);
        for (; b + 8 <= nb; b += 8, w += 8 * Q8_0Bytes, x0 += 8 * Q8_0Bytes, x1 += 8 * Q8_0Bytes, x2 += 8 * Q8_0Bytes, x3 += 8 * Q8_0Bytes)
        {
            Vector256<int> l0 = default, l1 = default, l2 = default, l3 = default; // blocks 0-3 of the group, per token
            Vector256<int> h0 = default, h1 = default, h2 = default, h3 = default; // blocks 4-7
            for (int half = 0; half < 2; half++)
            {
                int o = 4 * half * Q8_0Bytes;
                Vector256<sbyte> q0 = Vector256.Load((sbyte*)(w + o + Q8_0Qs)), q1 = Vector256.Load((sbyte*)(w + o + Q8_0Bytes + Q8_0Qs));
                Vector256<sbyte> q2 = Vector256.Load((sbyte*)(w + o + 2 * Q8_0Bytes + Q8_0Qs)), q3 = Vector256.Load((sbyte*)(w + o + 3 * Q8_0Bytes + Q8_0Qs));
                Vector256<byte> b0 = Avx2.Abs(q0), b1 = Avx2.Abs(q1), b2 = Avx2.Abs(q2), b3 = Avx2.Abs(q3);
                int o2 = o + 2 * Q8_0Bytes;
                Vector256<int> t0 = Hadd(Q8Pair(b0, q0, b1, q1, x0 + o), Q8Pair(b2, q2, b3, q3, x0 + o2));
                Vector256<int> t1 = Hadd(Q8Pair(b0, q0, b1, q1, x1 + o), Q8Pair(b2, q2, b3, q3, x1 + o2));
                Vector256<int> t2 = Hadd(Q8Pair(b0, q0, b1, q1, x2 + o), Q8Pair(b2, q2, b3, q3, x2 + o2));
                Vector256<int> t3 = Hadd(Q8Pair(b0, q0, b1, q1, x3 + o), Q8Pair(b2, q2, b3, q3, x3 + o2));
                if (half == 0)
                {
                    l0 = t0; l1 = t1; l2 = t2; l3 = t3;
                }
                else
                {
                    h0 = t0; h1 = t1; h2 = t2; h3 = t3;
                }
            }
            Vector256<float> dw = HalfScales8(w, Q8_0Bytes);
            a0 = MulAdd(dw * Vector256.Load(d0 + b), Vector256.ConvertToSingle(Sum8(l0, h0)), a0);
            a1 = MulAdd(dw * Vector256.Load(d1 + b), Vector256.ConvertToSingle(Sum8(l1, h1)), a1);
            a2 = MulAdd(dw * Vector256.Load(d2 + b), Vector256.ConvertToSingle(Sum8(l2, h2)), a2);
            a3 = MulAdd(dw * Vector256.Load(d3 + b), Vector256.ConvertToSingle(Sum8(l3, h3)), a3);
        }
        float y0 = Vector256.Sum(a0), y1 = Vector256.Sum(a1), y2 = Vector256.Sum(a2), y3 = Vector256.Sum(a3);
        for (; b < nb; b++, w += Q8_0Bytes, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes)
        {
            Vector256<sbyte> q = Vector256.Load((sbyte*)(w + Q8_0Qs));
            Vector256<byte> aq = Avx2.Abs(q);
            float dw = H(w);
            y0 += dw * H(x0) * Vector256.Sum(DotU8(aq, Avx2.Sign(Vector256.Load((sbyte*)(x0 + Q8_0Qs)), q)));
            y1 += dw * H(x1) * Vector256.Sum(DotU8(aq, Avx2.Sign(Vector256.Load((sbyte*)(x1 + Q8_0Qs)), q)));
            y2 += dw * H(x2) * Vector256.Sum(DotU8(aq, Avx2.Sign(Vector256.Load((sbyte*)(x2 + Q8_0Qs)), q)));
            y3 += dw * H(x3) * Vector256.Sum(DotU8(aq, Avx2.Sign(Vector256.Load((sbyte*)(x3 + Q8_0Qs)), q)));
        }
        y[0] = y0;
        y[yStride] = y1;
        y[2 * yStride] = y2;
        y[3 * yStride] = y3;
    }

    /// <summary>Rewrites a row of Q4_0, Q5_0 or IQ4_NL blocks as Q8_0 blocks with the same d and the same integer values
    /// (exact: the Q8_0 product of the result equals the original type's product bit for bit).</summary>
    public static void RepackToQ8_0Avx2(GgmlType type, byte* w, int n, byte* destination)
    {
        int blockBytes = GgmlTypes.BlockBytes(type);
        for (int b = 0; b < n / QK; b++, w += blockBytes, destination += Q8_0Bytes)
        {
            *(ushort*)destination = Unsafe.ReadUnaligned<ushort>(w);
            Vector256<sbyte> q = type switch
            {
                GgmlType.Q4_0 => Q4_0Block.Values(w),
                GgmlType.Q5_0 => Q5_0Block.Values(w),
                _ => IQ4_NLBlock.Values(w),
            };
            q.Store((sbyte*)(destination + Q8_0Qs));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4_KSteps(Vector256<int> sumi, Vector256<byte> lo, Vector256<byte> hi, sbyte* q8, Vector256<short> s0, Vector256<short> s1)
        => ScaledDotU8(ScaledDotU8(sumi, lo, Vector256.Load(q8), s0), hi, Vector256.Load(q8 + 32), s1);

    /// <summary>Four tokens of <see cref="Q4_KAvx2"/>, bit for bit.</summary>
    public static void Q4_Kx4Avx2(byte* w, byte* x, long xStride, int n, float* y, long yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float m0 = 0, m1 = 0, m2 = 0, m3 = 0;
        var mask = Vector256.Create((byte)0x0F);
        byte* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        for (int b = 0; b < n / QK_K; b++, w += Q4_KBytes, x0 += Q8_KBytes, x1 += Q8_KBytes, x2 += Q8_KBytes, x3 += Q8_KBytes)
        {
            Vector256<byte> scales = ScalesK4(ScalesMinsK4(w + Q4_KScales, (short*)(x0 + Q8_KBsums), out int summs0));
            ScalesMinsK4(w + Q4_KScales, (short*)(x1 + Q8_KBsums), out int summs1);
            ScalesMinsK4(w + Q4_KScales, (short*)(x2 + Q8_KBsums), out int summs2);
            ScalesMinsK4(w + Q4_KScales, (short*)(x3 + Q8_KBsums), out int summs3);
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
            for (int j = 0; j < 4; j++)
            {
                Vector256<byte> q = Vector256.Load(w + Q4_KQs + 32 * j);
                Vector256<byte> lo = q & mask, hi = Srl16(q, 4) & mask;
                Vector256<short> c0 = ScaleK4(scales, 2 * j), c1 = ScaleK4(scales, 2 * j + 1);
                int o = Q8_KQs + 64 * j;
                s0 = Q4_KSteps(s0, lo, hi, (sbyte*)(x0 + o), c0, c1);
                s1 = Q4_KSteps(s1, lo, hi, (sbyte*)(x1 + o), c0, c1);
                s2 = Q4_KSteps(s2, lo, hi, (sbyte*)(x2 + o), c0, c1);
                s3 = Q4_KSteps(s3, lo, hi, (sbyte*)(x3 + o), c0, c1);
            }
            float d = H(w), dmin = H(w + Q4_KDmin);
            float y0 = *(float*)x0, y1 = *(float*)x1, y2 = *(float*)x2, y3 = *(float*)x3;
            a0 = MulAdd(Vector256.Create(d * y0), Vector256.ConvertToSingle(s0), a0);
            a1 = MulAdd(Vector256.Create(d * y1), Vector256.ConvertToSingle(s1), a1);
            a2 = MulAdd(Vector256.Create(d * y2), Vector256.ConvertToSingle(s2), a2);
            a3 = MulAdd(Vector256.Create(d * y3), Vector256.ConvertToSingle(s3), a3);
            m0 += dmin * y0 * summs0;
            m1 += dmin * y1 * summs1;
            m2 += dmin * y2 * summs2;
            m3 += dmin * y3 * summs3;
        }
        y[0] = Vector256.Sum(a0) - m0;
        y[yStride] = Vector256.Sum(a1) - m1;
        y[2 * yStride] = Vector256.Sum(a2) - m2;
        y[3 * yStride] = Vector256.Sum(a3) - m3;
    }

    /// <summary>Four tokens of <see cref="Q5_KAvx2"/>, bit for bit.</summary>
    public static void Q5_Kx4Avx2(byte* w, byte* x, long xStride, int n, float* y, long yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float m0 = 0, m1 = 0, m2 = 0, m3 = 0;
        var mask = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)16);
        byte* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        for (int b = 0; b < n / QK_K; b++, w += Q5_KBytes, x0 += Q8_KBytes, x1 += Q8_KBytes, x2 += Q8_KBytes, x3 += Q8_KBytes)
        {
            Vector256<byte> scales = ScalesK4(ScalesMinsK4(w + Q5_KScales, (short*)(x0 + Q8_KBsums), out int summs0));
            ScalesMinsK4(w + Q5_KScales, (short*)(x1 + Q8_KBsums), out int summs1);
            ScalesMinsK4(w + Q5_KScales, (short*)(x2 + Q8_KBsums), out int summs2);
            ScalesMinsK4(w + Q5_KScales, (short*)(x3 + Q8_KBsums), out int summs3);
            Vector256<byte> qh = Vector256.Load(w + Q5_KQh);
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
            for (int j = 0; j < 4; j++)
            {
                Vector256<byte> q = Vector256.Load(w + Q5_KQs + 32 * j);
                var b1 = Vector256.Create((byte)(1 << (2 * j)));
                var b2 = Vector256.Create((byte)(2 << (2 * j)));
                Vector256<byte> lo = (q & mask) | (Vector256.Equals(qh & b1, b1) & sixteen);
                Vector256<byte> hi = (Srl16(q, 4) & mask) | (Vector256.Equals(qh & b2, b2) & sixteen);
                Vector256<short> c0 = ScaleK4(scales, 2 * j), c1 = ScaleK4(scales, 2 * j + 1);
                int o = Q8_KQs + 64 * j;
                s0 = Q4_KSteps(s0, lo, hi, (sbyte*)(x0 + o), c0, c1);
                s1 = Q4_KSteps(s1, lo, hi, (sbyte*)(x1 + o), c0, c1);
                s2 = Q4_KSteps(s2, lo, hi, (sbyte*)(x2 + o), c0, c1);
                s3 = Q4_KSteps(s3, lo, hi, (sbyte*)(x3 + o), c0, c1);
            }
            float d = H(w), dmin = H(w + Q5_KDmin);
            float y0 = *(float*)x0, y1 = *(float*)x1, y2 = *(float*)x2, y3 = *(float*)x3;
            a0 = MulAdd(Vector256.Create(d * y0), Vector256.ConvertToSingle(s0), a0);
            a1 = MulAdd(Vector256.Create(d * y1), Vector256.ConvertToSingle(s1), a1);
            a2 = MulAdd(Vector256.Create(d * y2), Vector256.ConvertToSingle(s2), a2);
            a3 = MulAdd(Vector256.Create(d * y3), Vector256.ConvertToSingle(s3), a3);
            m0 += dmin * y0 * summs0;
            m1 += dmin * y1 * summs1;
            m2 += dmin * y2 * summs2;
            m3 += dmin * y3 * summs3;
        }
        y[0] = Vector256.Sum(a0) - m0;
        y[yStride] = Vector256.Sum(a1) - m1;
        y[2 * yStride] = Vector256.Sum(a2) - m2;
        y[3 * yStride] = Vector256.Sum(a3) - m3;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6_KSteps(Vector256<int> sumi, Vector256<byte> u0, Vector256<byte> u1, Vector256<byte> u2, Vector256<byte> u3, sbyte* q8,
        Vector256<short> c0, Vector256<short> c1, Vector256<short> c2, Vector256<short> c3)
    {
        sumi = ScaledDotU8(sumi, u0, Vector256.Load(q8), c0);
        sumi = ScaledDotU8(sumi, u1, Vector256.Load(q8 + 32), c1);
        sumi = ScaledDotU8(sumi, u2, Vector256.Load(q8 + 64), c2);
        return ScaledDotU8(sumi, u3, Vector256.Load(q8 + 96), c3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Q6_KFinish(Vector256<float> acc, Vector256<int> sumi, Vector256<short> sc16, byte* x, float d)
    {
        Vector256<int> offset = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8_KBsums)), sc16);
        sumi -= Vector256.ShiftLeft(offset, 5);
        return MulAdd(Vector256.Create(d * *(float*)x), Vector256.ConvertToSingle(sumi), acc);
    }

    /// <summary>Four tokens of <see cref="Q6_KAvx2"/>, bit for bit.</summary>
    public static void Q6_Kx4Avx2(byte* w, byte* x, long xStride, int n, float* y, long yStride)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        var mask = Vector256.Create((byte)0x0F);
        var two = Vector256.Create((byte)0x30);
        byte* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        for (int b = 0; b < n / QK_K; b++, w += Q6_KBytes, x0 += Q8_KBytes, x1 += Q8_KBytes, x2 += Q8_KBytes, x3 += Q8_KBytes)
        {
            sbyte* sc = (sbyte*)(w + Q6_KScales);
            Vector256<short> sc16 = Avx2.ConvertToVector256Int16(Vector128.Load(sc));
            var (low, high) = ScaleHalves(sc16);
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
            for (int chunk = 0; chunk < 2; chunk++)
            {
                Vector256<byte> half = chunk == 0 ? low : high;
                Vector256<byte> ql0 = Vector256.Load(w + 64 * chunk);
                Vector256<byte> ql1 = Vector256.Load(w + 64 * chunk + 32);
                Vector256<byte> qh = Vector256.Load(w + Q6_KQh + 32 * chunk);
                Vector256<byte> u0 = (ql0 & mask) | (Sll16(qh, 4) & two);
                Vector256<byte> u1 = (ql1 & mask) | (Sll16(qh, 2) & two);
                Vector256<byte> u2 = (Srl16(ql0, 4) & mask) | (qh & two);
                Vector256<byte> u3 = (Srl16(ql1, 4) & mask) | (Srl16(qh, 2) & two);
                Vector256<short> c0 = ScalePair(half, 0), c1 = ScalePair(half, 1), c2 = ScalePair(half, 2), c3 = ScalePair(half, 3);
                int o = Q8_KQs + 128 * chunk;
                s0 = Q6_KSteps(s0, u0, u1, u2, u3, (sbyte*)(x0 + o), c0, c1, c2, c3);
                s1 = Q6_KSteps(s1, u0, u1, u2, u3, (sbyte*)(x1 + o), c0, c1, c2, c3);
                s2 = Q6_KSteps(s2, u0, u1, u2, u3, (sbyte*)(x2 + o), c0, c1, c2, c3);
                s3 = Q6_KSteps(s3, u0, u1, u2, u3, (sbyte*)(x3 + o), c0, c1, c2, c3);
            }
            float d = H(w + Q6_KD);
            a0 = Q6_KFinish(a0, s0, sc16, x0, d);
            a1 = Q6_KFinish(a1, s1, sc16, x1, d);
            a2 = Q6_KFinish(a2, s2, sc16, x2, d);
            a3 = Q6_KFinish(a3, s3, sc16, x3, d);
        }
        y[0] = Vector256.Sum(a0);
        y[yStride] = Vector256.Sum(a1);
        y[2 * yStride] = Vector256.Sum(a2);
        y[3 * yStride] = Vector256.Sum(a3);
    }
}
