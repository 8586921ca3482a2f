using System.Runtime.CompilerServices;

namespace Squeeze.Tensors.Blocks;

// Fixed-length byte runs inside block structs. InlineArray keeps the structs blittable and indexable through
// `ref readonly` without unsafe code.

/// <summary>4 inline bytes.</summary>
[InlineArray(4)]
public struct Bytes4 { private byte element0; }

/// <summary>12 inline bytes.</summary>
[InlineArray(12)]
public struct Bytes12 { private byte element0; }

/// <summary>16 inline bytes.</summary>
[InlineArray(16)]
public struct Bytes16 { private byte element0; }

/// <summary>32 inline bytes.</summary>
[InlineArray(32)]
public struct Bytes32 { private byte element0; }

/// <summary>64 inline bytes.</summary>
[InlineArray(64)]
public struct Bytes64 { private byte element0; }

/// <summary>128 inline bytes.</summary>
[InlineArray(128)]
public struct Bytes128 { private byte element0; }

/// <summary>32 inline signed bytes.</summary>
[InlineArray(32)]
public struct SBytes32 { private sbyte element0; }

/// <summary>16 inline signed bytes.</summary>
[InlineArray(16)]
public struct SBytes16 { private sbyte element0; }

/// <summary>256 inline signed bytes.</summary>
[InlineArray(256)]
public struct SBytes256 { private sbyte element0; }

/// <summary>16 inline 16-bit integers.</summary>
[InlineArray(16)]
public struct Int16x16 { private short element0; }
