using Squeeze.Tensors;

namespace Squeeze.Formats.Safetensors;

/// <summary>Element types of the safetensors format, spelled in the header as the member names ("F32", "BF16", "U8").</summary>
public enum SafetensorsDType
{
    /// <summary>Boolean, one byte.</summary>
    BOOL,
    /// <summary>Unsigned 8-bit integer.</summary>
    U8,
    /// <summary>Signed 8-bit integer.</summary>
    I8,
    /// <summary>8-bit float with 5 exponent and 2 mantissa bits.</summary>
    F8_E5M2,
    /// <summary>8-bit float with 4 exponent and 3 mantissa bits.</summary>
    F8_E4M3,
    /// <summary>Signed 16-bit integer.</summary>
    I16,
    /// <summary>Unsigned 16-bit integer.</summary>
    U16,
    /// <summary>16-bit IEEE half float.</summary>
    F16,
    /// <summary>16-bit brain float (the upper half of an f32).</summary>
    BF16,
    /// <summary>Signed 32-bit integer.</summary>
    I32,
    /// <summary>Unsigned 32-bit integer.</summary>
    U32,
    /// <summary>32-bit IEEE float.</summary>
    F32,
    /// <summary>64-bit IEEE float.</summary>
    F64,
    /// <summary>Signed 64-bit integer.</summary>
    I64,
    /// <summary>Unsigned 64-bit integer.</summary>
    U64,
}

/// <summary>Sizes and names of <see cref="SafetensorsDType"/> values, and their mapping to runtime <see cref="GgmlType"/>s.</summary>
public static class SafetensorsDTypes
{
    /// <summary>Bytes of one element.</summary>
    public static int Size(SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.BOOL or SafetensorsDType.U8 or SafetensorsDType.I8 or SafetensorsDType.F8_E5M2 or SafetensorsDType.F8_E4M3 => 1,
        SafetensorsDType.I16 or SafetensorsDType.U16 or SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        SafetensorsDType.I32 or SafetensorsDType.U32 or SafetensorsDType.F32 => 4,
        SafetensorsDType.F64 or SafetensorsDType.I64 or SafetensorsDType.U64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown safetensors dtype"),
    };

    /// <summary>The header spelling of <paramref name="dtype"/> ("F32").</summary>
    public static string Name(SafetensorsDType dtype) => Enum.IsDefined(dtype)
        ? dtype.ToString()
        : throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown safetensors dtype");

    /// <summary>Parses a header dtype string; exact, case-sensitive spelling as the format defines it.</summary>
    public static bool TryParse(string name, out SafetensorsDType dtype)
    {
        foreach (var d in Enum.GetValues<SafetensorsDType>())
        {
            if (string.Equals(d.ToString(), name, StringComparison.Ordinal))
            {
                dtype = d;
                return true;
            }
        }
        dtype = default;
        return false;
    }

    /// <summary>The runtime tensor type for the float dtypes F32, F16 and BF16; false for every other dtype.</summary>
    public static bool TryGetGgmlType(SafetensorsDType dtype, out GgmlType type)
    {
        type = dtype switch
        {
            SafetensorsDType.F32 => GgmlType.F32,
            SafetensorsDType.F16 => GgmlType.F16,
            SafetensorsDType.BF16 => GgmlType.BF16,
            _ => (GgmlType)uint.MaxValue,
        };
        return type != (GgmlType)uint.MaxValue;
    }

    /// <summary>The safetensors dtype of a runtime float type (F32, F16, BF16); false for block-quantized types.</summary>
    public static bool TryFromGgmlType(GgmlType type, out SafetensorsDType dtype)
    {
        switch (type)
        {
            case GgmlType.F32: dtype = SafetensorsDType.F32; return true;
            case GgmlType.F16: dtype = SafetensorsDType.F16; return true;
            case GgmlType.BF16: dtype = SafetensorsDType.BF16; return true;
            default: dtype = default; return false;
        }
    }
}

/// <summary>One tensor entry of a safetensors header: dtype, shape and its byte range [<see cref="Begin"/>,
/// <see cref="End"/>) relative to the start of the data section.</summary>
/// <param name="Name">The tensor's name as stored.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions, outermost first; empty for a scalar, and a dimension may be 0.</param>
/// <param name="Begin">First byte, relative to the data section.</param>
/// <param name="End">One past the last byte, relative to the data section.</param>
public sealed record SafetensorsTensorInfo(string Name, SafetensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, d) => a * d);

    /// <summary>Bytes of data: <c>End - Begin</c>.</summary>
    public long ByteLength => End - Begin;

    /// <summary>Whether the dtype is one the runtime computes with (F32, F16, BF16).</summary>
    public bool IsFloat => SafetensorsDTypes.TryGetGgmlType(DType, out _);
}
