using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// N:M sparsity: of every M consecutive weights of a row (columns [gM, gM + M)) exactly N are kept. Stored as the kept
/// values, a nested weight [rows, columns · N / M] (f16, uniform codes …), and for every kept value its position in its
/// group, <see cref="IndexBits"/> = ⌈log₂ M⌉ bits (2 for M = 4, 3 for M = 8), packed LSB-first, each row starting on a
/// byte (<see cref="IndexRowBytes"/>); positions within a group strictly increase.
/// </summary>
public sealed class NmSparseWeight : SparseRowsWeight
{
    private readonly ReadOnlyMemory<byte> indices; // [rows, IndexRowBytes]

    // 2:4: one byte of positions = four kept weights among eight columns; [256, 8]: lanes 0..3 = the column (0..7) of
    // each kept weight within the byte's eight, lanes 4..7 = 0 (a permutation that selects the kept inputs).
    private static readonly int[] TwoOfFourSelect = BuildTwoOfFourSelect();

    /// <exception cref="ArgumentException">The shapes disagree, or an index is out of range or out of order.</exception>
    public NmSparseWeight(string name, int rows, int columns, int n, int m, LinearWeight values, ReadOnlyMemory<byte> indices)
        : base(name, rows, columns, values)
    {
        if (FindProblem(rows, columns, n, m, values.Rows, values.Columns, indices.Span) is { } problem)
            throw new ArgumentException($"{name}: {problem}");
        N = n;
        M = m;
        this.indices = indices;
    }

    /// <summary>Weights kept in every group.</summary>
    public int N { get; }

    /// <summary>Group length.</summary>
    public int M { get; }

    /// <summary>Bits of one in-group position: ⌈log₂ M⌉.</summary>
    public int IndexBits => BitsFor(M);

    /// <summary>Bytes of one row's packed positions: ⌈KeptPerRow · IndexBits / 8⌉.</summary>
    public int IndexRowBytes => RowBytes(KeptPerRow, M);

    /// <summary>The packed positions, [rows, IndexRowBytes].</summary>
    public ReadOnlySpan<byte> Indices => indices.Span;

    /// <inheritdoc/>
    public override long IndexBytes => indices.Length;

    /// <inheritdoc/>
    public override string Scheme => $"{N}:{M} sparse ({Values.Scheme})";

    /// <summary>⌈log₂ m⌉.</summary>
    public static int BitsFor(int m) => 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)(m - 1));

    /// <summary>Bytes of one row of packed positions for <paramref name="kept"/> kept weights in groups of <paramref name="m"/>.</summary>
    public static int RowBytes(int kept, int m) => (int)(((long)kept * BitsFor(m) + 7) / 8);

    /// <summary>What is wrong with these parts, or null: the shapes, N and M, and every position (below M, strictly
    /// increasing in its group, padding bits zero).</summary>
    public static string? FindProblem(int rows, int columns, int n, int m, int valueRows, int valueColumns, ReadOnlySpan<byte> indices)
    {
        if (m < 2 || m > 16 || n < 1 || n >= m)
            return $"{n}:{m} sparsity needs 1 <= N < M <= 16";
        if (columns % m != 0)
            return $"{columns} columns are not whole groups of {m}";
        int kept = columns / m * n;
        if (valueRows != rows || valueColumns != kept)
            return $"kept values are [{valueRows}, {valueColumns}], expected [{rows}, {kept}]";
        int rowBytes = RowBytes(kept, m), bits = BitsFor(m);
        if (indices.Length != (long)rows * rowBytes)
            return $"positions take {indices.Length} bytes, expected {(long)rows * rowBytes}";
        for (int r = 0; r < rows; r++)
        {
            var row = indices.Slice(r * rowBytes, rowBytes);
            for (int k = 0; k < kept; k++)
            {
                int position = Read(row, k, bits);
                if (position >= m)
                    return $"row {r}, kept weight {k}: position {position} is outside a group of {m}";
                if (k % n != 0 && position <= Read(row, k - 1, bits))
                    return $"row {r}, group {k / n}: positions are not strictly increasing";
            }
            int usedBits = kept * bits;
            if (usedBits % 8 != 0 && row[^1] >> (usedBits % 8) != 0)
                return $"row {r}: padding bits after the last position are not zero";
        }
        return null;
    }

    /// <summary>Packs a pruning mask ([rows, columns], exactly N kept in every group) into positions, [rows, RowBytes].</summary>
    /// <exception cref="ArgumentException">A group does not keep exactly N.</exception>
    public static byte[] Pack(ReadOnlySpan<bool> mask, int rows, int columns, int n, int m)
    {
        int kept = columns / m * n, rowBytes = RowBytes(kept, m), bits = BitsFor(m);
        var packed = new byte[(long)rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            int k = 0;
            for (int g = 0; g < columns; g += m)
            {
                int inGroup = 0;
                for (int i = 0; i < m; i++)
                {
                    if (!mask[r * columns + g + i])
                        continue;
                    if (++inGroup > n)
                        break;
                    long bit = (long)k * bits;
                    int value = i << (int)(bit & 7);
                    packed[r * rowBytes + (bit >> 3)] |= (byte)value;
                    if ((bit & 7) + bits > 8)
                        packed[r * rowBytes + (bit >> 3) + 1] |= (byte)(value >> 8);
                    k++;
                }
                if (inGroup != n)
                    throw new ArgumentException($"row {r}, columns [{g}, {g + m}) keep {inGroup} weights, not {n}", nameof(mask));
            }
        }
        return packed;
    }

    /// <inheritdoc/>
    public override void KeptColumns(int row, Span<int> destination)
    {
        int kept = KeptPerRow, n = N, m = M, bits = IndexBits, rowBytes = IndexRowBytes;
        var packed = indices.Span.Slice(row * rowBytes, rowBytes);
        if (bits == 2)
        {
            // Four positions per byte.
            int k = 0;
            for (int b = 0; k < kept; b++)
            {
                int value = packed[b];
                for (int i = 0; i < 4 && k < kept; i++, k++, value >>= 2)
                    destination[k] = k / n * m + (value & 3);
            }
            return;
        }
        for (int k = 0; k < kept; k++)
            destination[k] = k / n * m + Read(packed, k, bits);
    }

    /// <summary>2:4 over f16 values with AVX2: the product reads the f16 values and the packed positions directly.</summary>
    internal override bool HasFusedDot => N == 2 && M == 4 && Values is BlockWeight { Type: GgmlType.F16 } && Avx2.IsSupported;

    /// <summary>2:4 over f16 values: per two bytes of positions (eight kept weights of sixteen columns), the kept inputs are
    /// picked out of two loads of eight by a permutation from a table (no gather), the eight f16 values widened and
    /// multiplied with them; summed in eight lanes, the tail in order.</summary>
    internal override unsafe float FusedDot(int row, float* x)
    {
        var tensor = ((BlockWeight)Values).Tensor;
        int kept = KeptPerRow, rowBytes = IndexRowBytes;
        ushort* values = (ushort*)(tensor.Data + (long)row * tensor.RowBytes);
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        int b = 0;
        fixed (byte* positions = indices.Span[(row * rowBytes)..])
        fixed (int* table = TwoOfFourSelect)
        {
            for (; 4 * (b + 4) <= kept; b += 4)
            {
                acc0 += Fp16.ToSingle(Halves(values + 4 * b)) * SelectInputs(x + 8 * b, table, positions + b);
                acc1 += Fp16.ToSingle(Halves(values + 4 * b + 8)) * SelectInputs(x + 8 * b + 16, table, positions + b + 2);
            }
            for (; 4 * (b + 2) <= kept; b += 2)
                acc0 += Fp16.ToSingle(Halves(values + 4 * b)) * SelectInputs(x + 8 * b, table, positions + b);
            float sum = Vector256.Sum(acc0 + acc1);
            for (int k = 4 * b; k < kept; k++)
                sum += Fp16.ToSingle(values[k]) * x[k / 2 * 4 + ((positions[k / 4] >> (2 * (k % 4))) & 3)];
            return sum;
        }
    }

    // Eight f16 values zero-extended to 32 bits.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<uint> Halves(ushort* values) => Avx2.ConvertToVector256Int32(Sse2.LoadVector128(values)).AsUInt32();

    // The eight kept inputs of sixteen columns x[0..16) whose positions are the two bytes at `positions`.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> SelectInputs(float* x, int* table, byte* positions)
    {
        var low = Avx2.PermuteVar8x32(Avx.LoadVector256(x), Avx.LoadVector256(table + 8 * positions[0]));
        var high = Avx2.PermuteVar8x32(Avx.LoadVector256(x + 8), Avx.LoadVector256(table + 8 * positions[1]));
        return Avx2.Permute2x128(low, high, 0x20);
    }

    private static int[] BuildTwoOfFourSelect()
    {
        var table = new int[256 * 8];
        for (int b = 0; b < 256; b++)
        {
            for (int i = 0; i < 4; i++)
                table[8 * b + i] = i / 2 * 4 + ((b >> (2 * i)) & 3);
        }
        return table;
    }

    // The k-th position of a row (bits wide, LSB-first).
    private static int Read(ReadOnlySpan<byte> row, int k, int bits)
    {
        int bit = k * bits, b = bit >> 3;
        int value = row[b] | (b + 1 < row.Length ? row[b + 1] << 8 : 0);
        return (value >> (bit & 7)) & ((1 << bits) - 1);
    }
}
