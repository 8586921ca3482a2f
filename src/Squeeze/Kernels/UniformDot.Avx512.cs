using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

// 512-bit fused kernel (AVX-512 BW + VBMI): 64 codes per step. Callers check Avx512Vbmi.IsSupported (For does).
internal static unsafe partial class UniformDot
{
    /// <summary>
    /// <see cref="DotScalar"/> for rows [r0, r1), 64 codes per step: the step's 8·bits bytes are loaded at once,
    /// <c>vpermb</c> moves each run of 8 codes (bits bytes) into its own 64-bit lane and <c>vpmultishiftqb</c> shifts every
    /// code to its own byte; the codes (≤ 7 bits, so a pair of products fits 16 bits) meet the activation bytes in
    /// <c>vpmaddubsw</c> + <c>vpmaddwd</c>, giving the 16 lanes' integer sums (less z·Σ a when symmetric), which are scaled
    /// by their blocks' d and summed in f32. A group's last step is masked to its length. Four rows at a time share the
    /// activation loads and prefetch the next four. Rows whose last step would load past the codes run <see cref="DotScalar"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    public static void RowsAvx512(in UniformRows w, int r0, int r1, byte* x, float* y)
    {
        int bits = w.Bits, group = w.Group, columns = w.Columns, groups = w.Groups;
        sbyte* a = (sbyte*)x;
        float* laneScales = (float*)(x + LaneScalesOffset(columns));
        float* laneSums = (float*)(x + LaneSumsOffset(columns));
        int* laneCounts = (int*)(x + LaneCountsOffset(columns));
        bool symmetric = w.Mins == null;
        Vector512<byte> permute = Permutes[bits], shifts = Shifts[bits];
        var mask = Vector512.Create((byte)((1 << bits) - 1));
        var ones = Vector512.Create((short)1);
        int tail = group % 64; // every group: whole steps of 64, then one step masked to the tail codes
        Vector512<sbyte> tailBytes = Vector512.LessThan(Vector512<byte>.Indices, Vector512.Create((byte)tail)).AsSByte();
        Vector512<int> tailLanes = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(tail / 4));
        int vectorRows = Math.Min(r1, SafeRows(w, 64));
        int row = r0;
        long ahead = 4 * w.RowBytes;
        // four rows at a time: the activations (and their sums) are loaded once for all four, four independent chains
        for (; row + 4 <= vectorRows; row += 4)
        {
            byte* codes0 = w.Codes + row * w.RowBytes, codes1 = codes0 + w.RowBytes, codes2 = codes1 + w.RowBytes, codes3 = codes2 + w.RowBytes;
            ushort* rowScales = w.Scales + (long)row * groups;
            ushort* rowMins = symmetric ? null : w.Mins + (long)row * groups;
            Vector512<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            for (int g = 0; g < groups; g++)
            {
                Vector512<float> products0 = default, products1 = default, products2 = default, products3 = default, sums = default;
                for (int c = g * group, end = c + group; c < end; c += 64)
                {
                    Vector512<sbyte> xa = Vector512.Load(a + c);
                    Vector512<int> zeros = default, lanes = Vector512<int>.AllBitsSet;
                    if (end - c < 64)
                    {
                        xa &= tailBytes;
                        lanes = tailLanes;
                    }
                    if (symmetric)
                        zeros = Vector512.ShiftLeft(Vector512.Load(laneCounts + c / 4) & lanes, bits - 1);
                    else
                        sums += Vector512.Load(laneSums + c / 4) & lanes.AsSingle();
                    Vector512<float> d = Vector512.Load(laneScales + c / 4);
                    int at = (c >> 3) * bits;
                    // the next four rows, fetched while these are computed (a matrix larger than the caches streams from
                    // memory, and four interleaved streams outrun the hardware prefetcher); prefetches never fault
                    Sse.Prefetch0(codes0 + ahead + at);
                    Sse.Prefetch0(codes1 + ahead + at);
                    Sse.Prefetch0(codes2 + ahead + at);
                    Sse.Prefetch0(codes3 + ahead + at);
                    products0 = Avx512F.FusedMultiplyAdd(Vector512.ConvertToSingle(Dot64(codes0 + at, xa, permute, shifts, mask, ones) - zeros), d, products0);
                    products1 = Avx512F.FusedMultiplyAdd(Vector512.ConvertToSingle(Dot64(codes1 + at, xa, permute, shifts, mask, ones) - zeros), d, products1);
                    products2 = Avx512F.FusedMultiplyAdd(Vector512.ConvertToSingle(Dot64(codes2 + at, xa, permute, shifts, mask, ones) - zeros), d, products2);
                    products3 = Avx512F.FusedMultiplyAdd(Vector512.ConvertToSingle(Dot64(codes3 + at, xa, permute, shifts, mask, ones) - zeros), d, products3);
                }
                acc0 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowScales[g])), products0, acc0);
                acc1 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowScales[groups + g])), products1, acc1);
                acc2 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowScales[2 * groups + g])), products2, acc2);
                acc3 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowScales[3 * groups + g])), products3, acc3);
                if (!symmetric)
                {
                    acc0 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowMins[g])), sums, acc0);
                    acc1 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowMins[groups + g])), sums, acc1);
                    acc2 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowMins[2 * groups + g])), sums, acc2);
                    acc3 = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowMins[3 * groups + g])), sums, acc3);
                }
            }
            y[row] = Vector512.Sum(acc0);
            y[row + 1] = Vector512.Sum(acc1);
            y[row + 2] = Vector512.Sum(acc2);
            y[row + 3] = Vector512.Sum(acc3);
        }
        for (; row < vectorRows; row++)
        {
            byte* codes = w.Codes + row * w.RowBytes;
            ushort* rowScales = w.Scales + (long)row * groups;
            ushort* rowMins = symmetric ? null : w.Mins + (long)row * groups;
            Vector512<float> acc = default;
            for (int g = 0; g < groups; g++)
            {
                Vector512<float> products = default, sums = default;
                for (int c = g * group, end = c + group; c < end; c += 64)
                {
                    Vector512<sbyte> xa = Vector512.Load(a + c);
                    Vector512<int> zeros = default, lanes = Vector512<int>.AllBitsSet;
                    if (end - c < 64)
                    {
                        xa &= tailBytes;
                        lanes = tailLanes;
                    }
                    if (symmetric)
                        zeros = Vector512.ShiftLeft(Vector512.Load(laneCounts + c / 4) & lanes, bits - 1);
                    else
                        sums += Vector512.Load(laneSums + c / 4) & lanes.AsSingle();
                    products = Avx512F.FusedMultiplyAdd(Vector512.ConvertToSingle(Dot64(codes + (c >> 3) * bits, xa, permute, shifts, mask, ones) - zeros),
                        Vector512.Load(laneScales + c / 4), products);
                }
                acc = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowScales[g])), products, acc);
                if (!symmetric)
                    acc = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowMins[g])), sums, acc);
            }
            y[row] = Vector512.Sum(acc);
        }
        for (row = Math.Max(r0, vectorRows); row < r1; row++)
            y[row] = DotScalar(w, row, x);
    }

    /// <summary>Lane i = Σ of bytes 4i..4i+3 of q·a for the 64 codes at <paramref name="p"/> (a whole step: 8·bits bytes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Dot64(byte* p, Vector512<sbyte> a, Vector512<byte> permute, Vector512<byte> shifts, Vector512<byte> mask, Vector512<short> ones)
    {
        Vector512<byte> q = Avx512Vbmi.MultiShift(shifts, Avx512Vbmi.PermuteVar64x8(Vector512.Load(p), permute).AsUInt64()) & mask;
        return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, a), ones);
    }

    /// <summary>Per code width: the byte permute of <see cref="RowsAvx512"/> (also the codebook kernel's).</summary>
    internal static readonly Vector512<byte>[] Permutes = BuildUnpacking(permute: true);
    /// <summary>Per code width: the multishift counts of <see cref="RowsAvx512"/>.</summary>
    internal static readonly Vector512<byte>[] Shifts = BuildUnpacking(permute: false);

    /// <summary>Per width: byte 8j + i of the permute = byte j·bits + i of the step (run j's bytes in lane j); byte
    /// 8j + k of the shifts = k·bits (code k of the run).</summary>
    private static Vector512<byte>[] BuildUnpacking(bool permute)
    {
        var all = new Vector512<byte>[9];
        Span<byte> v = stackalloc byte[64];
        for (int bits = 1; bits <= 8; bits++)
        {
            for (int j = 0; j < 8; j++)
            {
                for (int i = 0; i < 8; i++)
                    v[8 * j + i] = permute ? (byte)Math.Min(63, j * bits + i) : (byte)(i * bits);
            }
            all[bits] = Vector512.Create((ReadOnlySpan<byte>)v);
        }
        return all;
    }
}
