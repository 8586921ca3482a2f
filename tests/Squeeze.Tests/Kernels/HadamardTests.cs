using System.Numerics;
using Squeeze.Kernels;

namespace Squeeze.Tests.Kernels;

public class HadamardTests
{
    [Fact]
    public void Vector_transform_is_bit_identical_to_the_reference_over_lengths_and_seeds()
    {
        for (int n = 1; n <= 4096; n <<= 1)
        {
            for (int seed = 0; seed < 8; seed++)
            {
                var rng = new Random(seed * 7919 + n);
                var expected = new float[n];
                for (int i = 0; i < n; i++)
                    expected[i] = (float)(rng.NextDouble() * 2 - 1) * MathF.Pow(10, rng.Next(-3, 4));
                var actual = expected.ToArray();
                Hadamard.TransformReference<float>(expected);
                Hadamard.Transform(actual);
                Assert.Equal(expected, actual);
            }
        }
    }

    [Fact]
    public void Reference_is_the_Sylvester_matrix()
    {
        for (int n = 1; n <= 64; n <<= 1)
        {
            for (int k = 0; k < n; k++)
            {
                var unit = new double[n];
                unit[k] = 1;
                Hadamard.TransformReference<double>(unit);
                for (int i = 0; i < n; i++)
                    Assert.Equal(BitOperations.PopCount((uint)(i & k)) % 2 == 0 ? 1.0 : -1.0, unit[i]);
            }
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(96)]
    [InlineData(288)]
    public void Refuses_lengths_that_are_not_powers_of_two(int n)
        => Assert.Throws<ArgumentException>(() => Hadamard.Transform(new float[n]));

    [Theory]
    [InlineData(288, 32)]
    [InlineData(768, 256)]
    [InlineData(64, 64)]
    [InlineData(7, 1)]
    public void Block_is_the_largest_power_of_two_divisor(int columns, int block)
        => Assert.Equal(block, Hadamard.LargestPowerOfTwoDivisor(columns));
}
