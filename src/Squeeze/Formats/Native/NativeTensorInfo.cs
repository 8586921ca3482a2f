using Squeeze.Formats.Safetensors;

namespace Squeeze.Formats.Native;

/// <summary>One logical tensor of a native file: its name, logical shape, and how it is stored.</summary>
/// <param name="Name">The logical name (llama.cpp's GGUF tensor name, e.g. <c>blk.0.attn_q.weight</c>).</param>
/// <param name="Shape">Logical shape, outermost first; a quantized weight is [rows, cols].</param>
/// <param name="Scheme">The quantization scheme, or null for a plain tensor.</param>
/// <param name="StoredType">The stored dtype of a plain tensor (F32, F16, BF16); U8 (the codes) for a quantized one.</param>
public sealed record NativeTensorInfo(string Name, long[] Shape, UniformScheme? Scheme, SafetensorsDType StoredType)
{
    /// <summary>Length of one row: the last dimension (1 for a scalar).</summary>
    public long Columns => Shape.Length == 0 ? 1 : Shape[^1];

    /// <summary>Number of rows: the product of every dimension but the last.</summary>
    public long Rows => Shape.Length <= 1 ? 1 : Shape[..^1].Aggregate(1L, (a, d) => a * d);

    /// <summary>Whether the tensor is stored quantized.</summary>
    public bool IsQuantized => Scheme is not null;
}
