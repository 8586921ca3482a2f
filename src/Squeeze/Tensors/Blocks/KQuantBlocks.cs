using System.Runtime.InteropServices;

namespace Squeeze.Tensors.Blocks;

// ggml's 256-value "k-quant" super-blocks. Field order is the file order.

/// <summary>Q2_K (84 bytes): 16 sub-blocks of 16; <c>x = d * (sc &amp; 15) * q - dmin * (sc &gt;&gt; 4)</c>, q 2-bit.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ2_K
{
    /// <summary>[16] low nibble scale, high nibble min.</summary>
    public Bytes16 Scales;
    /// <summary>[256] 2-bit values, 4 per byte.</summary>
    public Bytes64 Qs;
    /// <summary>Super-scale d of the sub-block scales (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>Super-scale dmin of the sub-block mins (IEEE half-precision bits).</summary>
    public ushort DMin;
}

/// <summary>Q3_K (110 bytes): 16 sub-blocks of 16; <c>x = d * (scale - 32) * (q - (high bit ? 0 : 4))</c>, q 2 low bits + 1 high bit, 6-bit scales.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ3_K
{
    /// <summary>[256] high bits.</summary>
    public Bytes32 HMask;
    /// <summary>[256] low 2 bits.</summary>
    public Bytes64 Qs;
    /// <summary>[16] 6-bit scales, packed.</summary>
    public Bytes12 Scales;
    /// <summary>Super-scale d of the sub-block scales (IEEE half-precision bits).</summary>
    public ushort D;
}

/// <summary>Q4_K (144 bytes): 8 sub-blocks of 32; <c>x = d * sc * q - dmin * m</c>, q 4-bit, 6-bit sc and m packed in 12 bytes.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ4_K
{
    /// <summary>Super-scale d of the sub-block scales (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>Super-scale dmin of the sub-block mins (IEEE half-precision bits).</summary>
    public ushort DMin;
    /// <summary>[8] scales and [8] mins, 6 bits each.</summary>
    public Bytes12 Scales;
    /// <summary>The 256 values q, 4 bits each, two per byte.</summary>
    public Bytes128 Qs;
}

/// <summary>Q5_K (176 bytes): as Q4_K with a fifth bit per value in <c>Qh</c>.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ5_K
{
    /// <summary>Super-scale d of the sub-block scales (IEEE half-precision bits).</summary>
    public ushort D;
    /// <summary>Super-scale dmin of the sub-block mins (IEEE half-precision bits).</summary>
    public ushort DMin;
    /// <summary>[8] scales and [8] mins, 6 bits each.</summary>
    public Bytes12 Scales;
    /// <summary>[256] fifth bits.</summary>
    public Bytes32 Qh;
    /// <summary>[256] low nibbles.</summary>
    public Bytes128 Qs;
}

/// <summary>Q6_K (210 bytes): 16 sub-blocks of 16; <c>x = d * scale * (q - 32)</c>, q 6-bit (4 low in Ql, 2 high in Qh), int8 scales.</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ6_K
{
    /// <summary>[256] low nibbles.</summary>
    public Bytes128 Ql;
    /// <summary>[256] high 2 bits.</summary>
    public Bytes64 Qh;
    /// <summary>[16] signed 8-bit scale of each sub-block of 16.</summary>
    public SBytes16 Scales;
    /// <summary>Super-scale d of the sub-block scales (IEEE half-precision bits).</summary>
    public ushort D;
}

/// <summary>Q8_K (292 bytes): <c>x = d * q</c> with an f32 scale; <c>BSums</c> caches the sum of each group of 16 (for dot products).</summary>
[StructLayout(LayoutKind.Sequential, Pack = 1)]
public struct BlockQ8_K
{
    /// <summary>Scale d, f32.</summary>
    public float D;
    /// <summary>[256] signed 8-bit values.</summary>
    public SBytes256 Qs;
    /// <summary>[16] sums of groups of 16.</summary>
    public Int16x16 BSums;
}
