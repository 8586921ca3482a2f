using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Tensors;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

// Prompt products of the k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) over stripes of 16 weight rows interleaved 4 values at a
// time, as llama.cpp repacks Q4_K for its matrix kernels. The one-token AVX2 kernels (Q4_KAvx2 ...) multiply 32 unsigned
// values u of one row with 32 activations (vpmaddubsw), scale the int16 pairs by the sub-block's scale (vpmaddwd) and
// keep 8 int32 lanes per super-block: lane i holds Σ over the super-block's 8 vectors v of sc(v, i) · (u · x over
// values 32v + 4i .. 32v + 4i + 3). Here one 512-bit vector holds those 4 values of 16 rows (lane r: row r), so one
// broadcast activation dword, one vpmaddubsw and one vpmaddwd compute lane i of 16 rows at once, with each row's scale in
// its own lane, and each weight vector loaded serves 4 tokens. Lane i of all super-blocks is taken before lane i + 1 (one
// f32 accumulator per lane i, lanes = rows), so the float operations are the one-token kernel's, in its order: every
// output is bit for bit what the one-token AVX2 kernel gives.
internal static unsafe partial class VecDot
{
    /// <summary>Rows in one k-quant stripe (one row per 32-bit lane of a 512-bit vector).</summary>
    public const int KStripeRows = 16;

    // A stripe of nsb super-blocks: values [i 0-7][super-block][v 0-7], 64 bytes each (lane r: row r's unsigned values
    // 32v + 4i .. 32v + 4i + 3), then per super-block its metadata: scales [v][half] (lane r: row r's int16 scale of those
    // values, twice; half 0 for i < 4, 1 for i ≥ 4), pairs [k] (lane r: the int16 pair multiplied with the activations'
    // bsums 2k, 2k + 1: the mins of Q2_K, Q4_K, Q5_K, the scales of Q3_K, Q6_K), d and dmin of the 16 rows as f32.
    private const int KLaneBytes = 8 * 64;            // the 8 vectors v of one lane i of one super-block
    private const int KValueBytes = 8 * KLaneBytes;   // values per super-block
    private const int KPairs = 16 * 64, KD = 24 * 64, KDmin = 25 * 64, KMetaBytes = 26 * 64;

    /// <summary>Bytes of a packed stripe of <paramref name="type"/> rows of <paramref name="columns"/> values.</summary>
    public static long StripeBytes(GgmlType type, int columns)
        => IsKQuant(type) ? (long)(columns / QK_K) * (KValueBytes + KMetaBytes) : (long)(columns / QK) * StripeBlockBytes;

    /// <summary>Rows in one packed stripe of <paramref name="type"/>.</summary>
    public static int StripeRowsOf(GgmlType type) => IsKQuant(type) ? KStripeRows : StripeRows;

    /// <summary>The fewest tokens for which <see cref="MatMul"/> packs stripes of <paramref name="type"/>: Q6_K's
    /// four-token kernel reads its rows as fast as packing does, and packing pays only from about 16 tokens (measured on
    /// 5632 × 2048 rows: 4 tokens 0.6 ms with the four-token kernel against 0.9 ms packed, about even at 16, 2.2× faster packed at 128).</summary>
    public static int MinStripeTokens(GgmlType type) => type == GgmlType.Q6_K ? 16 : 4;

    private static bool IsKQuant(GgmlType type) => type is GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;

    // The shift of the per-lane offset Σ (sc · bsums) that Q3_K (values + 4) and Q6_K (values + 32) subtract; 0 for the
    // types with a min term instead.
    private static int OffsetShift(GgmlType type) => type switch
    {
        GgmlType.Q3_K => 2,
        GgmlType.Q6_K => 5,
        _ => 0,
    };

    /// <summary>Packs <see cref="KStripeRows"/> rows of k-quant super-blocks (<paramref name="rowBytes"/> apart) into the
    /// layout above.</summary>
    private static void PackKStripe(GgmlType type, byte* w, long rowBytes, int columns, byte* destination)
    {
        if (type is GgmlType.Q4_K or GgmlType.Q5_K)
        {
            PackK4Stripe(type == GgmlType.Q5_K, w, rowBytes, columns, destination);
            return;
        }
        PackK16Stripe(type, w, rowBytes, columns, destination);
    }

    /// <summary><see cref="PackKStripe"/> for Q4_K and Q5_K: each 32 bytes of nibbles transposed as they are (dword i of
    /// the bytes holds values 4i .. 4i + 3 of sub-blocks 2j and 2j + 1), then split into the two vectors; the scales, mins,
    /// d and dmin unpacked for the 16 rows at once, one row per lane.</summary>
    [SkipLocalsInit] // every element is written before it is read
    private static void PackK4Stripe(bool five, byte* w, long rowBytes, int columns, byte* destination)
    {
        int nsb = columns / QK_K, blockBytes = five ? Q5_KBytes : Q4_KBytes, qsOffset = five ? Q5_KQs : Q4_KQs;
        var mask = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)16);
        Vector256<int>* q = stackalloc Vector256<int>[8];
        Vector256<int>* qh = stackalloc Vector256<int>[8];
        uint* fields = stackalloc uint[5 * KStripeRows]; // [field, row]: the 3 words of packed scales, d, dmin
        byte* meta = destination + (long)nsb * KValueBytes;
        for (int sb = 0; sb < nsb; sb++, meta += KMetaBytes)
        {
            byte* blocks = w + sb * blockBytes;
            for (int g = 0; g < 2; g++)
            {
                byte* rows = blocks + 8 * g * rowBytes;
                if (five)
                    TransposeRows(rows + Q5_KQh, rowBytes, qh);
                for (int j = 0; j < 4; j++)
                {
                    TransposeRows(rows + qsOffset + 32 * j, rowBytes, q);
                    var b1 = Vector256.Create((byte)(1 << (2 * j)));
                    var b2 = Vector256.Create((byte)(2 << (2 * j)));
                    for (int i = 0; i < 8; i++)
                    {
                        Vector256<byte> bytes = q[i].AsByte();
                        Vector256<byte> lo = bytes & mask, hi = Srl16(bytes, 4) & mask;
                        if (five)
                        {
                            Vector256<byte> high = qh[i].AsByte();
                            lo |= Vector256.Equals(high & b1, b1) & sixteen;
                            hi |= Vector256.Equals(high & b2, b2) & sixteen;
                        }
                        byte* lane = destination + ((long)i * nsb + sb) * KLaneBytes + 32 * g;
                        lo.Store(lane + 64 * (2 * j));
                        hi.Store(lane + 64 * (2 * j + 1));
                    }
                }
            }
            for (int r = 0; r < KStripeRows; r++)
            {
                byte* block = blocks + r * rowBytes;
                fields[r] = Unsafe.ReadUnaligned<uint>(block + Q4_KScales); // Q5_KScales is the same offset
                fields[KStripeRows + r] = Unsafe.ReadUnaligned<uint>(block + Q4_KScales + 4);
                fields[2 * KStripeRows + r] = Unsafe.ReadUnaligned<uint>(block + Q4_KScales + 8);
                fields[3 * KStripeRows + r] = Unsafe.ReadUnaligned<ushort>(block);
                fields[4 * KStripeRows + r] = Unsafe.ReadUnaligned<ushort>(block + Q4_KDmin);
            }
            // UnpackScalesK4 with one row per lane
            Vector512<uint> u0 = Vector512.Load(fields), u1 = Vector512.Load(fields + KStripeRows), u2 = Vector512.Load(fields + 2 * KStripeRows);
            var kmask1 = Vector512.Create(0x3f3f3f3fu);
            var kmask2 = Vector512.Create(0x0f0f0f0fu);
            var kmask3 = Vector512.Create(0x03030303u);
            Vector512<uint> scales0 = u0 & kmask1, scales1 = (u2 & kmask2) | Vector512.ShiftLeft(Vector512.ShiftRightLogical(u0, 6) & kmask3, 4);
            Vector512<uint> mins0 = u1 & kmask1, mins1 = (Vector512.ShiftRightLogical(u2, 4) & kmask2) | Vector512.ShiftLeft(Vector512.ShiftRightLogical(u1, 6) & kmask3, 4);
            var low = Vector512.Create(0xFFu);
            for (int v = 0; v < 8; v++)
            {
                Vector512<uint> s = Vector512.ShiftRightLogical(v < 4 ? scales0 : scales1, 8 * (v % 4)) & low;
                Vector512<uint> m = Vector512.ShiftRightLogical(v < 4 ? mins0 : mins1, 8 * (v % 4)) & low;
                Vector512<uint> pair = s | Vector512.ShiftLeft(s, 16);
                pair.Store((uint*)(meta + 64 * (2 * v)));
                pair.Store((uint*)(meta + 64 * (2 * v + 1)));
                (m | Vector512.ShiftLeft(m, 16)).Store((uint*)(meta + KPairs + 64 * v)); // the min of sub-block v times bsums 2v, 2v + 1
            }
            Fp16.ToSingle(Vector512.Load(fields + 3 * KStripeRows)).Store((float*)(meta + KD));
            Fp16.ToSingle(Vector512.Load(fields + 4 * KStripeRows)).Store((float*)(meta + KDmin));
        }
    }

    /// <summary><see cref="PackKStripe"/> for the types with 16 scales per super-block (Q2_K, Q3_K, Q6_K): the raw bytes of
    /// each 32 values transposed as they are, then decoded as the one-token kernels decode them (every step works on each
    /// byte alone); each row's scales (and Q2_K's mins) widened to 16 int16, transposed into pairs (2k, 2k + 1) per lane.</summary>
    [SkipLocalsInit] // every element is written before it is read
    private static void PackK16Stripe(GgmlType type, byte* w, long rowBytes, int columns, byte* destination)
    {
        int nsb = columns / QK_K, blockBytes = GgmlTypes.BlockBytes(type);
        var mask = Vector256.Create((byte)0x0F);
        var three = Vector256.Create((byte)3);
        var four = Vector256.Create((byte)4);
        var two = Vector256.Create((byte)0x30);
        Vector256<int>* a = stackalloc Vector256<int>[8];
        Vector256<int>* b = stackalloc Vector256<int>[8];
        Vector256<int>* h = stackalloc Vector256<int>[8];
        short* words = stackalloc short[2 * KStripeRows * 16]; // [scales, mins][row][16]
        uint* halves = stackalloc uint[2 * KStripeRows];       // [d, dmin][row]
        byte* meta = destination + (long)nsb * KValueBytes;
        for (int sb = 0; sb < nsb; sb++, meta += KMetaBytes)
        {
            byte* blocks = w + sb * blockBytes;
            for (int g = 0; g < 2; g++)
            {
                byte* rows = blocks + 8 * g * rowBytes;
                byte* lanes = destination + (long)sb * KLaneBytes + 32 * g; // + i · nsb · KLaneBytes + 64 v
                long laneStride = (long)nsb * KLaneBytes;
                if (type == GgmlType.Q3_K)
                    TransposeRows(rows, rowBytes, h); // the high-bit mask
                for (int chunk = 0; chunk < 2; chunk++)
                {
                    switch (type)
                    {
                        case GgmlType.Q6_K:
                            TransposeRows(rows + 64 * chunk, rowBytes, a);
                            TransposeRows(rows + 64 * chunk + 32, rowBytes, b);
                            TransposeRows(rows + Q6_KQh + 32 * chunk, rowBytes, h);
                            for (int i = 0; i < 8; i++)
                            {
                                Vector256<byte> ql0 = a[i].AsByte(), ql1 = b[i].AsByte(), qh = h[i].AsByte();
                                byte* lane = lanes + i * laneStride + 64 * 4 * chunk;
                                ((ql0 & mask) | (Sll16(qh, 4) & two)).Store(lane);
                                ((ql1 & mask) | (Sll16(qh, 2) & two)).Store(lane + 64);
                                ((Srl16(ql0, 4) & mask) | (qh & two)).Store(lane + 128);
                                ((Srl16(ql1, 4) & mask) | (Srl16(qh, 2) & two)).Store(lane + 192);
                            }
                            break;
                        case GgmlType.Q3_K:
                            TransposeRows(rows + Q3_KQs + 32 * chunk, rowBytes, a);
                            for (int i = 0; i < 8; i++)
                            {
                                Vector256<byte> q = a[i].AsByte(), hm = h[i].AsByte();
                                for (int j = 0; j < 4; j++)
                                {
                                    var bit = Vector256.Create((byte)(1 << (4 * chunk + j)));
                                    ((Srl16(q, 2 * j) & three) | (Vector256.Equals(hm & bit, bit) & four)).Store(lanes + i * laneStride + 64 * (4 * chunk + j));
                                }
                            }
                            break;
                        default: // Q2_K
                            TransposeRows(rows + Q2_KQs + 32 * chunk, rowBytes, a);
                            for (int i = 0; i < 8; i++)
                            {
                                Vector256<byte> q = a[i].AsByte();
                                for (int j = 0; j < 4; j++)
                                    (Srl16(q, 2 * j) & three).Store(lanes + i * laneStride + 64 * (4 * chunk + j));
                            }
                            break;
                    }
                }
            }
            short* mins = words + KStripeRows * 16;
            for (int r = 0; r < KStripeRows; r++)
            {
                byte* block = blocks + r * rowBytes;
                switch (type)
                {
                    case GgmlType.Q6_K:
                        Avx2.ConvertToVector256Int16(Vector128.Load((sbyte*)(block + Q6_KScales))).Store(words + 16 * r);
                        halves[r] = Unsafe.ReadUnaligned<ushort>(block + Q6_KD);
                        halves[KStripeRows + r] = 0;
                        break;
                    case GgmlType.Q3_K:
                        Avx2.ConvertToVector256Int16(ScalesQ3_K(block + Q3_KScales)).Store(words + 16 * r);
                        halves[r] = Unsafe.ReadUnaligned<ushort>(block + Q3_KD);
                        halves[KStripeRows + r] = 0;
                        break;
                    default: // Q2_K: low nibbles the scales, high nibbles the mins
                        Vector128<byte> sc = Vector128.Load(block);
                        Avx2.ConvertToVector256Int16(sc & Vector128.Create((byte)0x0F)).Store(words + 16 * r);
                        Avx2.ConvertToVector256Int16(Vector128.ShiftRightLogical(sc.AsUInt16(), 4).AsByte() & Vector128.Create((byte)0x0F)).Store(mins + 16 * r);
                        halves[r] = Unsafe.ReadUnaligned<ushort>(block + Q2_KD);
                        halves[KStripeRows + r] = Unsafe.ReadUnaligned<ushort>(block + Q2_KDmin);
                        break;
                }
            }
            for (int g = 0; g < 2; g++)
            {
                // a[k], lane r: the int16 scales 2k and 2k + 1 of row 8g + r
                TransposeRows((byte*)(words + 16 * 8 * g), 32, a);
                if (type == GgmlType.Q2_K)
                    TransposeRows((byte*)(mins + 16 * 8 * g), 32, b);
                for (int k = 0; k < 8; k++)
                {
                    Vector256<int> low = Vector256.ShiftRightArithmetic(Vector256.ShiftLeft(a[k], 16), 16), high = Vector256.ShiftRightArithmetic(a[k], 16);
                    ((low & Vector256.Create(0xFFFF)) | Vector256.ShiftLeft(low, 16)).Store((int*)(meta + 64 * (2 * k) + 32 * g));
                    ((high & Vector256.Create(0xFFFF)) | Vector256.ShiftLeft(high, 16)).Store((int*)(meta + 64 * (2 * k + 1) + 32 * g));
                    (type == GgmlType.Q2_K ? b[k] : a[k]).Store((int*)(meta + KPairs + 64 * k + 32 * g)); // × bsums 2k, 2k + 1
                }
            }
            Fp16.ToSingle(Vector512.Load(halves)).Store((float*)(meta + KD));
            Fp16.ToSingle(Vector512.Load(halves + KStripeRows)).Store((float*)(meta + KDmin));
        }
    }

    /// <summary>
    /// y[t · yStride + r] = dot(row r, token t) for the 16 rows of a packed k-quant stripe and <paramref name="tokens"/>
    /// ≤ 4 tokens (activation rows <paramref name="xStride"/> apart, Q8_K), bit for bit what the one-token AVX2 kernel
    /// gives. Fewer than 4 tokens repeat the last (its outputs written again, the same values).
    /// </summary>
    [SkipLocalsInit] // every lane is written before it is read
    private static void KStripeProduct4(byte* stripe, int nsb, int shift, byte* x, long xStride, int tokens, float* y, long yStride)
    {
        byte* x0 = x, x1 = x + Math.Min(1, tokens - 1) * xStride, x2 = x + Math.Min(2, tokens - 1) * xStride, x3 = x + (tokens - 1) * xStride;
        float* y0 = y, y1 = y + Math.Min(1, tokens - 1) * yStride, y2 = y + Math.Min(2, tokens - 1) * yStride, y3 = y + (tokens - 1) * yStride;
        Vector512<float>* lanes = stackalloc Vector512<float>[4 * 8]; // [token, i]
        byte* meta = stripe + (long)nsb * KValueBytes;
        for (int i = 0; i < 8; i++)
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            byte* values = stripe + (long)i * nsb * KLaneBytes;
            for (int sb = 0; sb < nsb; sb++, values += KLaneBytes)
            {
                byte* m = meta + sb * KMetaBytes;
                byte* scales = m + (i >> 2) * 64;
                long o = sb * Q8_KBytes + Q8_KQs + 4 * i;
                Vector512<int> s0 = default, s1 = default, s2 = default, s3 = default;
                for (int v = 0; v < 8; v++)
                {
                    Vector512<byte> u = Vector512.Load(values + 64 * v);
                    Vector512<short> c = Vector512.Load((short*)(scales + 128 * v));
                    long ov = o + 32 * v;
                    s0 += ScaledDot16Rows(u, x0 + ov, c);
                    s1 += ScaledDot16Rows(u, x1 + ov, c);
                    s2 += ScaledDot16Rows(u, x2 + ov, c);
                    s3 += ScaledDot16Rows(u, x3 + ov, c);
                }
                if (shift != 0)
                {
                    Vector512<short> pair = Vector512.Load((short*)(m + KPairs + 64 * i));
                    long ob = sb * Q8_KBytes + Q8_KBsums + 4 * i;
                    s0 -= Vector512.ShiftLeft(PairDot16Rows(pair, x0 + ob), shift);
                    s1 -= Vector512.ShiftLeft(PairDot16Rows(pair, x1 + ob), shift);
                    s2 -= Vector512.ShiftLeft(PairDot16Rows(pair, x2 + ob), shift);
                    s3 -= Vector512.ShiftLeft(PairDot16Rows(pair, x3 + ob), shift);
                }
                Vector512<float> d = Vector512.Load((float*)(m + KD));
                long od = sb * Q8_KBytes;
                a0 = Avx512F.FusedMultiplyAdd(d * Vector512.Create(*(float*)(x0 + od)), Vector512.ConvertToSingle(s0), a0);
                a1 = Avx512F.FusedMultiplyAdd(d * Vector512.Create(*(float*)(x1 + od)), Vector512.ConvertToSingle(s1), a1);
                a2 = Avx512F.FusedMultiplyAdd(d * Vector512.Create(*(float*)(x2 + od)), Vector512.ConvertToSingle(s2), a2);
                a3 = Avx512F.FusedMultiplyAdd(d * Vector512.Create(*(float*)(x3 + od)), Vector512.ConvertToSingle(s3), a3);
            }
            lanes[i] = a0;
            lanes[8 + i] = a1;
            lanes[16 + i] = a2;
            lanes[24 + i] = a3;
        }
        Vector512<float> r0 = SumAcross(lanes), r1 = SumAcross(lanes + 8), r2 = SumAcross(lanes + 16), r3 = SumAcross(lanes + 24);
        if (shift == 0)
        {
            // the min term, summed over the super-blocks in order as the one-token kernel's accm
            Vector512<float> m0 = default, m1 = default, m2 = default, m3 = default;
            for (int sb = 0; sb < nsb; sb++)
            {
                byte* m = meta + sb * KMetaBytes;
                long ob = sb * Q8_KBytes + Q8_KBsums;
                Vector512<int> t0 = default, t1 = default, t2 = default, t3 = default;
                for (int k = 0; k < 8; k++)
                {
                    Vector512<short> pair = Vector512.Load((short*)(m + KPairs + 64 * k));
                    t0 += PairDot16Rows(pair, x0 + ob + 4 * k);
                    t1 += PairDot16Rows(pair, x1 + ob + 4 * k);
                    t2 += PairDot16Rows(pair, x2 + ob + 4 * k);
                    t3 += PairDot16Rows(pair, x3 + ob + 4 * k);
                }
                Vector512<float> dmin = Vector512.Load((float*)(m + KDmin));
                long od = sb * Q8_KBytes;
                m0 += dmin * Vector512.Create(*(float*)(x0 + od)) * Vector512.ConvertToSingle(t0);
                m1 += dmin * Vector512.Create(*(float*)(x1 + od)) * Vector512.ConvertToSingle(t1);
                m2 += dmin * Vector512.Create(*(float*)(x2 + od)) * Vector512.ConvertToSingle(t2);
                m3 += dmin * Vector512.Create(*(float*)(x3 + od)) * Vector512.ConvertToSingle(t3);
            }
            r0 -= m0;
            r1 -= m1;
            r2 -= m2;
            r3 -= m3;
        }
        r0.Store(y0);
        r1.Store(y1);
        r2.Store(y2);
        r3.Store(y3);
    }

    /// <summary>Lane r: sc_r · (u · x over the 4 values of lane r), x the activation dword at <paramref name="x"/>
    /// broadcast (vpmaddubsw, then vpmaddwd with the row's scale in both int16 halves of its lane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> ScaledDot16Rows(Vector512<byte> u, byte* x, Vector512<short> scale)
        => Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, Vector512.Create(*(int*)x).AsSByte()), scale);

    /// <summary>Lane r: the int16 pair of lane r · the int16 pair at <paramref name="bsums"/> (vpmaddwd).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> PairDot16Rows(Vector512<short> pair, byte* bsums)
        => Avx512BW.MultiplyAddAdjacent(pair, Vector512.Create(*(int*)bsums).AsInt16());

    /// <summary><see cref="SumAcross(Vector256{float}*)"/> for 512-bit lanes: Vector256.Sum's order across eight vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> SumAcross(Vector512<float>* l)
        => ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
