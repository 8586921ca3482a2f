using System.Numerics;
using Squeeze.Kernels;

namespace Squeeze.Tests.Kernels;

public class RandomizedHadamardTests
{
    [Fact]
    public void SplitMix64_gives_the_published_sequence()
    {
        // First outputs of the reference splitmix64.c (Vigna) seeded with 1234567.
        var random = new SplitMix64(1234567);
        Assert.Equal(6457827717110365317UL, random.Next());
        Assert.Equal(3203168211198807973UL, random.Next());
        Assert.Equal(9817491932198370423UL, random.Next());
    }

    [Theory]
    [InlineData(288, 1UL, false)]
    [InlineData(288, 2UL, true)]
    [InlineData(96, 99UL, true)]
    [InlineData(64, 5UL, false)]
    [InlineData(20, 3UL, true)]
    public void Forward_is_the_dense_matrix_written_from_the_definition(int columns, ulong seed, bool permute)
    {
        var transform = new RandomizedHadamard(columns, seed, permute);
        var dense = DenseMatrix(columns, seed, permute);
        var rng = new Random(columns);
        var x = Enumerable.Range(0, columns).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        var y = new double[columns];
        transform.Forward<double>(x, y);
        for (int i = 0; i < columns; i++)
        {
            double expected = 0;
            for (int j = 0; j < columns; j++)
                expected += dense[i, j] * x[j];
            Assert.Equal(expected, y[i], 1e-12);
        }

        var xf = x.Select(v => (float)v).ToArray();
        var yf = new float[columns];
        transform.Forward<float>(xf, yf);
        for (int i = 0; i < columns; i++)
            Assert.Equal(y[i], yf[i], 1e-5);
    }

    [Theory]
    [InlineData(288, false)]
    [InlineData(288, true)]
    [InlineData(768, true)]
    [InlineData(48, false)]
    public void Inverse_undoes_forward_and_norms_are_kept(int columns, bool permute)
    {
        for (ulong seed = 0; seed < 5; seed++)
        {
            var transform = new RandomizedHadamard(columns, seed, permute);
            var rng = new Random((int)seed);
            var x = Enumerable.Range(0, columns).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var y = new float[columns];
            transform.Forward<float>(x, y);
            Assert.Equal(Norm(x), Norm(y), 1e-4);
            var back = new float[columns];
            transform.Inverse<float>(y, back);
            for (int i = 0; i < columns; i++)
                Assert.Equal(x[i], back[i], 1e-5);
        }
    }

    [Fact]
    public void Different_seeds_give_different_transforms()
    {
        var x = Enumerable.Range(0, 288).Select(i => (float)Math.Sin(i)).ToArray();
        var a = new float[288];
        var b = new float[288];
        new RandomizedHadamard(288, 1, true).Forward<float>(x, a);
        new RandomizedHadamard(288, 2, true).Forward<float>(x, b);
        Assert.NotEqual(a, b);
    }

    private static double Norm(float[] v) => Math.Sqrt(v.Sum(x => (double)x * x));

    /// <summary>F = B · P · D built entry by entry from the definition in FORMAT.md, independently of the class.</summary>
    private static double[,] DenseMatrix(int n, ulong seed, bool permute)
    {
        var random = new SplitMix64(seed);
        var sign = new double[n];
        for (int i = 0; i < n; i++)
            sign[i] = (random.Next() >> 63) == 1 ? -1 : 1;
        var pi = Enumerable.Range(0, n).ToArray();
        if (permute)
        {
            for (int i = n - 1; i >= 1; i--)
            {
                int j = (int)(ulong)((UInt128)random.Next() * (ulong)(i + 1) >> 64);
                (pi[i], pi[j]) = (pi[j], pi[i]);
            }
        }
        int b = n & -n;
        var f = new double[n, n];
        for (int row = 0; row < n; row++)
        {
            int block = row / b * b;
            for (int k = block; k < block + b; k++)
            {
                // (B P D)[row, pi[k]] = B[row, k] · sign[pi[k]]
                double h = BitOperations.PopCount((uint)((row - block) & (k - block))) % 2 == 0 ? 1 : -1;
                f[row, pi[k]] = h / Math.Sqrt(b) * sign[pi[k]];
            }
        }
        return f;
    }
}
