namespace Squeeze.Tensors;

/// <summary>Conversions between f32 and the 16-bit float encodings ggml stores (IEEE half, bfloat16), as raw bits.</summary>
public static class HalfConversions
{
    /// <summary>Exact widening of IEEE half bits to f32.</summary>
    public static float F16ToF32(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>f32 to IEEE half bits, rounding to nearest even (what F16C's <c>vcvtps2ph</c> and ggml do);
    /// overflow gives ±infinity, NaN stays NaN.</summary>
    public static ushort F32ToF16(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>Exact widening of bfloat16 bits to f32: <c>bits &lt;&lt; 16</c>.</summary>
    public static float Bf16ToF32(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>f32 to bfloat16 bits as ggml's <c>GGML_FP32_TO_BF16</c>: round to nearest even on the upper 16 bits;
    /// a NaN keeps its sign and top mantissa bits and is forced quiet.</summary>
    public static ushort F32ToBf16(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if ((u & 0x7fffffffu) > 0x7f800000u)
            return (ushort)((u >> 16) | 64);
        return (ushort)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
    }
}
