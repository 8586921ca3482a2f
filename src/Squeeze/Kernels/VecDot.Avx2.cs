using Squeeze.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

// 256-bit versions (AVX2 + FMA, and AVX-VNNI where present). Integer parts are exact, so they equal the scalar
// references up to the order of the f32 sums. Callers check Avx2.IsSupported && Fma.IsSupported (VecDot.For does).
internal static unsafe partial class VecDot
{
    /// <summary>Σ over 4-byte groups of u[i]·s[i] (u unsigned, s signed) as 8 int32 lanes (lanes 0-3: bytes 0-15).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotU8(Vector256<byte> u, Vector256<sbyte> s)
    {
        if (AvxVnni.IsSupported)
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, s);
        // maddubs cannot saturate here: |u| ≤ 128 and |s| ≤ 127 give |pair| ≤ 32512
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256.Create((short)1));
    }

    /// <summary>Signed · signed bytes via the sign trick: |w| · sign(x, w).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotI8(Vector256<sbyte> w, Vector256<sbyte> x)
        => DotU8(Avx2.Abs(w), Avx2.Sign(x, w));

    /// <summary>acc + Σ pairs of (Σ pairs of u·s) · scale: per-16-bit-lane scales on the pairwise byte products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ScaledDotU8(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s, Vector256<short> scale)
    {
        Vector256<short> p = Avx2.MultiplyAddAdjacent(u, s); // |p| ≤ 2·63·127: no saturation for ≤ 6-bit u
        if (AvxVnni.IsSupported)
            return AvxVnni.MultiplyWideningAndAdd(acc, p, scale);
        return acc + Avx2.MultiplyAddAdjacent(p, scale);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c)
        => Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    /// <summary>A super-block's 16 int16 scales (lanes 0-15) as two vectors whose 128-bit halves both hold 8 of them
    /// (Low: scales 0-7, High: 8-15), for <see cref="ScalePair"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<byte> Low, Vector256<byte> High) ScaleHalves(Vector256<short> scales)
        => (Avx2.Permute2x128(scales, scales, 0x00).AsByte(), Avx2.Permute2x128(scales, scales, 0x11).AsByte());

    /// <summary>Scales 2i and 2i + 1 of a <see cref="ScaleHalves"/> half (i &lt; 4): the first in the int16 lanes for
    /// bytes 0-15, the second for bytes 16-31; one byte shuffle.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> ScalePair(Vector256<byte> half, int i)
        => Avx2.Shuffle(half, Vector256.Create(Vector128.Create((short)((4 * i + 1) << 8 | 4 * i)), Vector128.Create((short)((4 * i + 3) << 8 | (4 * i + 2)))).AsByte()).AsInt16();

    /// <summary>32 nibbles from 16 bytes: low nibbles as bytes 0-15, high nibbles as bytes 16-31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles32(byte* p)
    {
        Vector128<byte> raw = Vector128.Load(p);
        var mask = Vector128.Create((byte)0x0F);
        return Vector256.Create(raw & mask, Vector128.ShiftRightLogical(raw.AsUInt16(), 4).AsByte() & mask);
    }

    /// <summary>Byte i = 0xFF when bit i of <paramref name="bits"/> is set, else 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> BitsToBytes(uint bits)
    {
        Vector256<byte> spread = Avx2.Shuffle(Vector256.Create(bits).AsByte(), Vector256.Create(
            (byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        var bit = Vector256.Create(0x8040201008040201ul).AsByte();
        return Vector256.Equals(spread & bit, bit);
    }

    /// <summary>The f16 scales at the start of 8 consecutive blocks of <paramref name="stride"/> bytes, as f32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> HalfScales8(byte* first, int stride)
    {
        // eight scalar loads: cheaper than vpgatherdd on the AMD cores measured
        Vector128<ushort> h = Vector128.Create(
            *(ushort*)first, *(ushort*)(first + stride), *(ushort*)(first + 2 * stride), *(ushort*)(first + 3 * stride),
            *(ushort*)(first + 4 * stride), *(ushort*)(first + 5 * stride), *(ushort*)(first + 6 * stride), *(ushort*)(first + 7 * stride));
        return Fp16.ToSingle(Avx2.ConvertToVector256Int32(h).AsUInt32());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Lane(Vector256<float> v, int i) => Avx2.PermuteVar8x32(v, Vector256.Create(i));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Srl16(Vector256<byte> v, int count) => Vector256.ShiftRightLogical(v.AsUInt16(), count).AsByte();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Sll16(Vector256<byte> v, int count) => Vector256.ShiftLeft(v.AsUInt16(), count).AsByte();

    /// <summary>AVX2 version of <see cref="F32Scalar"/> (two 8-lane FMA accumulators; <see cref="F32x4Avx2"/> sums in the same order).</summary>
    public static float F32Avx2(byte* w, byte* x, int n)
    {
        float* a = (float*)w, b = (float*)x;
        Vector256<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            s0 = MulAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
            s1 = MulAdd(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), s1);
        }
        for (; i + 8 <= n; i += 8)
            s0 = MulAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
        float sum = Vector256.Sum(s0 + s1);
        for (; i < n; i++)
            sum += a[i] * b[i];
        return sum;
    }

    /// <summary>AVX2 version of <see cref="F16Scalar"/>.</summary>
    public static float F16Avx2(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        Vector256<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            s0 = MulAdd(Fp16.ToSingle(Avx2.ConvertToVector256Int32(a + i).AsUInt32()), Vector256.Load(b + i), s0);
            s1 = MulAdd(Fp16.ToSingle(Avx2.ConvertToVector256Int32(a + i + 8).AsUInt32()), Vector256.Load(b + i + 8), s1);
        }
        float sum = Vector256.Sum(s0 + s1);
        for (; i < n; i++)
            sum += Fp16.ToSingle(a[i]) * b[i];
        return sum;
    }

    /// <summary>AVX2 version of <see cref="BF16Scalar"/>.</summary>
    public static float BF16Avx2(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        Vector256<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            s0 = MulAdd(Vector256.ShiftLeft(Avx2.ConvertToVector256Int32(a + i), 16).AsSingle(), Vector256.Load(b + i), s0);
            s1 = MulAdd(Vector256.ShiftLeft(Avx2.ConvertToVector256Int32(a + i + 8), 16).AsSingle(), Vector256.Load(b + i + 8), s1);
        }
        float sum = Vector256.Sum(s0 + s1);
        for (; i < n; i++)
            sum += HalfConversions.Bf16ToF32(a[i]) * b[i];
        return sum;
    }

    /// <summary>A 32-value block type whose values decode to signed bytes and whose f16 scale d comes first.</summary>
    private interface ISignedBlock32
    {
        static abstract int Bytes { get; }

        static abstract Vector256<sbyte> Values(byte* block);
    }

    private readonly struct Q4_0Block : ISignedBlock32
    {
        public static int Bytes => Q4_0Bytes;

        public static Vector256<sbyte> Values(byte* block) => Nibbles32(block + Q4_0Qs).AsSByte() - Vector256.Create((sbyte)8);
    }

    /// <summary>A signed block type whose values are also read as unsigned bytes u = value + 2^<see cref="OffsetShift"/>
    /// (one vpdpbusd per block instead of the sign trick's three instructions), or <see cref="OffsetShift"/> 0 where that
    /// cannot be done exactly (Q8_0's u · x would saturate maddubs without VNNI).</summary>
    private interface IOffsetBlock32 : ISignedBlock32
    {
        static abstract int OffsetShift { get; }

        static abstract Vector256<byte> Unsigned(byte* block);
    }

    private readonly struct Q5_0Block : IOffsetBlock32
    {
        public static int Bytes => Q5_0Bytes;

        public static int OffsetShift => 4;

        public static Vector256<sbyte> Values(byte* block) => Unsigned(block).AsSByte() - Vector256.Create((sbyte)16);

        public static Vector256<byte> Unsigned(byte* block)
            => Nibbles32(block + Q5_0Qs) | (BitsToBytes(Unsafe.ReadUnaligned<uint>(block + Q5_0Qh)) & Vector256.Create((byte)16));
    }

    private readonly struct Q8_0Block : IOffsetBlock32
    {
        public static int Bytes => Q8_0Bytes;

        public static int OffsetShift => AvxVnni.IsSupported ? 7 : 0;

        public static Vector256<sbyte> Values(byte* block) => Vector256.Load((sbyte*)(block + Q8_0Qs));

        public static Vector256<byte> Unsigned(byte* block) => Vector256.Load(block + Q8_0Qs) ^ Vector256.Create((byte)0x80);
    }

    private readonly struct IQ4_NLBlock : IOffsetBlock32
    {
        public static int Bytes => IQ4_NLBytes;

        public static int OffsetShift => AvxVnni.IsSupported ? IQ4_NLNibbles.OffsetShift : 0;

        public static Vector256<byte> Unsigned(byte* block) => IQ4_NLNibbles.Unsigned(Nibbles32(block + IQ4_NLQs));

        public static Vector256<sbyte> Values(byte* block)
        {
            Vector128<sbyte> k = Vector128.Create(IQ4_NLValues);
            return Avx2.Shuffle(Vector256.Create(k, k), Nibbles32(block + IQ4_NLQs).AsSByte());
        }
    }

    /// <summary>Lane i = Σ of the 8 lanes of p_i (exact integer sums).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Sum8(Vector256<int> low, Vector256<int> high)
        => Avx2.Permute2x128(low, high, 0x20) + Avx2.Permute2x128(low, high, 0x31);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Hadd(Vector256<int> a, Vector256<int> b) => Avx2.HorizontalAdd(a, b);

    /// <summary>
    /// A 32-value signed block type · Q8_0 (activation rows as <see cref="ActivationRowBytes"/> lays them out). Per group of 8 blocks: the 8 integer block sums are reduced into one vector
    /// (lane i = block i), scaled by the 8 products d_w·d_x and added to a float accumulator; the last nb % 8 blocks add
    /// d_w·d_x·Σ one by one after the accumulator's lanes are summed. <see cref="Q8_0x4Avx2"/> sums in the same order.
    /// The block sums are exact integers however they are formed: here of the unsigned values u (<see cref="IOffsetBlock32"/>)
    /// less the offset times the activation block's stored Σ x.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotSigned32<T>(byte* w, byte* x, int n) where T : IOffsetBlock32
    {
        Vector256<float> acc = default;
        int nb = n / QK, b = 0;
        float* dx = (float*)(x + nb * Q8_0Bytes); // the activation row's scales as f32, then its block sums (see ActivationRowBytes)
        int* sx = (int*)(dx + nb);
        for (; b + 8 <= nb; b += 8, w += 8 * T.Bytes, x += 8 * Q8_0Bytes)
        {
            Vector256<int> h0 = Hadd(Hadd(BlockDot<T>(w, x), BlockDot<T>(w + T.Bytes, x + Q8_0Bytes)),
                Hadd(BlockDot<T>(w + 2 * T.Bytes, x + 2 * Q8_0Bytes), BlockDot<T>(w + 3 * T.Bytes, x + 3 * Q8_0Bytes)));
            Vector256<int> h1 = Hadd(Hadd(BlockDot<T>(w + 4 * T.Bytes, x + 4 * Q8_0Bytes), BlockDot<T>(w + 5 * T.Bytes, x + 5 * Q8_0Bytes)),
                Hadd(BlockDot<T>(w + 6 * T.Bytes, x + 6 * Q8_0Bytes), BlockDot<T>(w + 7 * T.Bytes, x + 7 * Q8_0Bytes)));
            Vector256<int> sums = Sum8(h0, h1);
            if (T.OffsetShift > 0)
                sums -= Vector256.ShiftLeft(Vector256.Load(sx + b), T.OffsetShift);
            Vector256<float> d = HalfScales8(w, T.Bytes) * Vector256.Load(dx + b);
            acc = MulAdd(d, Vector256.ConvertToSingle(sums), acc);
        }
        float sum = Vector256.Sum(acc);
        for (; b < nb; b++, w += T.Bytes, x += Q8_0Bytes)
            sum += H(w) * H(x) * Vector256.Sum(DotI8(T.Values(w), Vector256.Load((sbyte*)(x + Q8_0Qs))));
        return sum;
    }

    /// <summary>One block's partial sums with its activation block: of u · x (the offset left to the caller) when the
    /// type has an offset, else of value · x by the sign trick.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> BlockDot<T>(byte* w, byte* x) where T : IOffsetBlock32
    {
        var xq = Vector256.Load((sbyte*)(x + Q8_0Qs));
        return T.OffsetShift > 0 ? DotU8(T.Unsigned(w), xq) : DotI8(T.Values(w), xq);
    }

    /// <summary>AVX2 version of <see cref="Q4_0Scalar"/>, bit for bit what <see cref="DotSigned32{T}"/> gives (see
    /// <see cref="DotNibblePairs{T, TScales}"/>).</summary>
    public static float Q4_0Avx2(byte* w, byte* x, int n) => DotNibblePairs<Q4_0Nibbles, ScalarHalfScales>(w, x, n);

    /// <summary>Four rows of <see cref="Q4_0Avx2"/> with one activation row (see <see cref="DotNibblePairs4{T, TScales}"/>).</summary>
    public static void Q4_0Rows4Avx2(byte* w, long rowBytes, byte* x, int n, float* y) => DotNibblePairs4<Q4_0Nibbles, ScalarHalfScales>(w, rowBytes, x, n, y);

    /// <summary>AVX2 version of <see cref="IQ4_NLScalar"/>: by pairs of blocks with VNNI (without it u · x would saturate
    /// maddubs), else block by block with the sign trick; bit for bit the same either way.</summary>
    public static float IQ4_NLAvx2(byte* w, byte* x, int n)
        => AvxVnni.IsSupported ? DotNibblePairs<IQ4_NLNibbles, ScalarHalfScales>(w, x, n) : DotSigned32<IQ4_NLBlock>(w, x, n);

    /// <summary>A 32-value block of 18 bytes (f16 d, then 16 bytes of nibbles: values 0-15 low, 16-31 high) whose
    /// nibbles map to unsigned bytes u with value = u − <see cref="OffsetShift"/>'s power of two (IQ4_NL's u reach 241:
    /// exact with VNNI only).</summary>
    private interface INibbleBlock
    {
        /// <summary>log2 of the offset: value = u − 2^OffsetShift.</summary>
        static abstract int OffsetShift { get; }

        static abstract Vector256<byte> Unsigned(Vector256<byte> nibbles);

        static abstract Vector256<sbyte> Values(byte* block);
    }

    private readonly struct Q4_0Nibbles : INibbleBlock
    {
        public static int OffsetShift => 3;

        public static Vector256<byte> Unsigned(Vector256<byte> nibbles) => nibbles;

        public static Vector256<sbyte> Values(byte* block) => Q4_0Block.Values(block);
    }

    private readonly struct IQ4_NLNibbles : INibbleBlock
    {
        public static int OffsetShift => 7;

        public static Vector256<byte> Unsigned(Vector256<byte> nibbles)
        {
            Vector128<byte> k = Vector128.Create(IQ4_NLValues).AsByte() ^ Vector128.Create((byte)0x80); // value + 128
            return Avx2.Shuffle(Vector256.Create(k, k), nibbles);
        }

        public static Vector256<sbyte> Values(byte* block) => IQ4_NLBlock.Values(block);
    }

    /// <summary>The f16 d of 8 blocks <c>stride</c> bytes apart, as f32.</summary>
    private interface IHalfScales8
    {
        static abstract Vector256<float> Load(byte* first, int stride);
    }

    private readonly struct ScalarHalfScales : IHalfScales8
    {
        public static Vector256<float> Load(byte* first, int stride) => HalfScales8(first, stride);
    }

    /// <summary>
    /// <c>Σ_blocks d_w·d_x · Σ value·x</c> of an 18-byte nibble block type with Q8_0 activations, bit for bit what
    /// <see cref="DotSigned32{T}"/> gives (the same integer block sums, the same f32 operations in the same order), with
    /// fewer instructions per block: two blocks' nibbles share one vector (block k in the low 128 bits, block k + 1 in the
    /// high), multiplied as unsigned bytes with the activations, and the offset times Σ x of each block (the activation
    /// row's stored sums) subtracted from the block sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotNibblePairs<T, TScales>(byte* w, byte* x, int n) where T : INibbleBlock where TScales : IHalfScales8
    {
        const int Bytes = 18;
        Vector256<float> acc = default;
        int nb = n / QK, b = 0;
        float* dx = (float*)(x + nb * Q8_0Bytes); // the activation row's scales as f32, then its block sums (see ActivationRowBytes)
        int* sx = (int*)(dx + nb);
        for (; b + 8 <= nb; b += 8, w += 8 * Bytes, x += 8 * Q8_0Bytes)
        {
            var (l0, h0) = XPair(x);
            var (l1, h1) = XPair(x + 2 * Q8_0Bytes);
            var (l2, h2) = XPair(x + 4 * Q8_0Bytes);
            var (l3, h3) = XPair(x + 6 * Q8_0Bytes);
            acc = NibbleGroup<T, TScales>(w, l0, h0, l1, h1, l2, h2, l3, h3, Vector256.ShiftLeft(Vector256.Load(sx + b), T.OffsetShift), Vector256.Load(dx + b), acc);
        }
        float sum = Vector256.Sum(acc);
        for (; b < nb; b++, w += Bytes, x += Q8_0Bytes)
            sum += H(w) * H(x) * Vector256.Sum(DotI8(T.Values(w), Vector256.Load((sbyte*)(x + Q8_0Qs))));
        return sum;
    }

    /// <summary>
    /// Four rows (<paramref name="rowBytes"/> apart) of <see cref="DotNibblePairs{T, TScales}"/> with one activation row:
    /// y[r] bit for bit what that kernel gives row r, the activation vectors and scales loaded once for the four rows
    /// (a decode step's product reads each weight once, so the activation loads are what it can share).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotNibblePairs4<T, TScales>(byte* w, long rowBytes, byte* x, int n, float* y) where T : INibbleBlock where TScales : IHalfScales8
    {
        const int Bytes = 18;
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        int nb = n / QK, b = 0;
        float* dx = (float*)(x + nb * Q8_0Bytes);
        int* sx = (int*)(dx + nb);
        byte* w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes;
        byte* xb = x;
        for (; b + 8 <= nb; b += 8, w0 += 8 * Bytes, w1 += 8 * Bytes, w2 += 8 * Bytes, w3 += 8 * Bytes, xb += 8 * Q8_0Bytes)
        {
            var (l0, h0) = XPair(xb);
            var (l1, h1) = XPair(xb + 2 * Q8_0Bytes);
            var (l2, h2) = XPair(xb + 4 * Q8_0Bytes);
            var (l3, h3) = XPair(xb + 6 * Q8_0Bytes);
            Vector256<int> offset = Vector256.ShiftLeft(Vector256.Load(sx + b), T.OffsetShift);
            Vector256<float> scale = Vector256.Load(dx + b);
            acc0 = NibbleGroup<T, TScales>(w0, l0, h0, l1, h1, l2, h2, l3, h3, offset, scale, acc0);
            acc1 = NibbleGroup<T, TScales>(w1, l0, h0, l1, h1, l2, h2, l3, h3, offset, scale, acc1);
            acc2 = NibbleGroup<T, TScales>(w2, l0, h0, l1, h1, l2, h2, l3, h3, offset, scale, acc2);
            acc3 = NibbleGroup<T, TScales>(w3, l0, h0, l1, h1, l2, h2, l3, h3, offset, scale, acc3);
        }
        float s0 = Vector256.Sum(acc0), s1 = Vector256.Sum(acc1), s2 = Vector256.Sum(acc2), s3 = Vector256.Sum(acc3);
        for (; b < nb; b++, w0 += Bytes, w1 += Bytes, w2 += Bytes, w3 += Bytes, xb += Q8_0Bytes)
        {
            var xq = Vector256.Load((sbyte*)(xb + Q8_0Qs));
            float hx = H(xb);
            s0 += H(w0) * hx * Vector256.Sum(DotI8(T.Values(w0), xq));
            s1 += H(w1) * hx * Vector256.Sum(DotI8(T.Values(w1), xq));
            s2 += H(w2) * hx * Vector256.Sum(DotI8(T.Values(w2), xq));
            s3 += H(w3) * hx * Vector256.Sum(DotI8(T.Values(w3), xq));
        }
        y[0] = s0;
        y[1] = s1;
        y[2] = s2;
        y[3] = s3;
    }

    /// <summary>The activation halves two consecutive blocks' nibble vector multiplies (see <see cref="NibblePair{T}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<sbyte> Low, Vector256<sbyte> High) XPair(byte* x)
        => (Vector256.Create(Vector128.Load((sbyte*)(x + Q8_0Qs)), Vector128.Load((sbyte*)(x + Q8_0Bytes + Q8_0Qs))),
            Vector256.Create(Vector128.Load((sbyte*)(x + Q8_0Qs + 16)), Vector128.Load((sbyte*)(x + Q8_0Bytes + Q8_0Qs + 16))));

    /// <summary>One row's group of 8 blocks, as one iteration of <see cref="DotNibblePairs{T, TScales}"/>'s loop.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> NibbleGroup<T, TScales>(byte* w, Vector256<sbyte> l0, Vector256<sbyte> h0, Vector256<sbyte> l1, Vector256<sbyte> h1,
        Vector256<sbyte> l2, Vector256<sbyte> h2, Vector256<sbyte> l3, Vector256<sbyte> h3, Vector256<int> offset, Vector256<float> scale, Vector256<float> acc)
        where T : INibbleBlock where TScales : IHalfScales8
    {
        const int Bytes = 18, Qs = 2;
        // lanes of Hadd(Hadd(p01, p23), Hadd(p45, p67)): blocks 0, 2, 4, 6 | 1, 3, 5, 7
        Vector256<int> h = Hadd(Hadd(NibblePair<T>(w + Qs, l0, h0), NibblePair<T>(w + 2 * Bytes + Qs, l1, h1)),
            Hadd(NibblePair<T>(w + 4 * Bytes + Qs, l2, h2), NibblePair<T>(w + 6 * Bytes + Qs, l3, h3)));
        Vector256<int> sums = Avx2.PermuteVar8x32(h, Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)) - offset;
        return MulAdd(TScales.Load(w, Bytes) * scale, Vector256.ConvertToSingle(sums), acc);
    }

    /// <summary>Σ u · x of two consecutive blocks' nibbles (16 bytes each, 18 apart) with their Q8_0 activation blocks'
    /// halves (<see cref="XPair"/>), as 8 int32 lanes: lanes 0-3 the first block's partial sums, lanes 4-7 the second's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> NibblePair<T>(byte* qs, Vector256<sbyte> xLow, Vector256<sbyte> xHigh) where T : INibbleBlock
    {
        var mask = Vector256.Create((byte)0x0F);
        Vector256<byte> q = Vector256.Create(Vector128.Load(qs), Vector128.Load(qs + 18));
        Vector256<byte> low = T.Unsigned(q & mask), high = T.Unsigned(Srl16(q, 4) & mask);
        if (AvxVnni.IsSupported)
            return AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, low, xLow), high, xHigh);
        return DotU8(low, xLow) + DotU8(high, xHigh);
    }

    /// <summary>AVX2 version of <see cref="Q5_0Scalar"/>.</summary>
    public static float Q5_0Avx2(byte* w, byte* x, int n) => DotSigned32<Q5_0Block>(w, x, n);

    /// <summary>AVX2 version of <see cref="Q8_0Scalar"/>.</summary>
    public static float Q8_0Avx2(byte* w, byte* x, int n) => DotSigned32<Q8_0Block>(w, x, n);


    /// <summary>A 32-value block type with f16 d and m first, whose values decode to unsigned bytes (value = d·q + m).</summary>
    private interface IUnsignedBlock32
    {
        static abstract int Bytes { get; }

        static abstract Vector256<byte> Values(byte* block);
    }

    private readonly struct Q4_1Block : IUnsignedBlock32
    {
        public static int Bytes => Q4_1Bytes;

        public static Vector256<byte> Values(byte* block) => Nibbles32(block + Q4_1Qs);
    }

    private readonly struct Q5_1Block : IUnsignedBlock32
    {
        public static int Bytes => Q5_1Bytes;

        public static Vector256<byte> Values(byte* block)
            => Nibbles32(block + Q5_1Qs) | (BitsToBytes(Unsafe.ReadUnaligned<uint>(block + Q5_1Qh)) & Vector256.Create((byte)16));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotU8At<T>(byte* w, byte* x, int i) where T : IUnsignedBlock32
        => DotU8(T.Values(w + i * T.Bytes), Vector256.Load((sbyte*)(x + i * Q8_1Bytes + Q8_1Qs)));

    /// <summary>
    /// A 32-value unsigned block type · Q8_1: Σ_blocks d_w·d_x · Σ q_w·q_x + m_w·s_x. Per group of 8 blocks the block sums
    /// are reduced into one vector (lane i = block i) and the 8 scales of each kind converted at once; the last nb % 8
    /// blocks are added one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotUnsigned32<T>(byte* w, byte* x, int n) where T : IUnsignedBlock32
    {
        Vector256<float> acc = default, accm = default;
        int nb = n / QK, b = 0;
        for (; b + 8 <= nb; b += 8, w += 8 * T.Bytes, x += 8 * Q8_1Bytes)
        {
            Vector256<int> h0 = Hadd(Hadd(DotU8At<T>(w, x, 0), DotU8At<T>(w, x, 1)), Hadd(DotU8At<T>(w, x, 2), DotU8At<T>(w, x, 3)));
            Vector256<int> h1 = Hadd(Hadd(DotU8At<T>(w, x, 4), DotU8At<T>(w, x, 5)), Hadd(DotU8At<T>(w, x, 6), DotU8At<T>(w, x, 7)));
            Vector256<float> d = HalfScales8(w, T.Bytes) * HalfScales8(x, Q8_1Bytes);
            acc = MulAdd(d, Vector256.ConvertToSingle(Sum8(h0, h1)), acc);
            accm = MulAdd(HalfScales8(w + 2, T.Bytes), HalfScales8(x + Q8_1S, Q8_1Bytes), accm); // m_w · s_x
        }
        float sum = Vector256.Sum(acc) + Vector256.Sum(accm);
        for (; b < nb; b++, w += T.Bytes, x += Q8_1Bytes)
            sum += H(w) * H(x) * Vector256.Sum(DotU8At<T>(w, x, 0)) + H(w + 2) * H(x + Q8_1S);
        return sum;
    }

    /// <summary>AVX2 version of <see cref="Q4_1Scalar"/>.</summary>
    public static float Q4_1Avx2(byte* w, byte* x, int n) => DotUnsigned32<Q4_1Block>(w, x, n);

    /// <summary>AVX2 version of <see cref="Q5_1Scalar"/>.</summary>
    public static float Q5_1Avx2(byte* w, byte* x, int n) => DotUnsigned32<Q5_1Block>(w, x, n);

    /// <summary>AVX2 version of <see cref="Q2_KScalar"/>.</summary>
    public static float Q2_KAvx2(byte* w, byte* x, int n)
    {
        Vector256<float> acc = default;
        float accm = 0;
        var three = Vector256.Create((byte)3);
        for (int b = 0; b < n / QK_K; b++, w += Q2_KBytes, x += Q8_KBytes)
        {
            Vector128<byte> sc = Vector128.Load(w);
            Vector256<short> mins = Avx2.ConvertToVector256Int16(Vector128.ShiftRightLogical(sc.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F));
            var (low, high) = ScaleHalves(Avx2.ConvertToVector256Int16(sc & Vector128.Create((byte)0x0F)));
            int summs = Vector256.Sum(Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8_KBsums)), mins));
            float dy = *(float*)x;
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            Vector256<int> sumi = default;
            for (int chunk = 0; chunk < 2; chunk++)
            {
                Vector256<byte> q = Vector256.Load(w + Q2_KQs + 32 * chunk);
                Vector256<byte> half = chunk == 0 ? low : high;
                for (int j = 0; j < 4; j++, q8 += 32)
                    sumi = ScaledDotU8(sumi, Srl16(q, 2 * j) & three, Vector256.Load(q8), ScalePair(half, j));
            }
            acc = MulAdd(Vector256.Create(dy * H(w + Q2_KD)), Vector256.ConvertToSingle(sumi), acc);
            accm += dy * H(w + Q2_KDmin) * summs;
        }
        return Vector256.Sum(acc) - accm;
    }

    /// <summary>pshufb masks picking int16 scales 2j (bytes 0-15) and 2j+1 (bytes 16-31) from 8 scales in both halves.</summary>
    private static ReadOnlySpan<byte> PairShuffle => [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15];

    /// <summary>The 16 six-bit scales of a Q3_K block, less 32 (signed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<sbyte> ScalesQ3_K(byte* packed)
    {
        const uint kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
        uint a0 = Unsafe.ReadUnaligned<uint>(packed), a1 = Unsafe.ReadUnaligned<uint>(packed + 4), tmp = Unsafe.ReadUnaligned<uint>(packed + 8);
        return Vector128.Create(
            (a0 & kmask2) | ((tmp & kmask1) << 4),
            (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4),
            ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4),
            ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)).AsSByte() - Vector128.Create((sbyte)32);
    }

    /// <summary>AVX2 version of <see cref="Q3_KScalar"/> (unsigned q_w + 4·high bit, minus 4·Σ sc·bsums).</summary>
    public static float Q3_KAvx2(byte* w, byte* x, int n)
    {
        Vector256<float> acc = default;
        var three = Vector256.Create((byte)3);
        var four = Vector256.Create((byte)4);
        fixed (byte* shuffle = PairShuffle)
        {
            for (int b = 0; b < n / QK_K; b++, w += Q3_KBytes, x += Q8_KBytes)
            {
                Vector256<short> sc16 = Avx2.ConvertToVector256Int16(ScalesQ3_K(w + Q3_KScales));
                Vector256<int> offset = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8_KBsums)), sc16);
                Vector256<byte> low8 = Avx2.Permute4x64(sc16.AsInt64(), 0x44).AsByte();  // scales 0-7 in both halves
                Vector256<byte> high8 = Avx2.Permute4x64(sc16.AsInt64(), 0xEE).AsByte(); // scales 8-15
                Vector256<byte> hm = Vector256.Load(w);
                sbyte* q8 = (sbyte*)(x + Q8_KQs);
                Vector256<int> sumi = default;
                for (int chunk = 0; chunk < 2; chunk++)
                {
                    Vector256<byte> q = Vector256.Load(w + Q3_KQs + 32 * chunk);
                    Vector256<byte> scales = chunk == 0 ? low8 : high8;
                    for (int j = 0; j < 4; j++, q8 += 32)
                    {
                        var bit = Vector256.Create((byte)(1 << (4 * chunk + j)));
                        Vector256<byte> u = (Srl16(q, 2 * j) & three) | (Vector256.Equals(hm & bit, bit) & four);
                        Vector256<short> pair = Avx2.Shuffle(scales, Vector256.Load(shuffle + 32 * j)).AsInt16();
                        sumi = ScaledDotU8(sumi, u, Vector256.Load(q8), pair);
                    }
                }
                sumi -= Vector256.ShiftLeft(offset, 2);
                acc = MulAdd(Vector256.Create(H(w + Q3_KD) * *(float*)x), Vector256.ConvertToSingle(sumi), acc);
            }
        }
        return Vector256.Sum(acc);
    }

    /// <summary>The 8 six-bit scales of a Q4_K / Q5_K block as the bytes of the result, and
    /// Σ_j m[j]·(bsums[2j] + bsums[2j+1]) (the min term, exact) in <paramref name="summs"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong ScalesMinsK4(byte* packed, short* bsums, out int summs)
    {
        ulong scales = UnpackScalesK4(packed, out ulong minBytes);
        Vector128<byte> mins = Vector128.Create(minBytes, 0).AsByte();
        Vector256<short> mins16 = Avx2.ConvertToVector256Int16(Sse2.UnpackLow(mins, mins)); // m0 m0 m1 m1 … m7 m7
        summs = Vector256.Sum(Avx2.MultiplyAddAdjacent(Vector256.Load(bsums), mins16));
        return scales;
    }

    /// <summary>The 8 six-bit scales (result) and 8 six-bit mins (<paramref name="mins"/>) of a Q4_K / Q5_K block, one per byte.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong UnpackScalesK4(byte* packed, out ulong mins)
    {
        const uint kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
        uint u0 = Unsafe.ReadUnaligned<uint>(packed), u1 = Unsafe.ReadUnaligned<uint>(packed + 4), u2 = Unsafe.ReadUnaligned<uint>(packed + 8);
        uint scales0 = u0 & kmask1;
        uint scales1 = (u2 & kmask2) | (((u0 >> 6) & kmask3) << 4);
        uint mins0 = u1 & kmask1;
        uint mins1 = ((u2 >> 4) & kmask2) | (((u1 >> 6) & kmask3) << 4);
        mins = mins0 | ((ulong)mins1 << 32);
        return scales0 | ((ulong)scales1 << 32);
    }

    /// <summary>The 8 scales of <see cref="ScalesMinsK4"/> as int16 lanes 0-7 of both 128-bit halves, for <see cref="ScaleK4"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> ScalesK4(ulong scales)
    {
        Vector128<byte> words = Sse41.ConvertToVector128Int16(Vector128.CreateScalar(scales).AsByte()).AsByte();
        return Vector256.Create(words, words);
    }

    /// <summary>Scale j of <see cref="ScalesK4"/> in every int16 lane: one byte shuffle.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> ScaleK4(Vector256<byte> scales, int j)
        => Avx2.Shuffle(scales, Vector256.Create((short)((2 * j + 1) << 8 | 2 * j)).AsByte()).AsInt16();

    /// <summary>AVX2 version of <see cref="Q4_KScalar"/>.</summary>
    public static float Q4_KAvx2(byte* w, byte* x, int n)
    {
        Vector256<float> acc = default;
        float accm = 0;
        var mask = Vector256.Create((byte)0x0F);
        for (int b = 0; b < n / QK_K; b++, w += Q4_KBytes, x += Q8_KBytes)
        {
            Vector256<byte> scales = ScalesK4(ScalesMinsK4(w + Q4_KScales, (short*)(x + Q8_KBsums), out int summs));
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            Vector256<int> sumi = default;
            for (int j = 0; j < 4; j++, q8 += 64)
            {
                Vector256<byte> q = Vector256.Load(w + Q4_KQs + 32 * j);
                sumi = ScaledDotU8(sumi, q & mask, Vector256.Load(q8), ScaleK4(scales, 2 * j));
                sumi = ScaledDotU8(sumi, Srl16(q, 4) & mask, Vector256.Load(q8 + 32), ScaleK4(scales, 2 * j + 1));
            }
            float dy = *(float*)x;
            acc = MulAdd(Vector256.Create(H(w) * dy), Vector256.ConvertToSingle(sumi), acc);
            accm += H(w + Q4_KDmin) * dy * summs;
        }
        return Vector256.Sum(acc) - accm;
    }

    /// <summary>AVX2 version of <see cref="Q5_KScalar"/>.</summary>
    public static float Q5_KAvx2(byte* w, byte* x, int n)
    {
        Vector256<float> acc = default;
        float accm = 0;
        var mask = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)16);
        for (int b = 0; b < n / QK_K; b++, w += Q5_KBytes, x += Q8_KBytes)
        {
            Vector256<byte> scales = ScalesK4(ScalesMinsK4(w + Q5_KScales, (short*)(x + Q8_KBsums), out int summs));
            Vector256<byte> qh = Vector256.Load(w + Q5_KQh);
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            Vector256<int> sumi = default;
            for (int j = 0; j < 4; j++, q8 += 64)
            {
                Vector256<byte> q = Vector256.Load(w + Q5_KQs + 32 * j);
                var b1 = Vector256.Create((byte)(1 << (2 * j)));
                var b2 = Vector256.Create((byte)(2 << (2 * j)));
                Vector256<byte> lo = (q & mask) | (Vector256.Equals(qh & b1, b1) & sixteen);
                Vector256<byte> hi = (Srl16(q, 4) & mask) | (Vector256.Equals(qh & b2, b2) & sixteen);
                sumi = ScaledDotU8(sumi, lo, Vector256.Load(q8), ScaleK4(scales, 2 * j));
                sumi = ScaledDotU8(sumi, hi, Vector256.Load(q8 + 32), ScaleK4(scales, 2 * j + 1));
            }
            float dy = *(float*)x;
            acc = MulAdd(Vector256.Create(H(w) * dy), Vector256.ConvertToSingle(sumi), acc);
            accm += H(w + Q5_KDmin) * dy * summs;
        }
        return Vector256.Sum(acc) - accm;
    }

    /// <summary>AVX2 version of <see cref="Q6_KScalar"/> (unsigned 6-bit q_w, minus 32·Σ sc·bsums).</summary>
    public static float Q6_KAvx2(byte* w, byte* x, int n)
    {
        Vector256<float> acc = default;
        var mask = Vector256.Create((byte)0x0F);
        var two = Vector256.Create((byte)0x30);
        for (int b = 0; b < n / QK_K; b++, w += Q6_KBytes, x += Q8_KBytes)
        {
            sbyte* sc = (sbyte*)(w + Q6_KScales);
            Vector256<short> sc16 = Avx2.ConvertToVector256Int16(Vector128.Load(sc));
            Vector256<int> offset = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8_KBsums)), sc16);
            var (low, high) = ScaleHalves(sc16);
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            Vector256<int> sumi = default;
            for (int chunk = 0; chunk < 2; chunk++, q8 += 128)
            {
                Vector256<byte> half = chunk == 0 ? low : high;
                Vector256<byte> ql0 = Vector256.Load(w + 64 * chunk);
                Vector256<byte> ql1 = Vector256.Load(w + 64 * chunk + 32);
                Vector256<byte> qh = Vector256.Load(w + Q6_KQh + 32 * chunk);
                Vector256<byte> u0 = (ql0 & mask) | (Sll16(qh, 4) & two);
                Vector256<byte> u1 = (ql1 & mask) | (Sll16(qh, 2) & two);
                Vector256<byte> u2 = (Srl16(ql0, 4) & mask) | (qh & two);
                Vector256<byte> u3 = (Srl16(ql1, 4) & mask) | (Srl16(qh, 2) & two);
                sumi = ScaledDotU8(sumi, u0, Vector256.Load(q8), ScalePair(half, 0));
                sumi = ScaledDotU8(sumi, u1, Vector256.Load(q8 + 32), ScalePair(half, 1));
                sumi = ScaledDotU8(sumi, u2, Vector256.Load(q8 + 64), ScalePair(half, 2));
                sumi = ScaledDotU8(sumi, u3, Vector256.Load(q8 + 96), ScalePair(half, 3));
            }
            sumi -= Vector256.ShiftLeft(offset, 5);
            acc = MulAdd(Vector256.Create(H(w + Q6_KD) * *(float*)x), Vector256.ConvertToSingle(sumi), acc);
        }
        return Vector256.Sum(acc);
    }
}
