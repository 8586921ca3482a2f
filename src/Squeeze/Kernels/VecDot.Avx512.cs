using Squeeze.Tensors;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

// 512-bit versions of the float kernels (the integer kernels run 256-bit: a 32-value block fills one 256-bit register,
// and AVX-VNNI already does the byte products). Callers check Avx512F.IsSupported (VecDot.For does).
internal static unsafe partial class VecDot
{
    /// <summary>AVX-512 version of <see cref="F32Scalar"/> (two 16-lane FMA accumulators; <see cref="F32x4Avx512"/> sums in the same order).</summary>
    public static float F32Avx512(byte* w, byte* x, int n)
    {
        float* a = (float*)w, b = (float*)x;
        Vector512<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            s0 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i + 16), Vector512.Load(b + i + 16), s1);
        }
        for (; i + 16 <= n; i += 16)
            s0 = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
        float sum = Vector512.Sum(s0 + s1);
        for (; i < n; i++)
            sum += a[i] * b[i];
        return sum;
    }

    /// <summary>Four tokens at once: <c>y[t · yStride] = F32Avx512(w, x + t · xStride, n)</c> for t &lt; 4, bit for bit,
    /// loading each weight once.</summary>
    public static void F32x4Avx512(byte* w, byte* x, long xStride, int n, float* y, long yStride)
    {
        float* a = (float*)w;
        float* b0 = (float*)x, b1 = (float*)(x + xStride), b2 = (float*)(x + 2 * xStride), b3 = (float*)(x + 3 * xStride);
        Vector512<float> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            Vector512<float> w0 = Vector512.Load(a + i), w1 = Vector512.Load(a + i + 16);
            s00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b0 + i), s00);
            s01 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b0 + i + 16), s01);
            s10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b1 + i), s10);
            s11 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b1 + i + 16), s11);
            s20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b2 + i), s20);
            s21 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b2 + i + 16), s21);
            s30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b3 + i), s30);
            s31 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b3 + i + 16), s31);
        }
        for (; i + 16 <= n; i += 16)
        {
            Vector512<float> w0 = Vector512.Load(a + i);
            s00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b0 + i), s00);
            s10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b1 + i), s10);
            s20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b2 + i), s20);
            s30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b3 + i), s30);
        }
        float y0 = Vector512.Sum(s00 + s01), y1 = Vector512.Sum(s10 + s11), y2 = Vector512.Sum(s20 + s21), y3 = Vector512.Sum(s30 + s31);
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

    /// <summary><see cref="Q4_0Avx2"/> with the 8 blocks' scales picked by one AVX-512 VBMI byte permutation, bit for bit.</summary>
    public static float Q4_0Avx512(byte* w, byte* x, int n)
        => Avx512Vbmi.IsSupported ? DotNibblePairs<Q4_0Nibbles, PermutedHalfScales>(w, x, n) : Q4_0Avx2(w, x, n);

    /// <summary>Four rows of <see cref="Q4_0Avx512"/> with one activation row, bit for bit.</summary>
    public static void Q4_0Rows4Avx512(byte* w, long rowBytes, byte* x, int n, float* y)
    {
        if (Avx512Vbmi.IsSupported)
            DotNibblePairs4<Q4_0Nibbles, PermutedHalfScales>(w, rowBytes, x, n, y);
        else
            Q4_0Rows4Avx2(w, rowBytes, x, n, y);
    }

    /// <summary><see cref="IQ4_NLAvx2"/> with the 8 blocks' scales picked by one AVX-512 VBMI byte permutation, bit for bit.</summary>
    public static float IQ4_NLAvx512(byte* w, byte* x, int n)
        => Avx512Vbmi.IsSupported && AvxVnni.IsSupported ? DotNibblePairs<IQ4_NLNibbles, PermutedHalfScales>(w, x, n) : IQ4_NLAvx2(w, x, n);

    /// <summary>
    /// <see cref="Q4_KAvx2"/> with 512-bit integer steps, bit for bit: each 32 bytes of nibbles are broadcast to both halves
    /// of one register (the low nibbles multiplied in the low half with activations 64j .. 64j + 31, the high nibbles in
    /// the high half with the next 32), each half scaled by its sub-block's scale; the halves' int32 lanes are added at
    /// the end of the super-block, giving the 256-bit kernel's lane sums (exact integers), then the same f32 operations.
    /// </summary>
    public static float Q4_KAvx512(byte* w, byte* x, int n) => DotK4Avx512<Q4_KLayout>(w, x, n);

    /// <summary><see cref="Q5_KAvx2"/> with 512-bit integer steps, bit for bit (as <see cref="Q4_KAvx512"/>, the fifth bits
    /// of both halves picked from the broadcast high-bit bytes).</summary>
    public static float Q5_KAvx512(byte* w, byte* x, int n) => DotK4Avx512<Q5_KLayout>(w, x, n);

    /// <summary>Where a Q4_K-like block (d, dmin, 12 bytes of scales and mins, then nibbles) keeps its fields, and
    /// whether it has fifth bits.</summary>
    private interface IK4Layout
    {
        static abstract int Bytes { get; }

        static abstract int Qs { get; }

        static abstract bool FifthBits { get; }
    }

    private readonly struct Q4_KLayout : IK4Layout
    {
        public static int Bytes => BlockLayout.Q4_KBytes;

        public static int Qs => BlockLayout.Q4_KQs;

        public static bool FifthBits => false;
    }

    private readonly struct Q5_KLayout : IK4Layout
    {
        public static int Bytes => BlockLayout.Q5_KBytes;

        public static int Qs => BlockLayout.Q5_KQs;

        public static bool FifthBits => true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotK4Avx512<T>(byte* w, byte* x, int n) where T : IK4Layout
    {
        Vector256<float> acc = default;
        float accm = 0;
        var mask = Vector512.Create((byte)0x0F);
        var shifts = Vector512.Create(Vector256<ushort>.Zero, Vector256.Create((ushort)4)); // low nibbles | high nibbles
        // per step j: the scales of sub-blocks 2j (low half) and 2j + 1 (high half), and their fifth bits
        Vector512<short> pick0 = ScalePick(0), pick1 = ScalePick(1), pick2 = ScalePick(2), pick3 = ScalePick(3);
        Vector512<byte> bits0 = FifthBits(0), bits1 = FifthBits(1), bits2 = FifthBits(2), bits3 = FifthBits(3);
        for (int b = 0; b < n / BlockLayout.QK_K; b++, w += T.Bytes, x += BlockLayout.Q8_KBytes)
        {
            ulong packed = ScalesMinsK4(w + BlockLayout.Q4_KScales, (short*)(x + BlockLayout.Q8_KBsums), out int summs); // Q5_KScales is the same offset
            Vector512<short> scales = Avx512BW.ConvertToVector512Int16(Vector256.Create(Vector128.CreateScalar(packed).AsByte(), default));
            Vector512<byte> qh = T.FifthBits ? Vector512.Create(Vector256.Load(w + BlockLayout.Q5_KQh)) : default;
            sbyte* q8 = (sbyte*)(x + BlockLayout.Q8_KQs);
            byte* q = w + T.Qs;
            // two chains of two steps: the integer sums are the same
            Vector512<int> even = K4Step512<T>(q, qh, bits0, q8, scales, pick0, mask, shifts)
                + K4Step512<T>(q + 64, qh, bits2, q8 + 128, scales, pick2, mask, shifts);
            Vector512<int> odd = K4Step512<T>(q + 32, qh, bits1, q8 + 64, scales, pick1, mask, shifts)
                + K4Step512<T>(q + 96, qh, bits3, q8 + 192, scales, pick3, mask, shifts);
            Vector512<int> sum = even + odd;
            Vector256<int> sumi = sum.GetLower() + sum.GetUpper();
            float dy = *(float*)x;
            acc = MulAdd(Vector256.Create(H(w) * dy), Vector256.ConvertToSingle(sumi), acc);
            accm += H(w + BlockLayout.Q4_KDmin) * dy * summs;
        }
        return Vector256.Sum(acc) - accm;
    }

    /// <summary>vpermw indices: scale 2j in the low half's words, 2j + 1 in the high half's.</summary>
    private static Vector512<short> ScalePick(int j) => Vector512.Create(Vector256.Create((short)(2 * j)), Vector256.Create((short)(2 * j + 1)));

    /// <summary>The Q5_K high-bit masks of sub-block 2j (low half) and 2j + 1 (high half).</summary>
    private static Vector512<byte> FifthBits(int j) => Vector512.Create(Vector256.Create((byte)(1 << (2 * j))), Vector256.Create((byte)(2 << (2 * j))));

    /// <summary>32 bytes of nibbles (sub-blocks 2j and 2j + 1) with 64 activations: lane i of the low half is the
    /// 4-value sum of sub-block 2j times its scale, of the high half that of sub-block 2j + 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> K4Step512<T>(byte* q, Vector512<byte> qh, Vector512<byte> bits, sbyte* q8, Vector512<short> scales, Vector512<short> pick,
        Vector512<byte> mask, Vector512<ushort> shifts) where T : IK4Layout
    {
        Vector512<byte> u = Avx512BW.ShiftRightLogicalVariable(Vector512.Create(Vector256.Load((ushort*)q)), shifts).AsByte() & mask;
        if (T.FifthBits)
            u |= Vector512.Equals(qh & bits, bits) & Vector512.Create((byte)16);
        return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, Vector512.Load(q8)), Avx512BW.PermuteVar32x16(scales, pick));
    }

    /// <summary>The d of 8 blocks 18 bytes apart (all within the first 128 bytes) from two 64-byte loads and one
    /// two-source byte permutation, instead of eight scalar loads and inserts.</summary>
    private readonly struct PermutedHalfScales : IHalfScales8
    {
        public static Vector256<float> Load(byte* first, int stride)
        {
            Debug.Assert(stride == 18);
            var index = Vector512.Create((byte)0, 1, 18, 19, 36, 37, 54, 55, 72, 73, 90, 91, 108, 109, 126, 127,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
            Vector512<byte> picked = Avx512Vbmi.PermuteVar64x8x2(Vector512.Load(first), index, Vector512.Load(first + 64));
            return Fp16.ToSingle(Avx2.ConvertToVector256Int32(picked.GetLower().GetLower().AsUInt16()).AsUInt32());
        }
    }

    /// <summary>AVX-512 version of <see cref="F16Scalar"/>.</summary>
    public static float F16Avx512(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        Vector512<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            s0 = Avx512F.FusedMultiplyAdd(Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i))), Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i + 16))), Vector512.Load(b + i + 16), s1);
        }
        float sum = Vector512.Sum(s0 + s1);
        for (; i < n; i++)
            sum += Fp16.ToSingle(a[i]) * b[i];
        return sum;
    }

    /// <summary>AVX-512 version of <see cref="BF16Scalar"/>.</summary>
    public static float BF16Avx512(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        Vector512<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            s0 = Avx512F.FusedMultiplyAdd(Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i)), 16).AsSingle(), Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(Vector512.ShiftLeft(Avx512F.ConvertToVector512UInt32(Vector256.Load(a + i + 16)), 16).AsSingle(), Vector512.Load(b + i + 16), s1);
        }
        float sum = Vector512.Sum(s0 + s1);
        for (; i < n; i++)
            sum += HalfConversions.Bf16ToF32(a[i]) * b[i];
        return sum;
    }

    /// <summary>Four tokens of <see cref="F16Avx512"/>, bit for bit (each weight converted once).</summary>
    public static void F16x4Avx512(byte* w, byte* x, long xStride, int n, float* y, long yStride)
        => Half16x4Avx512<HalfWeights>(w, x, xStride, n, y, yStride);

    /// <summary>Four tokens of <see cref="BF16Avx512"/>, bit for bit.</summary>
    public static void BF16x4Avx512(byte* w, byte* x, long xStride, int n, float* y, long yStride)
        => Half16x4Avx512<BFloat16Weights>(w, x, xStride, n, y, yStride);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Half16x4Avx512<T>(byte* w, byte* x, long xStride, int n, float* y, long yStride) where T : IHalfWeights
    {
        ushort* a = (ushort*)w;
        float* b0 = (float*)x, b1 = (float*)(x + xStride), b2 = (float*)(x + 2 * xStride), b3 = (float*)(x + 3 * xStride);
        Vector512<float> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            Vector512<float> w0 = T.Load16(a + i), w1 = T.Load16(a + i + 16);
            s00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b0 + i), s00);
            s01 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b0 + i + 16), s01);
            s10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b1 + i), s10);
            s11 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b1 + i + 16), s11);
            s20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b2 + i), s20);
            s21 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b2 + i + 16), s21);
            s30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(b3 + i), s30);
            s31 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(b3 + i + 16), s31);
        }
        float y0 = Vector512.Sum(s00 + s01), y1 = Vector512.Sum(s10 + s11), y2 = Vector512.Sum(s20 + s21), y3 = Vector512.Sum(s30 + s31);
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
}
