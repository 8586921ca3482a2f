using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

/// <summary>
/// Fused products of codebook weights (per group a table of 2^bits f16 values indexed by bit-packed codes, least
/// significant bit first, each row from a byte boundary: the native format's "codebook" scheme) with f32 activations:
/// <c>y[r] = Σ_c table[r, c / group, code(r, c)] · x[c]</c>, the codes looked up straight into the dot product (no f32
/// row is written). <see cref="DotScalar"/> is the reference; the AVX-512 kernel (codes of at most 4 bits: one 16-entry
/// <c>vpermps</c> table) differs from it only in the order of the f32 sums.
/// </summary>
internal static unsafe class CodebookDot
{
    /// <summary>True when codes of <paramref name="bits"/> bits in groups of <paramref name="group"/> have the AVX-512
    /// kernel on this machine (groups whole runs of 16 codes).</summary>
    public static bool Supports(int bits, int group)
        => bits <= 4 && group % 16 == 0 && VecDot.Best == SimdLevel.Avx512 && Avx512Vbmi.IsSupported;

    /// <summary>Reference: row <paramref name="row"/>'s codes read one at a time from the bit stream, looked up and
    /// multiplied with x in order.</summary>
    public static float DotScalar(byte* codes, long rowBytes, ushort* tables, int bits, int group, int columns, int row, float* x)
    {
        byte* packed = codes + row * rowBytes;
        int levels = 1 << bits, mask = levels - 1;
        ushort* rowTables = tables + (long)row * (columns / group) * levels;
        float sum = 0;
        for (int c = 0; c < columns; c++)
        {
            long bit = (long)c * bits;
            int q = ((packed[bit >> 3] | (((bit & 7) + bits > 8 ? packed[(bit >> 3) + 1] : 0) << 8)) >> (int)(bit & 7)) & mask;
            sum += Fp16.ToSingle(rowTables[c / group * levels + q]) * x[c];
        }
        return sum;
    }

    /// <summary>
    /// <c>y[r] = </c><see cref="DotScalar"/> for rows [r0, r1) of <paramref name="rowBytes"/> packed bytes each, the codes
    /// ending at <paramref name="codesEnd"/>, 64 codes per step: unpacked to bytes as the uniform kernel does
    /// (<c>vpermb</c> + <c>vpmultishiftqb</c>), widened 16 at a time to the indices of one <c>vpermps</c> over the group's
    /// table, multiplied with x by FMA. A group's last step takes its whole runs of 16. Rows whose last step would load
    /// past the codes run <see cref="DotScalar"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    public static void RowsAvx512(byte* codes, byte* codesEnd, long rowBytes, ushort* tables, int bits, int group, int columns, int r0, int r1, float* x, float* y)
    {
        int levels = 1 << bits, groups = columns / group;
        Vector512<byte> permute = UniformDot.Permutes[bits], shifts = UniformDot.Shifts[bits];
        var mask = Vector512.Create((byte)(levels - 1));
        long total = codesEnd - codes;
        int vectorRows = (int)Math.Min(r1, total < 64 ? 0 : (total - 64) / rowBytes);
        int row = r0;
        for (; row < vectorRows; row++)
        {
            byte* packed = codes + row * rowBytes;
            ushort* rowTables = tables + (long)row * groups * levels;
            Vector512<float> acc0 = default, acc1 = default;
            for (int g = 0; g < groups; g++)
            {
                Vector512<float> table = Table(rowTables + g * levels, bits);
                for (int c = g * group, end = c + group; c < end; c += 64)
                {
                    Vector512<byte> q = Avx512Vbmi.MultiShift(shifts, Avx512Vbmi.PermuteVar64x8(Vector512.Load(packed + (c >> 3) * bits), permute).AsUInt64()) & mask;
                    int n = Math.Min(64, end - c);
                    acc0 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ConvertToVector512Int32(q.GetLower().GetLower())), Vector512.Load(x + c), acc0);
                    if (n >= 32)
                        acc1 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ConvertToVector512Int32(q.GetLower().GetUpper())), Vector512.Load(x + c + 16), acc1);
                    if (n >= 48)
                        acc0 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ConvertToVector512Int32(q.GetUpper().GetLower())), Vector512.Load(x + c + 32), acc0);
                    if (n == 64)
                        acc1 = Avx512F.FusedMultiplyAdd(Avx512F.PermuteVar16x32(table, Avx512F.ConvertToVector512Int32(q.GetUpper().GetUpper())), Vector512.Load(x + c + 48), acc1);
                }
            }
            y[row] = Vector512.Sum(acc0 + acc1);
        }
        for (row = Math.Max(r0, vectorRows); row < r1; row++)
            y[row] = DotScalar(codes, rowBytes, tables, bits, group, columns, row, x);
    }

    /// <summary>A group's 2^bits (≤ 16) f16 entries as f32 lanes (the lanes past them are never indexed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Table(ushort* entries, int bits)
    {
        Vector256<ushort> halves = bits switch
        {
            4 => Vector256.Load(entries),
            3 => Vector256.Create(Vector128.Load(entries), Vector128<ushort>.Zero),
            _ => Vector256.Create(Vector128.CreateScalar(*(ulong*)entries).AsUInt16(), Vector128<ushort>.Zero),
        };
        return Fp16.ToSingle(Avx512F.ConvertToVector512UInt32(halves));
    }
}
