using Squeeze.Kernels;

namespace Squeeze.LowRank;

/// <summary>W ≈ A · B, the result of <see cref="LowRankFactorizer.Factor"/>.</summary>
/// <param name="A">[rows, rank] row-major: U·Σ^½.</param>
/// <param name="B">[rank, columns] row-major: Σ^½·Vt·S⁻¹ (S = I without whitening).</param>
/// <param name="Rows">Rows of W.</param>
/// <param name="Rank">Kept rank r.</param>
/// <param name="Columns">Columns of W.</param>
/// <param name="SingularValues">[rank] the leading singular values of W·S, descending.</param>
/// <param name="EnergyCaptured">Σ σ² over the kept ranks / ‖W·S‖²_F: the fraction of the (whitened) energy kept; 1 −
/// it is the relative squared (output) error of the truncation before the factors are rounded.</param>
public sealed record LowRankFactors(float[] A, float[] B, int Rows, int Rank, int Columns, double[] SingularValues, double EnergyCaptured);

/// <summary>
/// Truncated factorizations of weight matrices: plain (minimizes ‖W − A·B‖_F) or activation-aware (SVD-LLM / ASVD
/// whitening: minimizes the output error ‖(W − A·B)·Xᵀ‖_F over the calibration inputs X, through a
/// <see cref="Whitening"/> of XᵀX), and EoRA's compensation of another approximation's error.
/// </summary>
public static class LowRankFactorizer
{
    /// <summary>
    /// Factors <paramref name="weight"/> [rows, columns] at <paramref name="rank"/>: the SVD of W·S truncated to the
    /// rank and un-whitened, W ≈ U_r·Σ_r·(V_rᵀ·S⁻¹), split as A = U_r·Σ_r^½, B = Σ_r^½·V_rᵀ·S⁻¹ so both factors have
    /// similar ranges (they may be quantized). Without <paramref name="whitening"/> S = I (the plain truncated SVD).
    /// </summary>
    /// <exception cref="ArgumentException">Wrong lengths, a non-finite value, a rank outside 1 .. min(rows, columns), or
    /// a whitening of another width.</exception>
    public static LowRankFactors Factor(ReadOnlySpan<float> weight, int rows, int columns, int rank, Whitening? whitening = null, SvdOptions? options = null)
    {
        options ??= new SvdOptions();
        if (weight.Length != (long)rows * columns)
            throw new ArgumentException($"a [{rows}, {columns}] weight has {(long)rows * columns} values, not {weight.Length}", nameof(weight));
        if (whitening is not null && whitening.Width != columns)
            throw new ArgumentException($"the whitening is {whitening.Width} wide; the weight has {columns} columns", nameof(whitening));
        var w = new double[weight.Length];
        for (int i = 0; i < w.Length; i++)
            w[i] = weight[i];
        var m = whitening is null ? w : LinearAlgebra.Multiply(w, whitening.Root, rows, columns, columns, options.Threads);
        var svd = TruncatedSvd.Compute(m, rows, columns, rank, options);
        double total = LinearAlgebra.SquaredNorm(m), kept = 0;
        foreach (double s in svd.Values)
            kept += s * s;

        var a = new float[(long)rows * rank];
        var right = new double[(long)rank * columns]; // Σ^½·Vt
        for (int j = 0; j < rank; j++)
        {
            double root = Math.Sqrt(svd.Values[j]);
            for (int i = 0; i < rows; i++)
                a[(long)i * rank + j] = (float)(svd.U[(long)i * rank + j] * root);
            for (int c = 0; c < columns; c++)
                right[(long)j * columns + c] = svd.Vt[(long)j * columns + c] * root;
        }
        if (whitening is not null)
            right = LinearAlgebra.Multiply(right, whitening.InverseRoot, rank, columns, columns, options.Threads);
        var b = new float[right.Length];
        for (int i = 0; i < b.Length; i++)
            b[i] = (float)right[i];
        return new LowRankFactors(a, b, rows, rank, columns, svd.Values, total > 0 ? Math.Min(1, kept / total) : 1);
    }

    /// <summary>
    /// EoRA: a rank-<paramref name="rank"/> correction of the error W − Q of an approximation Q (quantized, pruned …)
    /// of <paramref name="weight"/>, fitted in the activation-weighted eigenspace of XᵀX: the error is projected
    /// (E·Q_H·Λ^½), truncated by SVD and mapped back, so the correction removes as much output error as a rank allows.
    /// <paramref name="approximation"/> is Q decoded, [rows, columns]; <paramref name="eigenspace"/> should come from
    /// <see cref="Whitening.Eigen"/> (any whitening of the input gives the same truncation).
    /// </summary>
    public static LowRankFactors Compensate(ReadOnlySpan<float> weight, ReadOnlySpan<float> approximation, int rows, int columns, int rank,
        Whitening eigenspace, SvdOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(eigenspace);
        if (approximation.Length != weight.Length)
            throw new ArgumentException($"the approximation has {approximation.Length} values, the weight {weight.Length}", nameof(approximation));
        var error = new float[weight.Length];
        for (int i = 0; i < error.Length; i++)
            error[i] = weight[i] - approximation[i];
        return Factor(error, rows, columns, rank, eigenspace, options);
    }
}
