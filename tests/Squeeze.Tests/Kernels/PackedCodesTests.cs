using Squeeze.Kernels;

namespace Squeeze.Tests.Kernels;

public unsafe class PackedCodesTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void Unpack_matches_the_scalar_reference_and_round_trips_pack(int bits)
    {
        var rng = new Random(bits);
        for (int count = 0; count <= 256; count++)
        {
            var codes = new byte[count];
            for (int i = 0; i < count; i++)
                codes[i] = (byte)rng.Next(1 << bits);
            var packed = new byte[PackedCodes.ByteCount(count, bits) + 8]; // slack: the 8-bit path reads 8 bytes at a time only within the count
            PackedCodes.Pack(codes, bits, packed);
            var expected = new float[count + 1];
            var actual = new float[count + 1];
            actual[count] = expected[count] = -7; // must stay untouched
            fixed (byte* p = packed)
            fixed (float* e = expected, a = actual)
            {
                PackedCodes.UnpackScalar(p, bits, count, e);
                PackedCodes.Unpack(p, bits, count, a);
            }
            Assert.Equal(codes.Select(c => (float)c).Append(-7f), expected);
            Assert.Equal(expected, actual);
        }
    }
}
