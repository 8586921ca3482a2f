using Squeeze.Calibration;
using Squeeze.Weights;

namespace Squeeze.LowRank;

/// <summary>
/// Low-rank representations as runtime weights: a weight replaced by factors (<see cref="LowRankWeight"/>), and an
/// approximation plus EoRA's low-rank correction of its error (<see cref="SumWeight"/>). Factors are f16, or uniform
/// codes of <c>factorBits</c> (2..8; asymmetric, groups of <see cref="RankSelection.FactorGroup"/>) for quantized factors.
/// </summary>
public static class LowRankEncoder
{
    /// <summary>The whitening of a layer input from its calibration statistics (the Gram matrix must have been
    /// collected): Cholesky for <see cref="Truncate"/>, the eigenbasis when <paramref name="eigen"/> (for
    /// <see cref="Compensate"/>).</summary>
    public static Whitening WhiteningFor(ActivationStatistics statistics, double dampingFraction = 0.01, bool eigen = false)
    {
        ArgumentNullException.ThrowIfNull(statistics);
        var h = statistics.Hessian();
        return eigen ? Whitening.Eigen(h, statistics.Width, dampingFraction) : Whitening.Cholesky(h, statistics.Width, dampingFraction);
    }

    /// <summary><paramref name="weight"/> [rows, columns] as factors of <paramref name="rank"/>: plain truncated SVD
    /// without <paramref name="whitening"/>, activation-aware with it.</summary>
    public static LowRankWeight Truncate(string name, ReadOnlySpan<float> weight, int rows, int columns, int rank, Whitening? whitening = null,
        SvdOptions? options = null, int factorBits = 16)
        => Weight(name, LowRankFactorizer.Factor(weight, rows, columns, rank, whitening, options), factorBits);

    /// <summary>Factors as a weight: f16 when <paramref name="factorBits"/> is 16, else uniform codes of that width.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The width is neither 16 nor 2..8.</exception>
    public static LowRankWeight Weight(string name, LowRankFactors factors, int factorBits = 16)
    {
        ArgumentNullException.ThrowIfNull(factors);
        int rows = factors.Rows, rank = factors.Rank, columns = factors.Columns;
        if (factorBits == 16)
            return LowRankWeight.Float16(name, factors.A, factors.B, rows, rank, columns);
        if (factorBits is < 2 or > 8)
            throw new ArgumentOutOfRangeException(nameof(factorBits), factorBits, "factors are f16 (16) or uniform codes of 2..8 bits");
        return new LowRankWeight(name,
            UniformWeight.Encode(name + ".a", factors.A, rows, rank, new UniformScheme(factorBits, RankSelection.FactorGroup(rank), symmetric: false)),
            UniformWeight.Encode(name + ".b", factors.B, rank, columns, new UniformScheme(factorBits, RankSelection.FactorGroup(columns), symmetric: false)));
    }

    /// <summary>
    /// EoRA: <paramref name="approximation"/> (quantized, pruned …) of <paramref name="weight"/> plus a rank-
    /// <paramref name="rank"/> correction (factors as <see cref="Weight"/> makes them) of its error fitted in the activation eigenspace
    /// (<see cref="LowRankFactorizer.Compensate"/>), as <c>SumWeight(approximation, correction)</c>.
    /// </summary>
    public static SumWeight Compensate(LinearWeight approximation, ReadOnlySpan<float> weight, int rank, Whitening eigenspace, SvdOptions? options = null,
        int factorBits = 16)
    {
        ArgumentNullException.ThrowIfNull(approximation);
        int rows = approximation.Rows, columns = approximation.Columns;
        var f = LowRankFactorizer.Compensate(weight, approximation.Decode(), rows, columns, rank, eigenspace, options);
        return new SumWeight(approximation.Name, [approximation, Weight(approximation.Name, f, factorBits)]);
    }
}
