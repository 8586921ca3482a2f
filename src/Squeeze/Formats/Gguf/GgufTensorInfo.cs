using Squeeze.Tensors;

namespace Squeeze.Formats.Gguf;

/// <summary>One tensor's entry in a GGUF header.</summary>
/// <param name="Name">Tensor name (llama.cpp's convention).</param>
/// <param name="Type">Storage type.</param>
/// <param name="Shape">Dimensions outermost first (PyTorch order): GGUF's ne[] reversed.</param>
/// <param name="Offset">Byte offset of the data from the start of the data section.</param>
/// <param name="ByteLength">Bytes of data: rows × row bytes.</param>
public sealed record GgufTensorInfo(string Name, GgmlType Type, long[] Shape, long Offset, long ByteLength)
{
    /// <summary>Product of the dimensions.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}
