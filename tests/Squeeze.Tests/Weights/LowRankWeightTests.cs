using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public class LowRankWeightTests
{
    [Theory]
    [InlineData(1, 1, 1, 1)]
    [InlineData(7, 3, 5, 1)]
    [InlineData(33, 8, 17, 4)]
    [InlineData(64, 16, 48, 9)]
    [InlineData(96, 40, 288, 3)]
    public void DecodeRowIsRowOfATimesB(int rows, int rank, int columns, int seed)
    {
        var rng = new Random(seed);
        var weight = RandomWeight(rows, rank, columns, rng);
        var a = weight.A.Decode();
        var b = weight.B.Decode();
        var row = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            weight.DecodeRow(r, row);
            for (int c = 0; c < columns; c++)
            {
                double expected = 0, magnitude = 0;
                for (int k = 0; k < rank; k++)
                {
                    expected += (double)a[r * rank + k] * b[k * columns + c];
                    magnitude += Math.Abs((double)a[r * rank + k] * b[k * columns + c]);
                }
                Assert.True(Math.Abs(row[c] - expected) <= 1e-6 * magnitude + 1e-30, $"({r}, {c}): {row[c]} vs {expected}");
            }
        }
    }

    /// <summary>The format's decoding rule, bit for bit: W[r, c] = Σ_k A[r, k]·B[k, c] over ascending k, each product
    /// rounded to binary32 and then added (no fused multiply-add), so the decoded values (which the zip fingerprint
    /// hashes) are the same on every machine.</summary>
    [Theory]
    [InlineData(5, 7, 33, 11)]
    [InlineData(16, 40, 288, 12)]
    public void DecodeRowFollowsTheFormatsSummationOrderBitForBit(int rows, int rank, int columns, int seed)
    {
        var weight = RandomWeight(rows, rank, columns, new Random(seed));
        var a = weight.A.Decode();
        var b = weight.B.Decode();
        var row = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            weight.DecodeRow(r, row);
            for (int c = 0; c < columns; c++)
            {
                float sum = 0;
                for (int k = 0; k < rank; k++)
                {
                    float product = a[r * rank + k] * b[k * columns + c];
                    sum += product;
                }
                Assert.Equal(BitConverter.SingleToInt32Bits(sum), BitConverter.SingleToInt32Bits(row[c]));
            }
        }
    }

    [Theory]
    [InlineData(7, 3, 5, 1, 1)]
    [InlineData(33, 8, 17, 5, 2)]
    [InlineData(64, 16, 48, 2, 3)]
    [InlineData(288, 72, 288, 7, 4)]
    [InlineData(768, 104, 288, 16, 5)]
    [InlineData(288, 104, 768, 3, 6)]
    public void MultiplyMatchesTheDenseReference(int rows, int rank, int columns, int tokens, int seed)
    {
        var rng = new Random(seed);
        var weight = RandomWeight(rows, rank, columns, rng);
        var dense = weight.Decode();
        var a = weight.A.Decode();
        var b = weight.B.Decode();
        var x = new float[tokens * columns];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        foreach (int threads in new[] { 1, 2 })
        {
            using var context = new ComputeContext(threads);
            var y = new float[tokens * rows];
            weight.Multiply(x, tokens, context, y);
            for (int t = 0; t < tokens; t++)
            {
                // The product rounds the hidden h = B·x to f16 before A (an f16 weight sees f16 activations): the
                // tolerance is that rounding, 2⁻¹⁰ of Σ_k |A[r, k]·h[k]|, plus f32 sums.
                var h = new double[rank];
                for (int k = 0; k < rank; k++)
                    for (int c = 0; c < columns; c++)
                        h[k] += (double)b[k * columns + c] * x[t * columns + c];
                for (int r = 0; r < rows; r++)
                {
                    double expected = 0, bound = 0;
                    for (int c = 0; c < columns; c++)
                        expected += (double)dense[r * columns + c] * x[t * columns + c];
                    for (int k = 0; k < rank; k++)
                        bound += Math.Abs(a[r * rank + k] * h[k]);
                    Assert.True(Math.Abs(y[t * rows + r] - expected) <= bound / 1024 + 1e-4 * (1 + Math.Abs(expected)),
                        $"threads {threads}, token {t}, row {r}: {y[t * rows + r]} vs {expected}");
                }
            }
        }
    }

    [Fact]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        var weight = RandomWeight(288, 64, 768, new Random(7));
        var x = Enumerable.Range(0, 5 * 768).Select(i => MathF.Sin(i * 0.37f)).ToArray();
        var one = new float[5 * 288];
        var two = new float[5 * 288];
        using (var context = new ComputeContext(1))
            weight.Multiply(x, 5, context, one);
        using (var context = new ComputeContext(2))
            weight.Multiply(x, 5, context, two);
        Assert.Equal(one, two);
    }

    [Fact]
    public void BytesAndSchemeAreTheFactors()
    {
        var weight = RandomWeight(768, 32, 288, new Random(1));
        Assert.Equal(2L * 32 * (768 + 288), weight.StoredBytes);
        Assert.Equal(32, weight.Rank);
        Assert.Equal("lowrank r32 F16", weight.Scheme);
        Assert.Equal("w.a", weight.A.Name);
        Assert.Equal(GgmlType.F16, ((BlockWeight)weight.B).Type);
    }

    [Fact]
    public void FactorsThatDoNotChainAreRefused()
    {
        var a = BlockWeight.Float16("w.a", new float[12], 4, 3);
        var b = BlockWeight.Float16("w.b", new float[10], 2, 5);
        Assert.Contains("do not chain", Assert.Throws<ArgumentException>(() => new LowRankWeight("w", a, b)).Message);
        Assert.Throws<ArgumentException>(() => BlockWeight.Float16("w.a", new float[11], 4, 3));
    }

    internal static LowRankWeight RandomWeight(int rows, int rank, int columns, Random rng)
    {
        var a = new float[rows * rank];
        var b = new float[rank * columns];
        for (int i = 0; i < a.Length; i++)
            a[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < b.Length; i++)
            b[i] = (float)(rng.NextDouble() * 2 - 1) * 0.1f;
        return LowRankWeight.Float16("w", a, b, rows, rank, columns);
    }
}
