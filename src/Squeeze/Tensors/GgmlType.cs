namespace Squeeze.Tensors;

/// <summary>Element and block types, numbered as ggml numbers them (the value stored in a GGUF tensor info).</summary>
public enum GgmlType : uint
{
    /// <summary>32-bit IEEE float.</summary>
    F32 = 0,
    /// <summary>16-bit IEEE half float.</summary>
    F16 = 1,
    /// <summary>Blocks of 32: 4-bit values, one f16 scale (4.5 bits per weight).</summary>
    Q4_0 = 2,
    /// <summary>Blocks of 32: 4-bit values, f16 scale and minimum (5.0 bits per weight).</summary>
    Q4_1 = 3,
    /// <summary>Blocks of 32: 5-bit values, one f16 scale (5.5 bits per weight).</summary>
    Q5_0 = 6,
    /// <summary>Blocks of 32: 5-bit values, f16 scale and minimum (6.0 bits per weight).</summary>
    Q5_1 = 7,
    /// <summary>Blocks of 32: signed 8-bit values, one f16 scale (8.5 bits per weight).</summary>
    Q8_0 = 8,
    /// <summary>Blocks of 32: signed 8-bit values, f16 scale and scaled sum; activations for Q4_1/Q5_1 dot products.</summary>
    Q8_1 = 9,
    /// <summary>Super-blocks of 256: 2-bit values, 4-bit sub-block scales and mins (2.625 bits per weight).</summary>
    Q2_K = 10,
    /// <summary>Super-blocks of 256: 3-bit values, 6-bit sub-block scales (3.4375 bits per weight).</summary>
    Q3_K = 11,
    /// <summary>Super-blocks of 256: 4-bit values, 6-bit sub-block scales and mins (4.5 bits per weight).</summary>
    Q4_K = 12,
    /// <summary>Super-blocks of 256: 5-bit values, 6-bit sub-block scales and mins (5.5 bits per weight).</summary>
    Q5_K = 13,
    /// <summary>Super-blocks of 256: 6-bit values, 8-bit sub-block scales (6.5625 bits per weight).</summary>
    Q6_K = 14,
    /// <summary>Super-blocks of 256: signed 8-bit values, f32 scale, sums of 16; activations for k-quant dot products.</summary>
    Q8_K = 15,
    /// <summary>Blocks of 32: 4-bit indices into a fixed non-linear table, one f16 scale (4.5 bits per weight).</summary>
    IQ4_NL = 20,
    /// <summary>16-bit brain float: the upper half of an f32.</summary>
    BF16 = 30,
}

/// <summary>Block geometry of each <see cref="GgmlType"/>: how many values a block holds and how many bytes it takes.</summary>
public static class GgmlTypes
{
    /// <summary>Number of values in one block (1 for plain float types).</summary>
    public static int BlockSize(GgmlType type) => type switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => 1,
        GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 or GgmlType.Q8_0 or GgmlType.Q8_1 or GgmlType.IQ4_NL => 32,
        GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q8_K => 256,
        _ => throw new NotSupportedException($"tensor type {(uint)type} is not supported"),
    };

    /// <summary>Bytes taken by one block.</summary>
    public static int BlockBytes(GgmlType type) => type switch
    {
        GgmlType.F32 => 4,
        GgmlType.F16 or GgmlType.BF16 => 2,
        GgmlType.Q4_0 => 2 + 16,
        GgmlType.Q4_1 => 2 + 2 + 16,
        GgmlType.Q5_0 => 2 + 4 + 16,
        GgmlType.Q5_1 => 2 + 2 + 4 + 16,
        GgmlType.Q8_0 => 2 + 32,
        GgmlType.Q8_1 => 2 + 2 + 32,
        GgmlType.IQ4_NL => 2 + 16,
        GgmlType.Q2_K => 16 + 64 + 2 + 2,
        GgmlType.Q3_K => 32 + 64 + 12 + 2,
        GgmlType.Q4_K => 2 + 2 + 12 + 128,
        GgmlType.Q5_K => 2 + 2 + 12 + 32 + 128,
        GgmlType.Q6_K => 128 + 64 + 16 + 2,
        GgmlType.Q8_K => 4 + 256 + 32,
        _ => throw new NotSupportedException($"tensor type {(uint)type} is not supported"),
    };

    /// <summary>True for the types Squeeze reads, writes and runs (every defined member).</summary>
    public static bool IsKnown(uint value) => Enum.IsDefined(typeof(GgmlType), value);

    /// <summary>Bytes of a row of <paramref name="length"/> values; the length must be a multiple of the block size.</summary>
    public static long RowBytes(GgmlType type, long length)
    {
        int block = BlockSize(type);
        if (length % block != 0)
            throw new ArgumentException($"a row of {length} values does not fit {type} blocks of {block}", nameof(length));
        return length / block * BlockBytes(type);
    }

    /// <summary>Parses a type name as ggml spells it (case-insensitive): "q4_k", "F16", "iq4_nl".</summary>
    public static bool TryParse(string name, out GgmlType type) => Enum.TryParse(name, ignoreCase: true, out type) && Enum.IsDefined(type);
}
