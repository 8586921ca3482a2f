namespace Squeeze.Tensors;

/// <summary>
/// A named tensor whose bytes live in a <see cref="NativeBuffer"/> (usually a memory-mapped file), in any
/// <see cref="GgmlType"/>. <see cref="Shape"/> is outermost first, as in PyTorch: a weight matrix is
/// [rows = output features, columns = input features] and each row is stored contiguously.
/// </summary>
public sealed unsafe class Tensor
{
    public Tensor(string name, GgmlType type, long[] shape, NativeBuffer buffer, long offset)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(buffer);
        if (shape.Length is 0 or > 4)
            throw new ArgumentException($"tensor '{name}' has {shape.Length} dimensions; 1 to 4 are supported", nameof(shape));
        long count = 1;
        foreach (long d in shape)
        {
            if (d <= 0)
                throw new ArgumentException($"tensor '{name}' has a dimension of {d}", nameof(shape));
            count = checked(count * d);
        }
        Name = name;
        Type = type;
        Shape = shape;
        ElementCount = count;
        Columns = shape[^1];
        Rows = count / Columns;
        RowBytes = GgmlTypes.RowBytes(type, Columns);
        ByteLength = checked(RowBytes * Rows);
        if (offset < 0 || offset > buffer.Length - ByteLength)
            throw new ArgumentException($"tensor '{name}' ({ByteLength} bytes at offset {offset}) runs past the end of {buffer.Origin} ({buffer.Length} bytes)", nameof(offset));
        Buffer = buffer;
        Offset = offset;
    }

    public string Name { get; }

    public GgmlType Type { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public long[] Shape { get; }

    public long ElementCount { get; }

    /// <summary>Length of the innermost dimension (values per row).</summary>
    public long Columns { get; }

    /// <summary>Product of all dimensions but the innermost.</summary>
    public long Rows { get; }

    /// <summary>Bytes of one row in <see cref="Type"/>.</summary>
    public long RowBytes { get; }

    public long ByteLength { get; }

    public NativeBuffer Buffer { get; }

    /// <summary>Byte offset of the first element inside <see cref="Buffer"/>.</summary>
    public long Offset { get; }

    /// <summary>Address of the first byte.</summary>
    public byte* Data => Buffer.Pointer + Offset;

    /// <summary>The encoded bytes of row <paramref name="row"/>.</summary>
    public ReadOnlySpan<byte> Row(long row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Rows);
        return new ReadOnlySpan<byte>(Data + row * RowBytes, checked((int)RowBytes));
    }

    /// <summary>Bits per weight of the stored encoding.</summary>
    public double BitsPerWeight => 8.0 * ByteLength / ElementCount;

    public override string ToString() => $"{Name} {Type} [{string.Join(", ", Shape)}]";
}
