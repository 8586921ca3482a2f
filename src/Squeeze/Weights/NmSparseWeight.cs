namespace Squeeze.Weights;

/// <summary>
/// N:M sparsity: of every M consecutive weights of a row (columns [gM, gM + M)) exactly N are kept. Stored as the kept
/// values, a nested weight [rows, columns · N / M] (f16, uniform codes …), and for every kept value its position in its
/// group, <see cref="IndexBits"/> = ⌈log₂ M⌉ bits (2 for M = 4, 3 for M = 8), packed LSB-first, each row starting on a
/// byte (<see cref="IndexRowBytes"/>); positions within a group strictly increase.
/// </summary>
public sealed class NmSparseWeight : SparseRowsWeight
{
    private readonly byte[] indices; // [rows, IndexRowBytes]

    /// <exception cref="ArgumentException">The shapes disagree, or an index is out of range or out of order.</exception>
    public NmSparseWeight(string name, int rows, int columns, int n, int m, LinearWeight values, byte[] indices)
        : base(name, rows, columns, values)
    {
        ArgumentNullException.ThrowIfNull(indices);
        if (FindProblem(rows, columns, n, m, values.Rows, values.Columns, indices) is { } problem)
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
    public ReadOnlySpan<byte> Indices => indices;

    public override long IndexBytes => indices.LongLength;

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

    public override void KeptColumns(int row, Span<int> destination)
    {
        int kept = KeptPerRow, n = N, m = M, bits = IndexBits, rowBytes = IndexRowBytes;
        var packed = new ReadOnlySpan<byte>(indices, row * rowBytes, rowBytes);
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

    // The k-th position of a row (bits wide, LSB-first).
    private static int Read(ReadOnlySpan<byte> row, int k, int bits)
    {
        int bit = k * bits, b = bit >> 3;
        int value = row[b] | (b + 1 < row.Length ? row[b + 1] << 8 : 0);
        return (value >> (bit & 7)) & ((1 << bits) - 1);
    }
}
