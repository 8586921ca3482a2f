using Squeeze.Calibration;
using Squeeze.Weights;

namespace Squeeze.LowRank;

/// <summary>
/// Low-rank representations as runtime weights: a weight replaced by f16 factors (<see cref="LowRankWeight"/>), and
/// an approximation plus EoRA's low-rank correction of its error (<see cref="SumWeight"/>).
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

    /// <summary><paramref name="weight"/> [rows, columns] as f16 factors of <paramref name="rank"/>: plain truncated
    /// SVD without <paramref name="whitening"/>, activation-aware with it.</summary>
    public static LowRankWeight Truncate(string name, ReadOnlySpan<float> weight, int rows, int columns, int rank, Whitening? whitening = null, SvdOptions? options = null)
    {
        var f = LowRankFactorizer.Factor(weight, rows, columns, rank, whitening, options);
        return LowRankWeight.Float16(name, f.A, f.B, rows, rank, columns);
    }

    /// <summary>
    /// EoRA: <paramref name="approximation"/> (quantized, pruned …) of <paramref name="weight"/> plus a rank-
    /// <paramref name="rank"/> f16 correction of its error fitted in the activation eigenspace
    /// (<see cref="LowRankFactorizer.Compensate"/>), as <c>SumWeight(approximation, correction)</c>.
    /// </summary>
    public static SumWeight Compensate(LinearWeight approximation, ReadOnlySpan<float> weight, int rank, Whitening eigenspace, SvdOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(approximation);
        int rows = approximation.Rows, columns = approximation.Columns;
        var f = LowRankFactorizer.Compensate(weight, approximation.Decode(), rows, columns, rank, eigenspace, options);
        var correction = LowRankWeight.Float16(approximation.Name, f.A, f.B, rows, rank, columns);
        return new SumWeight(approximation.Name, [approximation, correction]);
    }
}
