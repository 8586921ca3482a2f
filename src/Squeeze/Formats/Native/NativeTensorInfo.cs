namespace Squeeze.Formats.Native;

/// <summary>A logical tensor of a native model: its name, logical shape, the scheme it is stored in (null for a plain
/// F32/F16/BF16 tensor) and the bytes it takes in the file.</summary>
public sealed record NativeTensorInfo(string Name, long[] Shape, string? Scheme, long StoredBytes)
{
    /// <summary>Values per row (the last dimension).</summary>
    public long Columns => Shape.Length == 0 ? 1 : Shape[^1];

    /// <summary>Rows (the product of every other dimension; 1 for a vector).</summary>
    public long Rows => Shape.Length <= 1 ? 1 : Shape[..^1].Aggregate(1L, (a, d) => a * d);

    /// <summary>True when the tensor is stored in a scheme rather than plain.</summary>
    public bool IsQuantized => Scheme is not null;
}
