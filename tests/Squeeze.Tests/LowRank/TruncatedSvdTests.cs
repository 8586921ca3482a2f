using Squeeze.LowRank;
using static Squeeze.Tests.LowRank.LowRankTestData;

namespace Squeeze.Tests.LowRank;

public class TruncatedSvdTests
{
    [Theory]
    [InlineData(37, 23, SvdMethod.Exact)]
    [InlineData(23, 37, SvdMethod.Exact)]
    [InlineData(16, 16, SvdMethod.Exact)]
    [InlineData(60, 40, SvdMethod.Randomized)]
    [InlineData(40, 60, SvdMethod.Randomized)]
    public void FullRankReproducesTheMatrix(int rows, int columns, SvdMethod method)
    {
        var m = Gaussian(rows, columns, new Random(rows * 100 + columns));
        int rank = Math.Min(rows, columns);
        var svd = TruncatedSvd.Compute(m, rows, columns, rank, new SvdOptions { Method = method });
        var scaled = (double[])svd.U.Clone();
        for (int i = 0; i < rows; i++)
            for (int k = 0; k < rank; k++)
                scaled[i * rank + k] *= svd.Values[k];
        var back = Product(scaled, svd.Vt, rows, rank, columns);
        Assert.True(Norm(Difference(back, m)) < 1e-10 * Norm(m), $"reconstruction error {Norm(Difference(back, m))}");
        // Orthonormal columns of U, rows of Vt; values descending.
        for (int a = 0; a < rank; a++)
        {
            for (int b = 0; b < rank; b++)
            {
                double uu = 0, vv = 0;
                for (int i = 0; i < rows; i++)
                    uu += svd.U[i * rank + a] * svd.U[i * rank + b];
                for (int j = 0; j < columns; j++)
                    vv += svd.Vt[a * columns + j] * svd.Vt[b * columns + j];
                Assert.Equal(a == b ? 1 : 0, uu, 1e-10);
                Assert.Equal(a == b ? 1 : 0, vv, 1e-10);
            }
            if (a > 0)
                Assert.True(svd.Values[a] <= svd.Values[a - 1]);
        }
    }

    [Fact]
    public void ExactFindsAKnownSpectrum()
    {
        double[] values = [9, 5, 3, 2, 1, 0.5];
        var m = WithSpectrum(30, 20, values, new Random(3));
        var svd = TruncatedSvd.Compute(m, 30, 20, 4, new SvdOptions { Method = SvdMethod.Exact });
        for (int k = 0; k < 4; k++)
            Assert.Equal(values[k], svd.Values[k], 1e-10);
    }

    [Theory]
    [InlineData(300, 200, 10, 1)]
    [InlineData(200, 300, 10, 2)]
    [InlineData(400, 250, 25, 3)]
    public void RandomizedMatchesExactOnADecayingSpectrum(int rows, int columns, int rank, int seed)
    {
        var rng = new Random(seed);
        var values = Enumerable.Range(0, Math.Min(rows, columns)).Select(i => 10 * Math.Pow(0.85, i)).ToArray();
        var m = WithSpectrum(rows, columns, values, rng);
        var exact = TruncatedSvd.Compute(m, rows, columns, rank, new SvdOptions { Method = SvdMethod.Exact });
        var randomized = TruncatedSvd.Compute(m, rows, columns, rank, new SvdOptions { Method = SvdMethod.Randomized, Seed = seed });
        for (int k = 0; k < rank; k++)
        {
            Assert.Equal(values[k], exact.Values[k], 1e-9);
            Assert.True(Math.Abs(randomized.Values[k] - exact.Values[k]) < 1e-4 * exact.Values[0], $"σ{k}: {randomized.Values[k]} vs {exact.Values[k]}");
        }
        double exactError = Norm(Difference(Reconstruct(exact), m)), randomizedError = Norm(Difference(Reconstruct(randomized), m));
        Assert.True(randomizedError <= exactError * 1.001, $"randomized error {randomizedError}, exact {exactError}");
    }

    [Fact]
    public void AutoIsExactForSmallMatricesAndRandomizedForLargeOnes()
    {
        var rng = new Random(5);
        var m = WithSpectrum(90, 80, Enumerable.Range(0, 80).Select(i => Math.Pow(0.7, i)).ToArray(), rng);
        var exact = TruncatedSvd.Compute(m, 90, 80, 5, new SvdOptions { Method = SvdMethod.Exact });
        var auto = TruncatedSvd.Compute(m, 90, 80, 5);
        Assert.Equal(exact.Values, auto.Values);
        var sketched = TruncatedSvd.Compute(m, 90, 80, 5, new SvdOptions { ExactLimit = 32, Oversampling = 5, PowerIterations = 0 });
        var randomized = TruncatedSvd.Compute(m, 90, 80, 5, new SvdOptions { Method = SvdMethod.Randomized, Oversampling = 5, PowerIterations = 0 });
        Assert.Equal(randomized.Values, sketched.Values);
        Assert.NotEqual(exact.Values, sketched.Values);
    }

    [Fact]
    public void ResultsDoNotDependOnTheThreadCount()
    {
        var m = Gaussian(150, 120, new Random(9));
        var one = TruncatedSvd.Compute(m, 150, 120, 12, new SvdOptions { Method = SvdMethod.Randomized, Threads = 1 });
        var two = TruncatedSvd.Compute(m, 150, 120, 12, new SvdOptions { Method = SvdMethod.Randomized, Threads = 2 });
        Assert.Equal(one.Values, two.Values);
        Assert.Equal(one.U, two.U);
        Assert.Equal(one.Vt, two.Vt);
    }

    [Fact]
    public void BadArgumentsAreRefused()
    {
        var m = new double[12];
        Assert.Throws<ArgumentOutOfRangeException>(() => TruncatedSvd.Compute(m, 3, 4, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => TruncatedSvd.Compute(m, 3, 4, 0));
        Assert.Throws<ArgumentException>(() => TruncatedSvd.Compute(m, 3, 5, 2));
        m[5] = double.NaN;
        Assert.Contains("(1, 1)", Assert.Throws<ArgumentException>(() => TruncatedSvd.Compute(m, 3, 4, 2)).Message);
    }

    private static double[] Reconstruct(SingularTriplets svd)
    {
        var scaled = (double[])svd.U.Clone();
        for (int i = 0; i < svd.Rows; i++)
            for (int k = 0; k < svd.Rank; k++)
                scaled[i * svd.Rank + k] *= svd.Values[k];
        return Product(scaled, svd.Vt, svd.Rows, svd.Rank, svd.Columns);
    }
}
