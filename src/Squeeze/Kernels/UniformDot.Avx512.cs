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
    /// by their blocks' d and summed in f32. A group's last step is masked to its length. Rows whose last step would load
    /// past the codes run <see cref="DotScalar"/>.
    /// </summary>
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
        int whole = group / 64 * 64, tail = group - whole; // every group: whole steps, then one masked step of tail codes
        Vector512<sbyte> tailBytes = Vector512.LessThan(Vector512<byte>.Indices, Vector512.Create((byte)tail)).AsSByte();
        Vector512<int> tailLanes = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(tail / 4));
        int vectorRows = Math.Min(r1, SafeRows(w, 64));
        for (int row = r0; row < vectorRows; row++)
        {
            byte* codes = w.Codes + row * w.RowBytes;
            ushort* rowScales = w.Scales + (long)row * groups;
            ushort* rowMins = symmetric ? null : w.Mins + (long)row * groups;
            Vector512<float> acc = default;
            for (int g = 0, c = 0; g < groups; g++)
            {
                Vector512<float> products = default, sums = default;
                for (int end = c + whole; c < end; c += 64)
                {
                    Vector512<byte> q = Avx512Vbmi.MultiShift(shifts, Avx512Vbmi.PermuteVar64x8(Vector512.Load(codes + (c >> 3) * bits), permute).AsUInt64()) & mask;
                    Vector512<int> dot = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, Vector512.Load(a + c)), ones);
                    if (symmetric)
                        dot -= Vector512.ShiftLeft(Vector512.Load(laneCounts + c / 4), bits - 1);
                    else
                        sums += Vector512.Load(laneSums + c / 4);
                    products = Avx512F.FusedMultiplyAdd(Vector512.ConvertToSingle(dot), Vector512.Load(laneScales + c / 4), products);
                }
                if (tail > 0)
                {
                    Vector512<byte> q = Avx512Vbmi.MultiShift(shifts, Avx512Vbmi.PermuteVar64x8(Vector512.Load(codes + (c >> 3) * bits), permute).AsUInt64()) & mask;
                    Vector512<int> dot = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q, Vector512.Load(a + c) & tailBytes), ones);
                    if (symmetric)
                        dot -= Vector512.ShiftLeft(Vector512.Load(laneCounts + c / 4) & tailLanes, bits - 1);
                    else
                        sums += Vector512.Load(laneSums + c / 4) & tailLanes.AsSingle();
                    products = Avx512F.FusedMultiplyAdd(Vector512.ConvertToSingle(dot), Vector512.Load(laneScales + c / 4), products);
                    c += tail;
                }
                acc = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowScales[g])), products, acc);
                if (!symmetric)
                    acc = Avx512F.FusedMultiplyAdd(Vector512.Create(Fp16.ToSingle(rowMins[g])), sums, acc);
            }
            y[row] = Vector512.Sum(acc);
        }
        for (int row = Math.Max(r0, vectorRows); row < r1; row++)
            y[row] = DotScalar(w, row, x);
    }

    private static readonly Vector512<byte>[] Permutes = BuildUnpacking(permute: true);
    private static readonly Vector512<byte>[] Shifts = BuildUnpacking(permute: false);

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
