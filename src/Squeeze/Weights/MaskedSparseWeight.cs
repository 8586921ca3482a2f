using System.Numerics;

namespace Squeeze.Weights;

/// <summary>
/// Unstructured sparsity with the same number of kept weights in every row (what per-row pruning produces): a bitmask
/// [rows, ⌈columns / 8⌉ bytes], bit c of a row (byte c / 8, bit c mod 8, LSB first) set where column c is kept, and the
/// kept values in column order as a nested weight [rows, kept per row]. At 25–60 % sparsity a bitmask (1 bit per weight)
/// is far smaller than CSR's column index per kept weight (⌈log₂ columns⌉ ≥ 9 bits each for 288+ columns, so 3.6 to
/// 6.8 bits per weight of the matrix); it loses only below about 1 / log₂(columns) ≈ 10 % kept.
/// </summary>
public sealed class MaskedSparseWeight : SparseRowsWeight
{
    private readonly byte[] mask; // [rows, MaskRowBytes]

    /// <exception cref="ArgumentException">The shapes disagree, or a row's set bits are not the kept count.</exception>
    public MaskedSparseWeight(string name, int rows, int columns, LinearWeight values, byte[] mask)
        : base(name, rows, columns, values)
    {
        ArgumentNullException.ThrowIfNull(mask);
        if (FindProblem(rows, columns, values.Rows, values.Columns, mask) is { } problem)
            throw new ArgumentException($"{name}: {problem}");
        this.mask = mask;
    }

    /// <summary>Bytes of one row of the mask: ⌈columns / 8⌉.</summary>
    public int MaskRowBytes => (Columns + 7) / 8;

    /// <summary>The bitmask, [rows, MaskRowBytes].</summary>
    public ReadOnlySpan<byte> Mask => mask;

    public override long IndexBytes => mask.LongLength;

    public override string Scheme => $"{1.0 - (double)KeptPerRow / Columns:0.##} sparse ({Values.Scheme})";

    /// <summary>What is wrong with these parts, or null: the shapes, every row's count of set bits, padding bits zero.</summary>
    public static string? FindProblem(int rows, int columns, int valueRows, int valueColumns, ReadOnlySpan<byte> mask)
    {
        int rowBytes = (columns + 7) / 8;
        if (valueRows != rows || valueColumns > columns)
            return $"kept values are [{valueRows}, {valueColumns}], which do not fit [{rows}, {columns}]";
        if (mask.Length != (long)rows * rowBytes)
            return $"the mask takes {mask.Length} bytes, expected {(long)rows * rowBytes}";
        for (int r = 0; r < rows; r++)
        {
            var row = mask.Slice(r * rowBytes, rowBytes);
            if (columns % 8 != 0 && row[^1] >> (columns % 8) != 0)
                return $"row {r}: mask bits beyond column {columns - 1} are set";
            int set = 0;
            foreach (byte b in row)
                set += BitOperations.PopCount(b);
            if (set != valueColumns)
                return $"row {r}: the mask keeps {set} weights, the values hold {valueColumns}";
        }
        return null;
    }

    /// <summary>Packs a pruning mask ([rows, columns], true = kept) into bits, [rows, ⌈columns / 8⌉].</summary>
    public static byte[] Pack(ReadOnlySpan<bool> kept, int rows, int columns)
    {
        int rowBytes = (columns + 7) / 8;
        var packed = new byte[(long)rows * rowBytes];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                if (kept[r * columns + c])
                    packed[r * rowBytes + c / 8] |= (byte)(1 << (c % 8));
            }
        }
        return packed;
    }

    public override void KeptColumns(int row, Span<int> destination)
    {
        int rowBytes = MaskRowBytes, k = 0;
        var bits = new ReadOnlySpan<byte>(mask, row * rowBytes, rowBytes);
        for (int b = 0; b < bits.Length; b++)
        {
            uint value = bits[b];
            while (value != 0)
            {
                destination[k++] = b * 8 + BitOperations.TrailingZeroCount(value);
                value &= value - 1;
            }
        }
    }
}
