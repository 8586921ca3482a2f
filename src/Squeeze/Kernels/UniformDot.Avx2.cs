using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

// 256-bit fused kernel (AVX2 + FMA + BMI2, AVX-VNNI where present): 32 codes per step. Callers check (For does).
internal static unsafe partial class UniformDot
{
    /// <summary>
    /// <see cref="DotScalar"/> for rows [r0, r1), 32 codes per step: each run of 8 codes (bits bytes, one 64-bit load) is
    /// spread to 8 bytes by BMI2 <c>pdep</c>; the codes meet the activation bytes in <c>vpdpbusd</c> (AVX-VNNI) or
    /// <c>vpmaddubsw</c> + <c>vpmaddwd</c> (8-bit codes split in their low 7 bits and top bit so no pair of products
    /// saturates), giving the 8 lanes' integer sums (less z·Σ a when symmetric), scaled by their blocks' d and summed in
    /// f32. A group's last step takes only its whole runs. Rows whose last step would load past the codes run
    /// <see cref="DotScalar"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    public static void RowsAvx2(in UniformRows w, int r0, int r1, byte* x, float* y)
    {
        int bits = w.Bits, group = w.Group, columns = w.Columns, groups = w.Groups;
        sbyte* a = (sbyte*)x;
        float* laneScales = (float*)(x + LaneScalesOffset(columns));
        float* laneSums = (float*)(x + LaneSumsOffset(columns));
        int* laneCounts = (int*)(x + LaneCountsOffset(columns));
        bool symmetric = w.Mins == null;
        ulong spread = ((1ul << bits) - 1) * 0x0101010101010101ul;
        int whole = group / 32 * 32, tail = group - whole; // every group: whole steps, then one step of tail / 8 runs
        Vector256<sbyte> tailBytes = Vector256.LessThan(Vector256<byte>.Indices, Vector256.Create((byte)tail)).AsSByte();
        Vector256<int> tailLanes = Vector256.LessThan(Vector256<int>.Indices, Vector256.Create(tail / 4));
        int vectorRows = Math.Min(r1, SafeRows(w, 3 * 8 + 8));
        for (int row = r0; row < vectorRows; row++)
        {
            byte* codes = w.Codes + row * w.RowBytes;
            ushort* rowScales = w.Scales + (long)row * groups;
            ushort* rowMins = symmetric ? null : w.Mins + (long)row * groups;
            Vector256<float> acc = default;
            for (int g = 0, c = 0; g < groups; g++)
            {
                Vector256<float> products = default, sums = default;
                for (int end = c + whole; c < end; c += 32)
                {
                    Vector256<int> dot = Dot32(Runs(codes + (c >> 3) * bits, bits, spread), Vector256.Load(a + c), bits);
                    if (symmetric)
                        dot -= Vector256.ShiftLeft(Vector256.Load(laneCounts + c / 4), bits - 1);
                    else
                        sums += Vector256.Load(laneSums + c / 4);
                    products = Fma.MultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Load(laneScales + c / 4), products);
                }
                if (tail > 0)
                {
                    Vector256<int> dot = Dot32(Runs(codes + (c >> 3) * bits, bits, spread), Vector256.Load(a + c) & tailBytes, bits);
                    if (symmetric)
                        dot -= Vector256.ShiftLeft(Vector256.Load(laneCounts + c / 4) & tailLanes, bits - 1);
                    else
                        sums += Vector256.Load(laneSums + c / 4) & tailLanes.AsSingle();
                    products = Fma.MultiplyAdd(Vector256.ConvertToSingle(dot), Vector256.Load(laneScales + c / 4), products);
                    c += tail;
                }
                acc = Fma.MultiplyAdd(Vector256.Create(Fp16.ToSingle(rowScales[g])), products, acc);
                if (!symmetric)
                    acc = Fma.MultiplyAdd(Vector256.Create(Fp16.ToSingle(rowMins[g])), sums, acc);
            }
            y[row] = Vector256.Sum(acc);
        }
        for (int row = Math.Max(r0, vectorRows); row < r1; row++)
            y[row] = DotScalar(w, row, x);
    }

    /// <summary>Four runs of 8 codes from <paramref name="p"/> (each bits bytes, read as one 64-bit word) spread to bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Runs(byte* p, int bits, ulong spread)
        => Vector256.Create(Bmi2.X64.ParallelBitDeposit(*(ulong*)p, spread), Bmi2.X64.ParallelBitDeposit(*(ulong*)(p + bits), spread),
            Bmi2.X64.ParallelBitDeposit(*(ulong*)(p + 2 * bits), spread), Bmi2.X64.ParallelBitDeposit(*(ulong*)(p + 3 * bits), spread)).AsByte();

    /// <summary>Lane i = Σ of bytes 4i..4i+3 of q·a (q unsigned codes of <paramref name="bits"/> bits, a signed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Dot32(Vector256<byte> q, Vector256<sbyte> a, int bits)
    {
        if (AvxVnni.IsSupported)
            return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, q, a);
        var ones = Vector256.Create((short)1);
        if (bits <= 7)
            return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q, a), ones);
        Vector256<int> low = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q & Vector256.Create((byte)0x7F), a), ones);
        Vector256<int> high = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Vector256.ShiftRightLogical(q.AsUInt16(), 7).AsByte() & Vector256.Create((byte)1), a), ones);
        return low + Vector256.ShiftLeft(high, 7);
    }
}
