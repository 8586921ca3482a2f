namespace Squeeze.Formats.Gguf;

/// <summary>Metadata value types, numbered as the GGUF specification numbers them.</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
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
