using System.Runtime.InteropServices;

namespace Squeeze.Tensors.Blocks;

// ggml's 256-value "k-quant" super-blocks. Field order is the file order.

/// <summary>Q2_K (84 bytes): 16 sub-blocks of 16; <c>x = d * (sc &amp; 15) * q - dmin * (sc &gt;&gt; 4)</c>, q 2-bit.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ2_K
{
    public Bytes16 Scales;  // [16] low nibble scale, high nibble min
    public Bytes64 Qs;      // [256] 2-bit values, 4 per byte
    public ushort D;        // half super-scale of the scales
    public ushort DMin;     // half super-scale of the mins
}

/// <summary>Q3_K (110 bytes): 16 sub-blocks of 16; <c>x = d * (scale - 32) * (q - (high bit ? 0 : 4))</c>, q 2 low bits + 1 high bit, 6-bit scales.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ3_K
{
    public Bytes32 HMask;   // [256] high bits
    public Bytes64 Qs;      // [256] low 2 bits
    public Bytes12 Scales;  // [16] 6-bit scales, packed
    public ushort D;        // half super-scale
}

/// <summary>Q4_K (144 bytes): 8 sub-blocks of 32; <c>x = d * sc * q - dmin * m</c>, q 4-bit, 6-bit sc and m packed in 12 bytes.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ4_K
{
    public ushort D;        // half super-scale of the scales
    public ushort DMin;     // half super-scale of the mins
    public Bytes12 Scales;  // [8] scales and [8] mins, 6 bits each
    public Bytes128 Qs;     // [256] nibbles
}

/// <summary>Q5_K (176 bytes): as Q4_K with a fifth bit per value in <c>Qh</c>.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ5_K
{
    public ushort D;        // half super-scale of the scales
    public ushort DMin;     // half super-scale of the mins
    public Bytes12 Scales;  // [8] scales and [8] mins, 6 bits each
    public Bytes32 Qh;      // [256] fifth bits
    public Bytes128 Qs;     // [256] low nibbles
}

/// <summary>Q6_K (210 bytes): 16 sub-blocks of 16; <c>x = d * scale * (q - 32)</c>, q 6-bit (4 low in Ql, 2 high in Qh), int8 scales.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ6_K
{
    public Bytes128 Ql;     // [256] low nibbles
    public Bytes64 Qh;      // [256] high 2 bits
    public SBytes16 Scales; // [16]
    public ushort D;        // half super-scale
}

/// <summary>Q8_K (292 bytes): <c>x = d * q</c> with an f32 scale; <c>BSums</c> caches the sum of each group of 16 (for dot products).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ8_K
{
    public float D;         // f32 scale
    public SBytes256 Qs;    // [256]
    public Int16x16 BSums;  // [16] sums of groups of 16
}
