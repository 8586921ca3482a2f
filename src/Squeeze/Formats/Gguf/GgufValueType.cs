namespace Squeeze.Formats.Gguf;

/// <summary>Metadata value types, numbered as the GGUF specification numbers them.</summary>
public enum GgufValueType : uint
{
    /// <summary>Unsigned 8-bit integer.</summary>
    UInt8 = 0,
    /// <summary>Signed 8-bit integer.</summary>
    Int8 = 1,
    /// <summary>Unsigned 16-bit integer.</summary>
    UInt16 = 2,
    /// <summary>Signed 16-bit integer.</summary>
    Int16 = 3,
    /// <summary>Unsigned 32-bit integer.</summary>
    UInt32 = 4,
    /// <summary>Signed 32-bit integer.</summary>
    Int32 = 5,
    /// <summary>32-bit IEEE float.</summary>
    Float32 = 6,
    /// <summary>One byte, 0 or 1.</summary>
    Bool = 7,
    /// <summary>UTF-8 string preceded by its 64-bit byte length.</summary>
    String = 8,
    /// <summary>An element type, a 64-bit count, then that many values.</summary>
    Array = 9,
    /// <summary>Unsigned 64-bit integer.</summary>
    UInt64 = 10,
    /// <summary>Signed 64-bit integer.</summary>
    Int64 = 11,
    /// <summary>64-bit IEEE float.</summary>
    Float64 = 12,
}

/// <summary>
/// One metadata value with its exact GGUF type, so a writer can emit it again unchanged.
/// Scalars are boxed .NET primitives (<see cref="byte"/>, <see cref="sbyte"/>, <see cref="ushort"/>, <see cref="short"/>,
/// <see cref="uint"/>, <see cref="int"/>, <see cref="float"/>, <see cref="bool"/>, <see cref="string"/>, <see cref="ulong"/>,
/// <see cref="long"/>, <see cref="double"/>). An array's <see cref="Value"/> is a typed .NET array of its
/// <see cref="ElementType"/> (<c>string[]</c>, <c>float[]</c>, <c>int[]</c> …), or for arrays of arrays a
/// <see cref="GgufValue"/>[] whose items are themselves arrays.
/// </summary>
public sealed record GgufValue(GgufValueType Type, object Value, GgufValueType ElementType = GgufValueType.UInt8)
{
    /// <summary>The value in the plain shape of <see cref="GgufFile.Metadata"/>: scalars and typed arrays as stored,
    /// nested arrays as <c>object[]</c> of their plain items.</summary>
    public object Plain => Value is GgufValue[] nested ? nested.Select(v => v.Plain).ToArray() : Value;

    /// <summary>A scalar value.</summary>
    public static GgufValue Scalar(GgufValueType type, object value) => new(type, value);

    /// <summary>A string value.</summary>
    public static GgufValue String(string value) => new(GgufValueType.String, value);

    /// <summary>An array of <paramref name="elementType"/>, held as the matching typed .NET array (or <see cref="GgufValue"/>[] for nested arrays).</summary>
    public static GgufValue Array(GgufValueType elementType, System.Array items) => new(GgufValueType.Array, items, elementType);
}
