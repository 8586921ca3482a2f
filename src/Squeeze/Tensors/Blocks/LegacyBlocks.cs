using System.Runtime.InteropServices;

namespace Squeeze.Tensors.Blocks;

// ggml's 32-value blocks. Scales are stored as raw IEEE half bits (ushort); decode with HalfConversions.
// Sizes are asserted in tests (BlockSizeTests) against GgmlTypes.BlockBytes.

/// <summary>Q4_0 (18 bytes): <c>x = d * (q - 8)</c>, q 4-bit; low nibbles hold values 0..15, high nibbles 16..31.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ4_0
{
    /// <summary>Scale d (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>The 32 values q, 4 bits each, two per byte.</summary>
    public Bytes16 Qs;
}

/// <summary>Q4_1 (20 bytes): <c>x = d * q + m</c>, q 4-bit, same nibble order as Q4_0.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ4_1
{
    /// <summary>Scale d (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>Minimum m (IEEE half-precision bits).</summary>
    public ushort M;
    /// <summary>The 32 values q, 4 bits each, two per byte.</summary>
    public Bytes16 Qs;
}

/// <summary>Q5_0 (22 bytes): <c>x = d * (q - 16)</c>, q 5-bit: nibble plus bit j of the little-endian 32-bit <c>Qh</c>.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ5_0
{
    /// <summary>Scale d (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>[32] fifth bits, little-endian uint32.</summary>
    public Bytes4 Qh;
    /// <summary>[32] low nibbles.</summary>
    public Bytes16 Qs;
}

/// <summary>Q5_1 (24 bytes): <c>x = d * q + m</c>, q 5-bit as in Q5_0.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ5_1
{
    /// <summary>Scale d (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>Minimum m (IEEE half-precision bits).</summary>
    public ushort M;
    /// <summary>[32] fifth bits.</summary>
    public Bytes4 Qh;
    /// <summary>[32] low nibbles.</summary>
    public Bytes16 Qs;
}

/// <summary>Q8_0 (34 bytes): <c>x = d * q</c>, q signed 8-bit.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ8_0
{
    /// <summary>Scale d (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>[32] signed 8-bit values.</summary>
    public SBytes32 Qs;
}

/// <summary>Q8_1 (36 bytes): <c>x = d * q</c>; <c>S</c> caches <c>d * sum(q)</c> for dot products.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ8_1
{
    /// <summary>Scale d (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary><c>d * sum(qs)</c> (IEEE half-precision bits).</summary>
    public ushort S;
    /// <summary>[32] signed 8-bit values.</summary>
    public SBytes32 Qs;
}

/// <summary>IQ4_NL (18 bytes): <c>x = d * kvalues[q]</c>, q a 4-bit index into a fixed non-linear table, nibble order as Q4_0.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockIQ4_NL
{
    /// <summary>Scale d (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>The 32 table indices q, 4 bits each, two per byte.</summary>
    public Bytes16 Qs;
}
