using Squeeze.Tensors;

namespace Squeeze.Tests.Tensors;

public class HalfConversionsTests
{
    [Fact]
    public void F16_round_trips_every_non_nan_half_exactly()
    {
        for (int bits = 0; bits < 65536; bits++)
        {
            float f = HalfConversions.F16ToF32((ushort)bits);
            if (float.IsNaN(f))
                continue;
            Assert.Equal((ushort)bits, HalfConversions.F32ToF16(f));
        }
    }

    [Theory]
    [InlineData(0x3C00, 1.0f)]
    [InlineData(0xC000, -2.0f)]
    [InlineData(0x0001, 5.9604645e-08f)]  // smallest subnormal
    [InlineData(0x7BFF, 65504f)]
    [InlineData(0x7C00, float.PositiveInfinity)]
    public void F16_known_values(int bits, float expected) => Assert.Equal(expected, HalfConversions.F16ToF32((ushort)bits));

    [Fact]
    public void F32_to_F16_rounds_to_nearest_even()
    {
        // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
        Assert.Equal(0x3C00, HalfConversions.F32ToF16(1f + MathF.Pow(2, -11)));
        // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        Assert.Equal(0x3C02, HalfConversions.F32ToF16(1f + 3 * MathF.Pow(2, -11)));
        Assert.Equal(0x7C00, HalfConversions.F32ToF16(1e6f));
    }

    [Fact]
    public void Bf16_is_the_upper_half_of_f32()
    {
        Assert.Equal(1.0f, HalfConversions.Bf16ToF32(0x3F80));
        Assert.Equal(-2.0f, HalfConversions.Bf16ToF32(0xC000));
        for (int bits = 0; bits < 65536; bits += 7)
        {
            float f = HalfConversions.Bf16ToF32((ushort)bits);
            Assert.Equal((uint)bits << 16, BitConverter.SingleToUInt32Bits(f));
            if (!float.IsNaN(f))
                Assert.Equal((ushort)bits, HalfConversions.F32ToBf16(f));
        }
    }

    [Fact]
    public void F32_to_Bf16_rounds_to_nearest_even_and_keeps_nan_quiet()
    {
        Assert.Equal(0x3F80, HalfConversions.F32ToBf16(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie, even stays
        Assert.Equal(0x3F82, HalfConversions.F32ToBf16(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie, odd rounds up
        Assert.Equal(0x3F81, HalfConversions.F32ToBf16(BitConverter.UInt32BitsToSingle(0x3F808001))); // above the tie
        Assert.Equal(0x7FC0, HalfConversions.F32ToBf16(BitConverter.UInt32BitsToSingle(0x7F800001)) & 0xFFC0); // signalling NaN → quiet
        Assert.True(float.IsNaN(HalfConversions.Bf16ToF32(HalfConversions.F32ToBf16(float.NaN))));
    }
}
