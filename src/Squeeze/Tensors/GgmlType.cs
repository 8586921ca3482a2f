namespace Squeeze.Tensors;

/// <summary>Element and block types, numbered as ggml numbers them (the value stored in a GGUF tensor info).</summary>
public enum GgmlType : uint
{
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ4_NL = 20,
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
