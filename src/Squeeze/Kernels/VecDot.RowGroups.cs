using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Tensors;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

// One-token products of Q4_K and Q4_0 rows interleaved 16 at a time ("row groups"), as llama.cpp repacks Q4_0 and Q4_K
// rows for its CPU kernels. The one-token kernels spend about as many instructions per block on its scales, mins,
// horizontal sums and float work as on its products; a row group does that work for 16 rows at once, one row per 32-bit
// lane of a 512-bit vector, with the nibbles kept packed (a Q4_0 group is exactly its rows' bytes, a Q4_K group 2.8 %
// more). Each vector of the one-token kernel's float accumulator (Q4_K: lane i, values 4i .. 4i + 3 of every sub-block;
// Q4_0: lane k, block k of every 8) is one vector here with the rows in its lanes, and the float operations are the
// one-token kernel's in its order, so every output is bit for bit what Q4_KAvx2 / Q4_0Avx2 (and their AVX-512 forms)
// give.
internal static unsafe partial class VecDot
{
    /// <summary>Rows in one row group.</summary>
    public const int RowGroupRows = 16;

    // Per super-block of a group: the nibbles [j 0-3][i 0-7] (64 bytes each, lane r: row r's bytes 32j + 4i .. 32j + 4i + 3,
    // values 4i .. 4i + 3 of sub-block 2j in the low nibbles and of sub-block 2j + 1 in the high), then the six-bit
    // scales [v 0-7][r] and mins [v][r] as bytes, then d [r] and dmin [r] as f16.
    private const int GroupScales = 32 * 64, GroupMins = GroupScales + 8 * RowGroupRows, GroupD = GroupMins + 8 * RowGroupRows,
        GroupDmin = GroupD + 2 * RowGroupRows, GroupSuperBlockBytes = GroupDmin + 2 * RowGroupRows;

    // Per block of a Q4_0 group: the nibbles [i 0-3] (64 bytes each, lane r: row r's bytes 4i .. 4i + 3, values
    // 4i .. 4i + 3 in the low nibbles and 16 + 4i .. 16 + 4i + 3 in the high), then d [r] as f16.
    private const int Group4_0D = 4 * 64, Group4_0BlockBytes = Group4_0D + 2 * RowGroupRows;

    /// <summary>Bytes ahead of its position that a row-group kernel prefetches. A decode step reads every weight once,
    /// from memory, and the hardware prefetcher alone leaves one core at 11–14 GB/s of a machine that reads 32–34 GB/s
    /// on one core; asking for the lines 4 KB ahead brought one core to 23–34 GB/s on Q4_0 and Q4_K row groups
    /// (<c>decode-kernels</c>, docs/BENCHMARKS.md). Prefetches never fault, so reading past the last group is harmless.</summary>
    private const int RowGroupPrefetchDistance = 4096;

    /// <summary>Asks for the cache lines of [<paramref name="p"/>, <paramref name="p"/> + <paramref name="bytes"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(byte* p, int bytes)
    {
        for (int l = 0; l < bytes; l += 64)
            Sse.Prefetch0(p + l);
    }

    /// <summary>True when one-token products of <paramref name="type"/> weights can run on row groups at
    /// <paramref name="level"/> (Q4_K and Q4_0 with AVX-512BW).</summary>
    public static bool HasRowGroups(GgmlType type, SimdLevel level) => type is GgmlType.Q4_K or GgmlType.Q4_0 && level == SimdLevel.Avx512 && Avx512BW.IsSupported;

    /// <summary>Bytes of one row group of <paramref name="columns"/> values of <paramref name="type"/>.</summary>
    public static long RowGroupBytes(GgmlType type, int columns) => type == GgmlType.Q4_K
        ? (long)(columns / QK_K) * GroupSuperBlockBytes
        : (long)(columns / QK) * Group4_0BlockBytes;

    /// <summary>Packs <see cref="RowGroupRows"/> rows of <paramref name="type"/> (<paramref name="rowBytes"/> apart) of
    /// <paramref name="columns"/> values into one row group at <paramref name="destination"/>
    /// (<see cref="RowGroupBytes"/> bytes).</summary>
    public static void PackRowGroup(GgmlType type, byte* w, long rowBytes, int columns, byte* destination)
    {
        if (type == GgmlType.Q4_0)
        {
            PackQ4_0RowGroup(w, rowBytes, columns, destination);
            return;
        }
        int nsb = columns / QK_K;
        for (int sb = 0; sb < nsb; sb++)
        {
            byte* group = destination + (long)sb * GroupSuperBlockBytes;
            for (int r = 0; r < RowGroupRows; r++)
            {
                byte* block = w + r * rowBytes + (long)sb * Q4_KBytes;
                uint* qs = (uint*)(block + Q4_KQs);
                for (int k = 0; k < 32; k++)
                    ((uint*)(group + 64 * k))[r] = qs[k]; // k = 8j + i
                ulong scales = UnpackScalesK4(block + Q4_KScales, out ulong mins);
                for (int v = 0; v < 8; v++)
                {
                    group[GroupScales + RowGroupRows * v + r] = (byte)(scales >> (8 * v));
                    group[GroupMins + RowGroupRows * v + r] = (byte)(mins >> (8 * v));
                }
                ((ushort*)(group + GroupD))[r] = Unsafe.ReadUnaligned<ushort>(block);
                ((ushort*)(group + GroupDmin))[r] = Unsafe.ReadUnaligned<ushort>(block + Q4_KDmin);
            }
        }
    }

    private static void PackQ4_0RowGroup(byte* w, long rowBytes, int columns, byte* destination)
    {
        int nb = columns / QK;
        for (int b = 0; b < nb; b++)
        {
            byte* group = destination + (long)b * Group4_0BlockBytes;
            for (int r = 0; r < RowGroupRows; r++)
            {
                byte* block = w + r * rowBytes + (long)b * Q4_0Bytes;
                for (int i = 0; i < 4; i++)
                    ((uint*)(group + 64 * i))[r] = Unsafe.ReadUnaligned<uint>(block + Q4_0Qs + 4 * i);
                ((ushort*)(group + Group4_0D))[r] = Unsafe.ReadUnaligned<ushort>(block);
            }
        }
    }

    /// <summary>The row-group product of <paramref name="type"/>: y[r] for the 16 rows of a group and one activation row
    /// prepared for <paramref name="type"/>.</summary>
    public static void RowGroupProduct(GgmlType type, byte* group, byte* x, int n, float* y)
    {
        if (type == GgmlType.Q4_0)
            Q4_0RowGroupAvx512(group, x, n, y);
        else
            Q4_KRowGroupAvx512(group, x, n, y);
    }

    /// <summary><c>y[r] = Σ_c w[r, c] · x[c]</c> for the 16 rows of a Q4_0 row group and one Q8_0 activation row (with its
    /// f32 scales and block sums, <see cref="ActivationRowBytes"/>), bit for bit what <see cref="Q4_0Avx2"/> gives each row.</summary>
    public static void Q4_0RowGroupAvx512(byte* group, byte* x, int n, float* y)
    {
        int nb = n / QK, b = 0;
        float* dx = (float*)(x + nb * Q8_0Bytes);
        int* sx = (int*)(dx + nb);
        var mask = Vector512.Create((byte)0x0F);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (; b + 8 <= nb; b += 8, group += 8 * Group4_0BlockBytes)
        {
            Prefetch(group + RowGroupPrefetchDistance, 8 * Group4_0BlockBytes);
            a0 = Q4_0GroupBlock(group, x, b, dx, sx, mask, a0);
            a1 = Q4_0GroupBlock(group + Group4_0BlockBytes, x, b + 1, dx, sx, mask, a1);
            a2 = Q4_0GroupBlock(group + 2 * Group4_0BlockBytes, x, b + 2, dx, sx, mask, a2);
            a3 = Q4_0GroupBlock(group + 3 * Group4_0BlockBytes, x, b + 3, dx, sx, mask, a3);
            a4 = Q4_0GroupBlock(group + 4 * Group4_0BlockBytes, x, b + 4, dx, sx, mask, a4);
            a5 = Q4_0GroupBlock(group + 5 * Group4_0BlockBytes, x, b + 5, dx, sx, mask, a5);
            a6 = Q4_0GroupBlock(group + 6 * Group4_0BlockBytes, x, b + 6, dx, sx, mask, a6);
            a7 = Q4_0GroupBlock(group + 7 * Group4_0BlockBytes, x, b + 7, dx, sx, mask, a7);
        }
        // Vector256.Sum's order over the 8 lanes, then the blocks left over one by one, as the one-token kernel adds them
        Vector512<float> sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
        for (; b < nb; b++, group += Group4_0BlockBytes)
            sum += Q4_0GroupScale(group, dx[b]) * Vector512.ConvertToSingle(Q4_0GroupSums(group, x, b, sx, mask));
        sum.Store(y);
    }

    /// <summary>acc + d_w · d_x · Σ (u − 8) · x for one block of the 16 rows (one fused multiply-add, as the one-token kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Q4_0GroupBlock(byte* group, byte* x, int b, float* dx, int* sx, Vector512<byte> mask, Vector512<float> acc)
        => Avx512F.FusedMultiplyAdd(Q4_0GroupScale(group, dx[b]), Vector512.ConvertToSingle(Q4_0GroupSums(group, x, b, sx, mask)), acc);

    /// <summary>d_w · d_x of one block for the 16 rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Q4_0GroupScale(byte* group, float dx)
        => Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)(group + Group4_0D)))) * Vector512.Create(dx);

    /// <summary>Σ (u − 8) · x of one block for the 16 rows: the 8 byte products summed as int16 (at most 8 · 2 · 15 · 128,
    /// exact), widened once, less 8 · Σ x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Q4_0GroupSums(byte* group, byte* x, int b, int* sx, Vector512<byte> mask)
    {
        byte* q8 = x + (long)b * Q8_0Bytes + Q8_0Qs;
        Vector512<short> p = default;
        for (int i = 0; i < 4; i++)
        {
            Vector512<byte> q = Vector512.Load(group + 64 * i);
            p += Avx512BW.MultiplyAddAdjacent(q & mask, Vector512.Create(*(int*)(q8 + 4 * i)).AsSByte());
            p += Avx512BW.MultiplyAddAdjacent(Vector512.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & mask, Vector512.Create(*(int*)(q8 + 16 + 4 * i)).AsSByte());
        }
        return Avx512BW.MultiplyAddAdjacent(p, Vector512.Create((short)1)) - Vector512.Create(sx[b] << 3);
    }

    /// <summary><c>y[r] = Σ_c w[r, c] · x[c]</c> for the 16 rows of a Q4_K row group and one Q8_K activation row,
    /// bit for bit what <see cref="Q4_KAvx2"/> gives each row.</summary>
    public static void Q4_KRowGroupAvx512(byte* group, byte* x, int n, float* y)
    {
        int nsb = n / QK_K;
        var mask = Vector512.Create((byte)0x0F);
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector512<float> accm = default;
        for (int sb = 0; sb < nsb; sb++, group += GroupSuperBlockBytes, x += Q8_KBytes)
        {
            Prefetch(group + RowGroupPrefetchDistance, GroupSuperBlockBytes);
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            Vector512<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
            for (int j = 0; j < 4; j++)
            {
                Vector512<short> low = GroupScale(group + GroupScales + RowGroupRows * 2 * j);
                Vector512<short> high = GroupScale(group + GroupScales + RowGroupRows * (2 * j + 1));
                byte* qs = group + 64 * 8 * j;
                sbyte* xl = q8 + 64 * j, xh = xl + 32;
                s0 += GroupStep(qs, xl, xh, low, high, mask);
                s1 += GroupStep(qs + 64, xl + 4, xh + 4, low, high, mask);
                s2 += GroupStep(qs + 128, xl + 8, xh + 8, low, high, mask);
                s3 += GroupStep(qs + 192, xl + 12, xh + 12, low, high, mask);
                s4 += GroupStep(qs + 256, xl + 16, xh + 16, low, high, mask);
                s5 += GroupStep(qs + 320, xl + 20, xh + 20, low, high, mask);
                s6 += GroupStep(qs + 384, xl + 24, xh + 24, low, high, mask);
                s7 += GroupStep(qs + 448, xl + 28, xh + 28, low, high, mask);
            }
            // the min term: Σ_v m[v] · (bsums[2v] + bsums[2v + 1]) per row, exact as the one-token kernel's
            short* bsums = (short*)(x + Q8_KBsums);
            Vector512<int> t = default;
            for (int v = 0; v < 8; v++)
                t += Avx512F.MultiplyLow(Avx512F.ConvertToVector512Int32(Vector128.Load(group + GroupMins + RowGroupRows * v)), Vector512.Create(bsums[2 * v] + bsums[2 * v + 1]));
            var dy = Vector512.Create(*(float*)x);
            Vector512<float> d = Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)(group + GroupD)))) * dy;
            a0 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s0), a0);
            a1 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s1), a1);
            a2 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s2), a2);
            a3 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s3), a3);
            a4 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s4), a4);
            a5 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s5), a5);
            a6 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s6), a6);
            a7 = Avx512F.FusedMultiplyAdd(d, Vector512.ConvertToSingle(s7), a7);
            Vector512<float> dmin = Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)(group + GroupDmin)))) * dy;
            accm += dmin * Vector512.ConvertToSingle(t);
        }
        // Vector256.Sum's order over the lanes i of each row, as SumAcross adds them
        Vector512<float> sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
        (sum - accm).Store(y);
    }

    /// <summary>Scales of one sub-block for the 16 rows (bytes at <paramref name="scales"/>) as both int16 halves of
    /// each row's lane, for vpmaddwd.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> GroupScale(byte* scales)
    {
        Vector512<int> s = Avx512F.ConvertToVector512Int32(Vector128.Load(scales));
        return (s | Vector512.ShiftLeft(s, 16)).AsInt16();
    }

    /// <summary>Lane i of the one-token kernel's accumulator for the 16 rows from one 64-byte vector of nibbles:
    /// the low nibbles against the activation dword at <paramref name="xLow"/> times the rows' scales
    /// <paramref name="low"/>, plus the high nibbles against <paramref name="xHigh"/> times <paramref name="high"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> GroupStep(byte* qs, sbyte* xLow, sbyte* xHigh, Vector512<short> low, Vector512<short> high, Vector512<byte> mask)
    {
        Vector512<byte> q = Vector512.Load(qs);
        Vector512<byte> lo = q & mask, hi = Vector512.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & mask;
        return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(lo, Vector512.Create(*(int*)xLow).AsSByte()), low)
            + Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(hi, Vector512.Create(*(int*)xHigh).AsSByte()), high);
    }
}
