namespace Squeeze.Tensors;

/// <summary>Decoding of every <see cref="GgmlType"/> to f32 (scalar reference, bit-exact with ggml).</summary>
public static partial class Dequantize
{
    /// <summary>Decodes one row: <c>destination[i] = value i of the encoded row</c>. <paramref name="source"/> holds
    /// exactly <c>RowBytes(type, destination.Length)</c> bytes.</summary>
    public static void Row(GgmlType type, ReadOnlySpan<byte> source, Span<float> destination)
        => throw new NotImplementedException("being written on branch gguf");
}
