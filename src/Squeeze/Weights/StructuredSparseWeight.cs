using System.Buffers;
using System.Numerics;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// Structured pruning: whole output rows and whole input columns removed. Stores the kept sub-matrix as a nested weight
/// <see cref="Kept"/> [kept rows, kept columns] and two bitmasks (LSB first) saying which rows and columns are kept.
/// A removed row's outputs are zero; removed columns are never read: the product gathers the kept inputs, multiplies them
/// by <see cref="Kept"/> and scatters its outputs to the kept rows.
/// </summary>
public sealed class StructuredSparseWeight : LinearWeight
{
    private readonly byte[] rowMask;    // [⌈rows / 8⌉]
    private readonly byte[] columnMask; // [⌈columns / 8⌉]
    private readonly int[] keptRows;    // [Kept.Rows] ascending
    private readonly int[] keptColumns; // [Kept.Columns] ascending

    /// <exception cref="ArgumentException">The masks do not match the shapes.</exception>
    public StructuredSparseWeight(string name, int rows, int columns, byte[] rowMask, byte[] columnMask, LinearWeight kept)
        : base(name, rows, columns)
    {
        ArgumentNullException.ThrowIfNull(rowMask);
        ArgumentNullException.ThrowIfNull(columnMask);
        ArgumentNullException.ThrowIfNull(kept);
        if (FindProblem(rows, columns, rowMask, columnMask, kept.Rows, kept.Columns) is { } problem)
            throw new ArgumentException($"{name}: {problem}");
        this.rowMask = rowMask;
        this.columnMask = columnMask;
        Kept = kept;
        keptRows = SetBits(rowMask, rows);
        keptColumns = SetBits(columnMask, columns);
    }

    /// <summary>The kept sub-matrix, [kept rows, kept columns].</summary>
    public LinearWeight Kept { get; }

    /// <summary>Bit r set where row r is kept.</summary>
    public ReadOnlySpan<byte> RowMask => rowMask;

    /// <summary>Bit c set where column c is kept.</summary>
    public ReadOnlySpan<byte> ColumnMask => columnMask;

    /// <inheritdoc/>
    public override long StoredBytes => Kept.StoredBytes + rowMask.LongLength + columnMask.LongLength;

    /// <inheritdoc/>
    public override string Scheme => $"rows {Kept.Rows}/{Rows} columns {Kept.Columns}/{Columns} ({Kept.Scheme})";

    /// <summary>What is wrong with these parts, or null: mask lengths, padding bits zero, set bits = the kept shape.</summary>
    public static string? FindProblem(int rows, int columns, ReadOnlySpan<byte> rowMask, ReadOnlySpan<byte> columnMask, int keptRows, int keptColumns)
        => MaskProblem("row", rows, rowMask, keptRows) ?? MaskProblem("column", columns, columnMask, keptColumns);

    /// <summary>Bits of <paramref name="kept"/> ([length], true = kept), LSB first: [⌈length / 8⌉].</summary>
    public static byte[] Pack(ReadOnlySpan<bool> kept)
    {
        var packed = new byte[(kept.Length + 7) / 8];
        for (int i = 0; i < kept.Length; i++)
        {
            if (kept[i])
                packed[i / 8] |= (byte)(1 << (i % 8));
        }
        return packed;
    }

    /// <summary>The first <paramref name="length"/> bits of <paramref name="packed"/>, LSB first (the inverse of <see cref="Pack"/>).</summary>
    public static bool[] Unpack(ReadOnlySpan<byte> packed, int length)
    {
        var bits = new bool[length];
        for (int i = 0; i < length; i++)
            bits[i] = (packed[i / 8] >> (i % 8) & 1) != 0;
        return bits;
    }

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        destination.Clear();
        int k = Array.BinarySearch(keptRows, row);
        if (k < 0)
            return;
        var values = ArrayPool<float>.Shared.Rent(keptColumns.Length);
        try
        {
            Kept.DecodeRow(k, values.AsSpan(0, keptColumns.Length));
            for (int c = 0; c < keptColumns.Length; c++)
                destination[keptColumns[c]] = values[c];
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
        }
    }

    /// <summary>x's kept columns gathered, multiplied by <see cref="Kept"/>, scattered to the kept rows; removed rows get 0.
    /// Intermediates are pooled arrays (the inner product uses the context's scratch).</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        CheckProduct(x, tokens, y);
        if (tokens == 0)
            return;
        int kr = keptRows.Length, kc = keptColumns.Length, rows = Rows, columns = Columns;
        float[]? gathered = kc == columns ? null : ArrayPool<float>.Shared.Rent(tokens * kc);
        float[]? outputs = kr == rows ? null : ArrayPool<float>.Shared.Rent(tokens * kr);
        try
        {
            if (gathered is not null)
            {
                for (int t = 0; t < tokens; t++)
                {
                    var xt = x.Slice(t * columns, columns);
                    var gt = gathered.AsSpan(t * kc, kc);
                    for (int c = 0; c < kc; c++)
                        gt[c] = xt[keptColumns[c]];
                }
            }
            ReadOnlySpan<float> input = gathered is null ? x[..(tokens * columns)] : gathered.AsSpan(0, tokens * kc);
            if (outputs is null)
            {
                Kept.Multiply(input, tokens, context, y);
                return;
            }
            Kept.Multiply(input, tokens, context, outputs.AsSpan(0, tokens * kr));
            y[..(tokens * rows)].Clear();
            RowScatter.Scatter(outputs.AsSpan(0, tokens * kr), tokens, keptRows, y, rows);
        }
        finally
        {
            if (gathered is not null)
                ArrayPool<float>.Shared.Return(gathered);
            if (outputs is not null)
                ArrayPool<float>.Shared.Return(outputs);
        }
    }

    private static string? MaskProblem(string what, int length, ReadOnlySpan<byte> mask, int kept)
    {
        if (mask.Length != (length + 7) / 8)
            return $"the {what} mask takes {mask.Length} bytes, expected {(length + 7) / 8}";
        if (length % 8 != 0 && mask[^1] >> (length % 8) != 0)
            return $"the {what} mask has bits set beyond {what} {length - 1}";
        int set = 0;
        foreach (byte b in mask)
            set += BitOperations.PopCount(b);
        return set == kept ? null : $"the {what} mask keeps {set}, the kept matrix has {kept}";
    }

    private static int[] SetBits(byte[] mask, int length)
    {
        var result = new List<int>();
        for (int i = 0; i < length; i++)
        {
            if ((mask[i / 8] >> (i % 8) & 1) != 0)
                result.Add(i);
        }
        return [.. result];
    }
}
