namespace Squeeze.Tensors;

/// <summary>
/// A named tensor whose bytes live in a <see cref="NativeBuffer"/> (usually a memory-mapped file), in any
/// <see cref="GgmlType"/>. <see cref="Shape"/> is outermost first, as in PyTorch: a weight matrix is
/// [rows = output features, columns = input features] and each row is stored contiguously.
/// </summary>
public sealed unsafe class Tensor
{
    /// <summary>A view of <paramref name="shape"/> values of <paramref name="type"/> starting <paramref name="offset"/> bytes into <paramref name="buffer"/>;
    /// <see cref="ArgumentException"/> when there are not 1 to 4 dimensions, a dimension is not positive, the innermost one does not fit the type's blocks, or the bytes run past the buffer.</summary>
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

    /// <summary>The tensor's name (llama.cpp's GGUF naming).</summary>
    public string Name { get; }

    /// <summary>Element or block type of the stored bytes.</summary>
    public GgmlType Type { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public long[] Shape { get; }

    /// <summary>Number of values: the product of <see cref="Shape"/>.</summary>
    public long ElementCount { get; }

    /// <summary>Length of the innermost dimension (values per row).</summary>
    public long Columns { get; }

    /// <summary>Product of all dimensions but the innermost.</summary>
    public long Rows { get; }

    /// <summary>Bytes of one row in <see cref="Type"/>.</summary>
    public long RowBytes { get; }

    /// <summary>Bytes of the whole tensor: <see cref="Rows"/> × <see cref="RowBytes"/>.</summary>
    public long ByteLength { get; }

    /// <summary>The memory the bytes live in (shared with other tensors of the same file).</summary>
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

    /// <summary>Name, type and shape, e.g. <c>blk.0.attn_q.weight Q4_K [288, 288]</c>.</summary>
    public override string ToString() => $"{Name} {Type} [{string.Join(", ", Shape)}]";
}
