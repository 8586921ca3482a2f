using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Tensors;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

// Prompt products of the 32-value signed block types (Q4_0, Q5_0, Q8_0, IQ4_NL) over stripes of 8 weight rows
// interleaved 4 bytes at a time, so one vpdpbusd multiplies 4 values of 8 rows with one broadcast activation dword and
// leaves each row's block sum in its own lane: no horizontal sums per block, and each loaded activation dword serves 8
// rows, each loaded weight vector 4 tokens. Every output is bit for bit what DotSigned32 (the one-token AVX2 kernel)
// gives: the same integer block sums, the same f32 operations in the same order, only computed for 8 rows side by side.
internal static unsafe partial class VecDot
{
    /// <summary>Rows in one interleaved stripe (one row per 32-bit lane of a 256-bit vector).</summary>
    public const int StripeRows = 8;

    /// <summary>Bytes of one block of a stripe: 8 vectors (value dword k of rows 0-7, as q + 128 unsigned) then the 8
    /// rows' d as f32.</summary>
    public const int StripeBlockBytes = 8 * 32 + 8 * 4;

    // The activation offset that turns q + 128 back into q: Σ (q + 128)·x − 128·Σ x = Σ q·x.
    private const int StripeOffset = 128;

    /// <summary>True when <see cref="PackStripe"/> and the interleaved kernels run <paramref name="type"/> at
    /// <paramref name="level"/>: the AVX-512 level, with AVX-VNNI for the 32-value block types (Q4_0, Q5_0, Q8_0, IQ4_NL),
    /// with AVX-512BW for the k-quants (<see cref="KStripeRows"/>-row stripes). The 32-value kernels are 256-bit (.NET exposes
    /// vpdpbusd at 256 bits only); tying them to the AVX-512 level keeps the four-token AVX2 kernels in use, and
    /// self-tested, under <c>DOTNET_EnableAVX512=0</c>.</summary>
    public static bool Interleaves(GgmlType type, SimdLevel level)
        => level == SimdLevel.Avx512 && (IsKQuant(type) ? Avx512BW.IsSupported
            : AvxVnni.IsSupported && type is GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 or GgmlType.IQ4_NL);

    /// <summary>Packs <see cref="StripeRowsOf"/> rows of <paramref name="type"/> (<paramref name="rowBytes"/> apart) into
    /// <see cref="StripeBytes"/> bytes. The 32-value block types: per block, vector k holds value dword k (values 4k ..
    /// 4k+3) of rows 0-7 as q + 128, then the rows' d as f32 (exact); the k-quants as <see cref="PackKStripe"/> lays them out.</summary>
    public static void PackStripe(GgmlType type, byte* w, long rowBytes, int columns, byte* destination)
    {
        switch (type)
        {
            case GgmlType.Q4_0: PackStripe<Q4_0Block>(w, rowBytes, columns, destination); break;
            case GgmlType.Q5_0: PackStripe<Q5_0Block>(w, rowBytes, columns, destination); break;
            case GgmlType.Q8_0: PackStripe<Q8_0Block>(w, rowBytes, columns, destination); break;
            case GgmlType.IQ4_NL: PackStripe<IQ4_NLBlock>(w, rowBytes, columns, destination); break;
            case GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K: PackKStripe(type, w, rowBytes, columns, destination); break;
            default: throw new NotSupportedException($"{type} rows are not packed into stripes");
        }
    }

    /// <summary>y[t · yStride + r] = dot(row r, token t) for the rows of a stripe packed by <see cref="PackStripe"/> and
    /// <paramref name="tokens"/> activation rows (<see cref="ActivationRowBytes"/> each, <paramref name="xStride"/> apart),
    /// bit for bit what the one-token kernel gives.</summary>
    public static void StripeProducts(GgmlType type, byte* stripe, int columns, byte* x, long xStride, int tokens, float* y, long yStride)
    {
        int t = 0;
        if (IsKQuant(type))
        {
            for (; t < tokens; t += 4)
                KStripeProduct4(stripe, columns / QK_K, OffsetShift(type), x + t * xStride, xStride, Math.Min(4, tokens - t), y + t * yStride, yStride);
            return;
        }
        int nb = columns / QK;
        for (; t + 4 <= tokens; t += 4)
            StripeProduct4(stripe, nb, x + t * xStride, xStride, y + t * yStride, yStride);
        for (; t < tokens; t++)
            StripeProduct1(stripe, nb, x + t * xStride, y + t * yStride);
    }

    private static void PackStripe<T>(byte* w, long rowBytes, int columns, byte* destination) where T : ISignedBlock32
    {
        var offset = Vector256.Create((byte)StripeOffset);
        for (int b = 0; b < columns / QK; b++, destination += StripeBlockBytes)
        {
            // rows r as 8 dwords each, transposed: vector k = dword k of every row
            Transpose(Row<T>(w, b, offset), Row<T>(w + rowBytes, b, offset), Row<T>(w + 2 * rowBytes, b, offset), Row<T>(w + 3 * rowBytes, b, offset),
                Row<T>(w + 4 * rowBytes, b, offset), Row<T>(w + 5 * rowBytes, b, offset), Row<T>(w + 6 * rowBytes, b, offset), Row<T>(w + 7 * rowBytes, b, offset),
                (Vector256<int>*)destination);
            float* d = (float*)(destination + 256);
            for (int r = 0; r < StripeRows; r++)
                d[r] = H(w + r * rowBytes + b * T.Bytes);
        }
    }

    /// <summary>An 8 × 8 dword transpose: <paramref name="columns"/>[k] = dword k of r0 .. r7 (rows 0-7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose(Vector256<int> r0, Vector256<int> r1, Vector256<int> r2, Vector256<int> r3,
        Vector256<int> r4, Vector256<int> r5, Vector256<int> r6, Vector256<int> r7, Vector256<int>* columns)
    {
        // unaligned stores: columns may point into a packed stripe
        Vector256<int> t0 = Avx2.UnpackLow(r0, r1), t1 = Avx2.UnpackHigh(r0, r1), t2 = Avx2.UnpackLow(r2, r3), t3 = Avx2.UnpackHigh(r2, r3);
        Vector256<int> t4 = Avx2.UnpackLow(r4, r5), t5 = Avx2.UnpackHigh(r4, r5), t6 = Avx2.UnpackLow(r6, r7), t7 = Avx2.UnpackHigh(r6, r7);
        Vector256<long> u0 = Avx2.UnpackLow(t0.AsInt64(), t2.AsInt64()), u1 = Avx2.UnpackHigh(t0.AsInt64(), t2.AsInt64());
        Vector256<long> u2 = Avx2.UnpackLow(t1.AsInt64(), t3.AsInt64()), u3 = Avx2.UnpackHigh(t1.AsInt64(), t3.AsInt64());
        Vector256<long> u4 = Avx2.UnpackLow(t4.AsInt64(), t6.AsInt64()), u5 = Avx2.UnpackHigh(t4.AsInt64(), t6.AsInt64());
        Vector256<long> u6 = Avx2.UnpackLow(t5.AsInt64(), t7.AsInt64()), u7 = Avx2.UnpackHigh(t5.AsInt64(), t7.AsInt64());
        // u0: dword 0 of rows 0-3 | dword 4 of rows 0-3; u4: the same for rows 4-7 (u1, u5: dwords 1, 5; u2, u6: 2, 6; u3, u7: 3, 7)
        Avx2.Permute2x128(u0, u4, 0x20).AsInt32().Store((int*)(columns + 0));
        Avx2.Permute2x128(u1, u5, 0x20).AsInt32().Store((int*)(columns + 1));
        Avx2.Permute2x128(u2, u6, 0x20).AsInt32().Store((int*)(columns + 2));
        Avx2.Permute2x128(u3, u7, 0x20).AsInt32().Store((int*)(columns + 3));
        Avx2.Permute2x128(u0, u4, 0x31).AsInt32().Store((int*)(columns + 4));
        Avx2.Permute2x128(u1, u5, 0x31).AsInt32().Store((int*)(columns + 5));
        Avx2.Permute2x128(u2, u6, 0x31).AsInt32().Store((int*)(columns + 6));
        Avx2.Permute2x128(u3, u7, 0x31).AsInt32().Store((int*)(columns + 7));
    }

    /// <summary>The 8 rows' 32 bytes at <paramref name="first"/> (rows <paramref name="rowBytes"/> apart), transposed:
    /// <paramref name="columns"/>[k] = dword k of rows 0-7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeRows(byte* first, long rowBytes, Vector256<int>* columns)
        => Transpose(Vector256.Load((int*)first), Vector256.Load((int*)(first + rowBytes)), Vector256.Load((int*)(first + 2 * rowBytes)),
            Vector256.Load((int*)(first + 3 * rowBytes)), Vector256.Load((int*)(first + 4 * rowBytes)), Vector256.Load((int*)(first + 5 * rowBytes)),
            Vector256.Load((int*)(first + 6 * rowBytes)), Vector256.Load((int*)(first + 7 * rowBytes)), columns);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Row<T>(byte* row, int b, Vector256<byte> offset) where T : ISignedBlock32
        => (T.Values(row + b * T.Bytes).AsByte() + offset).AsInt32();

    /// <summary>The integer block sums Σ q·x of the stripe's 8 rows with one activation block (lane r: row r).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> StripeBlockSum(Vector256<byte> w0, Vector256<byte> w1, Vector256<byte> w2, Vector256<byte> w3,
        Vector256<byte> w4, Vector256<byte> w5, Vector256<byte> w6, Vector256<byte> w7, byte* xb, int* xSum)
    {
        // two chains of four: half the latency of one chain of eight, and the integer sum is the same
        int* q = (int*)(xb + Q8_0Qs);
        Vector256<int> s = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, w0, Vector256.Create(q[0]).AsSByte());
        Vector256<int> u = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, w1, Vector256.Create(q[1]).AsSByte());
        s = AvxVnni.MultiplyWideningAndAdd(s, w2, Vector256.Create(q[2]).AsSByte());
        u = AvxVnni.MultiplyWideningAndAdd(u, w3, Vector256.Create(q[3]).AsSByte());
        s = AvxVnni.MultiplyWideningAndAdd(s, w4, Vector256.Create(q[4]).AsSByte());
        u = AvxVnni.MultiplyWideningAndAdd(u, w5, Vector256.Create(q[5]).AsSByte());
        s = AvxVnni.MultiplyWideningAndAdd(s, w6, Vector256.Create(q[6]).AsSByte());
        u = AvxVnni.MultiplyWideningAndAdd(u, w7, Vector256.Create(q[7]).AsSByte());
        return s + u - Vector256.Create(*xSum * StripeOffset); // Σ (q + 128)·x − 128·Σ x
    }

    /// <summary>Vector256.Sum's order ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), taken across eight vectors (lane by
    /// lane) instead of across the lanes of one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> SumAcross(Vector256<float>* l)
        => ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));

    /// <summary>
    /// y[t · yStride + r] = dot(row r, token t) for the 8 rows of a packed stripe and 4 tokens (activation rows
    /// <paramref name="xStride"/> apart, each with its block sums Σ x as <see cref="ActivationRowBytes"/> lays it out), bit for bit
    /// what <see cref="DotSigned32{T}"/> gives: lane j of the f32 accumulator of an output gets blocks j, j + 8, ... of each
    /// full group of 8 (here one accumulator per j, lanes = rows), the accumulator is summed in Vector256.Sum's order, the
    /// last nb % 8 blocks are added one by one.
    /// </summary>
    [SkipLocalsInit] // every lane is written before it is read
    public static void StripeProduct4(byte* stripe, int nb, byte* x, long xStride, float* y, long yStride)
    {
        byte* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        float* d0 = (float*)(x0 + nb * Q8_0Bytes), d1 = (float*)(x1 + nb * Q8_0Bytes), d2 = (float*)(x2 + nb * Q8_0Bytes), d3 = (float*)(x3 + nb * Q8_0Bytes);
        int* c0 = (int*)(d0 + nb), c1 = (int*)(d1 + nb), c2 = (int*)(d2 + nb), c3 = (int*)(d3 + nb); // the rows' block sums Σ x
        Vector256<float>* lanes = stackalloc Vector256<float>[4 * 8]; // [token, j]
        int full = nb & ~7;
        for (int j = 0; j < 8; j++)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int b = j; b < full; b += 8)
                StripeBlock4(stripe + b * StripeBlockBytes, b, x0, x1, x2, x3, d0, d1, d2, d3, c0, c1, c2, c3, ref a0, ref a1, ref a2, ref a3, fused: true);
            lanes[j] = a0;
            lanes[8 + j] = a1;
            lanes[16 + j] = a2;
            lanes[24 + j] = a3;
        }
        Vector256<float> s0 = SumAcross(lanes), s1 = SumAcross(lanes + 8), s2 = SumAcross(lanes + 16), s3 = SumAcross(lanes + 24);
        for (int b = full; b < nb; b++)
            StripeBlock4(stripe + b * StripeBlockBytes, b, x0, x1, x2, x3, d0, d1, d2, d3, c0, c1, c2, c3, ref s0, ref s1, ref s2, ref s3, fused: false);
        s0.Store(y);
        s1.Store(y + yStride);
        s2.Store(y + 2 * yStride);
        s3.Store(y + 3 * yStride);
    }

    /// <summary>One block of a stripe with 4 tokens: a += d_w·d_x · Σ, fused (the lanes of a group) or not (the last
    /// nb % 8 blocks, added after the sum as <c>sum += d_w · d_x · Σ</c>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StripeBlock4(byte* block, int b, byte* x0, byte* x1, byte* x2, byte* x3, float* d0, float* d1, float* d2, float* d3,
        int* c0, int* c1, int* c2, int* c3, ref Vector256<float> a0, ref Vector256<float> a1, ref Vector256<float> a2, ref Vector256<float> a3, bool fused)
    {
        Vector256<byte> w0 = Vector256.Load(block), w1 = Vector256.Load(block + 32), w2 = Vector256.Load(block + 64), w3 = Vector256.Load(block + 96);
        Vector256<byte> w4 = Vector256.Load(block + 128), w5 = Vector256.Load(block + 160), w6 = Vector256.Load(block + 192), w7 = Vector256.Load(block + 224);
        Vector256<float> dw = Vector256.Load((float*)(block + 256));
        long o = b * Q8_0Bytes;
        a0 = Accumulate(a0, dw * Vector256.Create(d0[b]), StripeBlockSum(w0, w1, w2, w3, w4, w5, w6, w7, x0 + o, c0 + b), fused);
        a1 = Accumulate(a1, dw * Vector256.Create(d1[b]), StripeBlockSum(w0, w1, w2, w3, w4, w5, w6, w7, x1 + o, c1 + b), fused);
        a2 = Accumulate(a2, dw * Vector256.Create(d2[b]), StripeBlockSum(w0, w1, w2, w3, w4, w5, w6, w7, x2 + o, c2 + b), fused);
        a3 = Accumulate(a3, dw * Vector256.Create(d3[b]), StripeBlockSum(w0, w1, w2, w3, w4, w5, w6, w7, x3 + o, c3 + b), fused);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate(Vector256<float> a, Vector256<float> d, Vector256<int> sum, bool fused)
        => fused ? MulAdd(d, Vector256.ConvertToSingle(sum), a) : a + d * Vector256.ConvertToSingle(sum);

    /// <summary>One token of <see cref="StripeProduct4"/>, bit for bit.</summary>
    [SkipLocalsInit]
    public static void StripeProduct1(byte* stripe, int nb, byte* x, float* y)
    {
        float* dx = (float*)(x + nb * Q8_0Bytes);
        int* sums = (int*)(dx + nb);
        Vector256<float>* lanes = stackalloc Vector256<float>[8];
        int full = nb & ~7;
        for (int j = 0; j < 8; j++)
        {
            Vector256<float> a = default;
            for (int b = j; b < full; b += 8)
                a = StripeBlock1(stripe + b * StripeBlockBytes, x + b * Q8_0Bytes, dx[b], sums + b, a, fused: true);
            lanes[j] = a;
        }
        Vector256<float> s = SumAcross(lanes);
        for (int b = full; b < nb; b++)
            s = StripeBlock1(stripe + b * StripeBlockBytes, x + b * Q8_0Bytes, dx[b], sums + b, s, fused: false);
        s.Store(y);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> StripeBlock1(byte* block, byte* xb, float dx, int* xSum, Vector256<float> a, bool fused)
    {
        Vector256<int> sum = StripeBlockSum(Vector256.Load(block), Vector256.Load(block + 32), Vector256.Load(block + 64), Vector256.Load(block + 96),
            Vector256.Load(block + 128), Vector256.Load(block + 160), Vector256.Load(block + 192), Vector256.Load(block + 224), xb, xSum);
        return Accumulate(a, Vector256.Load((float*)(block + 256)) * Vector256.Create(dx), sum, fused);
    }
}
