using Squeeze.LowRank;
using static Squeeze.Tests.LowRank.LowRankTestData;
using Squeeze.Weights;

namespace Squeeze.Tests.LowRank;

public class LowRankFactorizerTests
{
    [Theory]
    [InlineData(24, 16, false)]
    [InlineData(16, 24, false)]
    [InlineData(24, 16, true)]
    [InlineData(16, 24, true)]
    public void FullRankReproducesTheWeight(int rows, int columns, bool whitened)
    {
        var rng = new Random(rows + columns);
        var w = ToSingle(Gaussian(rows, columns, rng));
        var whitening = whitened ? Whitening.Cholesky(Activations(64, columns, rng).Hessian, columns) : null;
        int rank = Math.Min(rows, columns);
        var f = LowRankFactorizer.Factor(w, rows, columns, rank, whitening);
        var back = Product(ToDouble(f.A), ToDouble(f.B), rows, rank, columns);
        var wd = ToDouble(w);
        Assert.True(Norm(Difference(back, wd)) < 1e-5 * Norm(wd), $"reconstruction error {Norm(Difference(back, wd))} of {Norm(wd)}");
        Assert.Equal(1, f.EnergyCaptured, 1e-12);
    }

    [Fact]
    public void PlainTruncationKeepsTheLeadingSingularValues()
    {
        double[] values = [8, 4, 2, 1, 0.5, 0.25];
        var w = ToSingle(WithSpectrum(20, 12, values, new Random(4)));
        var f = LowRankFactorizer.Factor(w, 20, 12, 3);
        var back = Product(ToDouble(f.A), ToDouble(f.B), 20, 3, 12);
        // ‖W − W₃‖ = √(1 + 0.25 + 0.0625) by Eckart–Young.
        Assert.Equal(Math.Sqrt(1 + 0.25 + 0.0625), Norm(Difference(back, ToDouble(w))), 1e-5);
        Assert.Equal((64.0 + 16 + 4) / values.Sum(v => v * v), f.EnergyCaptured, 1e-6);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void ActivationAwareTruncationHasLessOutputErrorThanPlain(int seed)
    {
        const int rows = 40, columns = 32, tokens = 200, rank = 8;
        var rng = new Random(seed);
        var w = ToSingle(Gaussian(rows, columns, rng));
        var (x, h) = Activations(tokens, columns, rng);
        var plain = LowRankFactorizer.Factor(w, rows, columns, rank);
        var aware = LowRankFactorizer.Factor(w, rows, columns, rank, Whitening.Cholesky(h, columns, dampingFraction: 1e-6));
        double plainError = OutputError(Difference(ToDouble(w), Product(ToDouble(plain.A), ToDouble(plain.B), rows, rank, columns)), x, rows, columns, tokens);
        double awareError = OutputError(Difference(ToDouble(w), Product(ToDouble(aware.A), ToDouble(aware.B), rows, rank, columns)), x, rows, columns, tokens);
        Assert.True(awareError < 0.9 * plainError, $"aware {awareError}, plain {plainError}");
        // The whitened truncation's output error is what its energy says: ‖E·Xᵀ‖² = tokens·(1 − captured)·‖W·S‖².
        var s = Whitening.Cholesky(h, columns, dampingFraction: 1e-6);
        double whitenedEnergy = Math.Pow(Norm(Product(ToDouble(w), s.Root, rows, columns, columns)), 2);
        Assert.Equal(Math.Sqrt(tokens * (1 - aware.EnergyCaptured) * whitenedEnergy), awareError, 1e-3 * awareError);
    }

    [Fact]
    public void CholeskyAndEigenWhiteningGiveTheSameTruncation()
    {
        const int rows = 30, columns = 20, rank = 6;
        var rng = new Random(8);
        var w = ToSingle(Gaussian(rows, columns, rng));
        var h = Activations(100, columns, rng).Hessian;
        var cholesky = LowRankFactorizer.Factor(w, rows, columns, rank, Whitening.Cholesky(h, columns));
        var eigen = LowRankFactorizer.Factor(w, rows, columns, rank, Whitening.Eigen(h, columns));
        var a = Product(ToDouble(cholesky.A), ToDouble(cholesky.B), rows, rank, columns);
        var b = Product(ToDouble(eigen.A), ToDouble(eigen.B), rows, rank, columns);
        Assert.True(Norm(Difference(a, b)) < 1e-4 * Norm(a), $"difference {Norm(Difference(a, b))}");
        for (int k = 0; k < rank; k++)
            Assert.Equal(cholesky.SingularValues[k], eigen.SingularValues[k], 1e-6 * cholesky.SingularValues[0]);
    }

    [Fact]
    public void WhiteningSquaresBackToTheDampedHessian()
    {
        const int n = 12;
        var h = Activations(50, n, new Random(2)).Hessian;
        foreach (var s in new[] { Whitening.Cholesky(h, n), Whitening.Eigen(h, n) })
        {
            var sst = Product(s.Root, Transpose(s.Root, n), n, n, n);
            var identity = Product(s.Root, s.InverseRoot, n, n, n);
            for (int i = 0; i < n; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    Assert.Equal(h[i * n + j] + (i == j ? s.Damping : 0), sst[i * n + j], 1e-8 * h[0]);
                    Assert.Equal(i == j ? 1 : 0, identity[i * n + j], 1e-8);
                }
            }
        }
    }

    [Fact]
    public void WhiteningSurvivesDeadInputs()
    {
        const int n = 8;
        var h = Activations(40, n, new Random(6)).Hessian;
        for (int j = 0; j < n; j++)
            h[3 * n + j] = h[j * n + 3] = 0; // input 3 never fires
        var s = Whitening.Cholesky(h, n);
        Assert.True(s.Damping > 0);
        Assert.All(s.InverseRoot, v => Assert.True(double.IsFinite(v)));
        Assert.Throws<ArgumentException>(() => Whitening.Cholesky(h, n, -1));
        Assert.Throws<ArgumentException>(() => Whitening.Eigen(h, n + 1));
    }

    [Fact]
    public void EoraCorrectionShrinksTheOutputErrorAsTheRankGrows()
    {
        const int rows = 48, columns = 32, tokens = 160;
        var rng = new Random(11);
        var w = ToSingle(Gaussian(rows, columns, rng));
        var (x, h) = Activations(tokens, columns, rng);
        // A coarse approximation: every weight rounded to a multiple of 0.5.
        var q = w.Select(v => MathF.Round(v * 2) / 2).ToArray();
        var eigen = Whitening.Eigen(h, columns, dampingFraction: 1e-6);
        double previous = OutputError(Difference(ToDouble(w), ToDouble(q)), x, rows, columns, tokens);
        foreach (int rank in new[] { 4, 8, 16, 32 })
        {
            var c = LowRankFactorizer.Compensate(w, q, rows, columns, rank, eigen);
            var corrected = ToDouble(q).Select((v, i) => v).ToArray();
            var product = Product(ToDouble(c.A), ToDouble(c.B), rows, rank, columns);
            for (int i = 0; i < corrected.Length; i++)
                corrected[i] += product[i];
            double error = OutputError(Difference(ToDouble(w), corrected), x, rows, columns, tokens);
            Assert.True(error < previous, $"rank {rank}: {error} after {previous}");
            previous = error;
        }
        Assert.True(previous < 1e-3 * OutputError(ToDouble(w), x, rows, columns, tokens), "full-rank compensation leaves an error");
    }

    [Fact]
    public void EoraBeatsAPlainSvdOfTheErrorOnTheOutput()
    {
        const int rows = 48, columns = 32, tokens = 160, rank = 8;
        var rng = new Random(12);
        var w = ToSingle(Gaussian(rows, columns, rng));
        var (x, h) = Activations(tokens, columns, rng);
        var q = w.Select(v => MathF.Round(v * 2) / 2).ToArray();
        var error = w.Select((v, i) => v - q[i]).ToArray();
        var eora = LowRankFactorizer.Compensate(w, q, rows, columns, rank, Whitening.Eigen(h, columns, 1e-6));
        var plain = LowRankFactorizer.Factor(error, rows, columns, rank);
        double Residual(LowRankFactors f) => OutputError(Difference(ToDouble(error), Product(ToDouble(f.A), ToDouble(f.B), rows, rank, columns)), x, rows, columns, tokens);
        Assert.True(Residual(eora) < 0.9 * Residual(plain), $"EoRA {Residual(eora)}, plain SVD {Residual(plain)}");
    }

    [Fact]
    public void RanksFollowTheBudgetAndTheEnergy()
    {
        Assert.Equal(2L * 8 * (288 + 768), RankSelection.FactorBytes(768, 288, 8));
        Assert.Equal(104, RankSelection.RankForBytes(768, 288, 768 * 288)); // half the f16 bytes
        Assert.Equal(0, RankSelection.RankForBytes(768, 288, 2 * (768 + 288) - 1));
        Assert.Equal(288, RankSelection.RankForBytes(768, 288, long.MaxValue / 4));
        double[] values = [3, 2, 1, 1]; // energies 9, 4, 1, 1 of 15
        Assert.Equal(1, RankSelection.RankForEnergy(values, 0.6));
        Assert.Equal(2, RankSelection.RankForEnergy(values, 13.0 / 15));
        Assert.Equal(4, RankSelection.RankForEnergy(values, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => RankSelection.RankForEnergy(values, 1.5));
        Assert.Equal(8, RankSelection.FactorGroup(8));
        Assert.Equal(32, RankSelection.FactorGroup(288));
        Assert.Equal(17, RankSelection.FactorGroup(34));
        Assert.Equal(1, RankSelection.FactorGroup(37));
    }

    [Theory]
    [InlineData(40, 64, 8, 4)]
    [InlineData(40, 64, 34, 8)]
    [InlineData(72, 96, 16, 2)]
    [InlineData(72, 96, 16, 16)]
    public void QuantizedFactorsStoreTheBytesRankSelectionCountsAndStayClose(int rows, int columns, int rank, int bits)
    {
        var rng = new Random(rows + rank + bits);
        var w = ToSingle(Gaussian(rows, columns, rng));
        var f = LowRankFactorizer.Factor(w, rows, columns, rank);
        var weight = LowRankEncoder.Weight("w", f, bits);
        Assert.Equal(RankSelection.FactorBytes(rows, columns, rank, bits), weight.StoredBytes);
        Assert.Equal(rank, RankSelection.RankForBytes(rows, columns, weight.StoredBytes, bits));
        Assert.True(RankSelection.RankForBytes(rows, columns, weight.StoredBytes - 1, bits) < rank);
        // The quantized product stays near the f32 factors' product: codes of b bits err by about 2^-b of the range.
        var exact = Product(ToDouble(f.A), ToDouble(f.B), rows, rank, columns);
        double error = Norm(Difference(ToDouble(weight.Decode()), exact)) / Norm(exact);
        Assert.True(error < 4.0 / (1 << Math.Min(bits, 11)), $"relative error {error} at {bits} bits");
    }

    [Fact]
    public void EncoderBuildsAFloat16LowRankWeightAndAnEoraSum()
    {
        const int rows = 32, columns = 64, tokens = 120;
        var rng = new Random(13);
        var w = ToSingle(Gaussian(rows, columns, rng));
        var (x, h) = Activations(tokens, columns, rng);
        var truncated = LowRankEncoder.Truncate("w", w, rows, columns, 8, Whitening.Cholesky(h, columns));
        Assert.Equal(8, truncated.Rank);
        Assert.Equal(RankSelection.FactorBytes(rows, columns, 8), truncated.StoredBytes);

        var quantized = Squeeze.Weights.UniformWeight.Encode("w", w, rows, columns, new Squeeze.Weights.UniformScheme(2, 32, symmetric: false));
        var sum = LowRankEncoder.Compensate(quantized, w, 16, Whitening.Eigen(h, columns));
        Assert.Same(quantized, sum.Terms[0]);
        Assert.Equal(quantized.StoredBytes + RankSelection.FactorBytes(rows, columns, 16), sum.StoredBytes);
        double before = OutputError(Difference(ToDouble(w), ToDouble(quantized.Decode())), x, rows, columns, tokens);
        double after = OutputError(Difference(ToDouble(w), ToDouble(sum.Decode())), x, rows, columns, tokens);
        Assert.True(after < 0.8 * before, $"EoRA r16 output error {after}, 2-bit alone {before}");
    }

    private static double[] Transpose(double[] a, int n)
    {
        var t = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                t[j * n + i] = a[i * n + j];
        return t;
    }
}
