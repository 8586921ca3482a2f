using MathNet.Numerics.LinearAlgebra;
using Squeeze.Kernels;

namespace Squeeze.LowRank;

/// <summary>
/// A square root S of a layer input's damped Hessian, H + λI = S·Sᵀ (H = XᵀX / tokens, [n, n]), and its inverse. For a
/// weight W [rows, n] and any error E = W − Ŵ, the output error over the calibration tokens is
/// ‖E·Xᵀ‖²_F = tokens · tr(E·H·Eᵀ) ≈ tokens · ‖E·S‖²_F, so truncating the SVD of W·S (then multiplying back by S⁻¹)
/// minimizes the output error instead of ‖E‖ (SVD-LLM, ASVD). Every square root gives the same truncation; the
/// Cholesky factor (SVD-LLM) is the cheapest, the eigenbasis (EoRA) names the directions.
/// </summary>
public sealed class Whitening
{
    private Whitening(int width, double[] root, double[] inverseRoot, double damping)
    {
        Width = width;
        Root = root;
        InverseRoot = inverseRoot;
        Damping = damping;
    }

    /// <summary>n, the width of the input.</summary>
    public int Width { get; }

    /// <summary>S [n, n] row-major.</summary>
    public double[] Root { get; }

    /// <summary>S⁻¹ [n, n] row-major.</summary>
    public double[] InverseRoot { get; }

    /// <summary>The damping λ added to the diagonal: the requested fraction of H's mean diagonal, raised tenfold while
    /// H + λI was not positive definite (as <see cref="Calibration.GptqHessian"/> does).</summary>
    public double Damping { get; }

    /// <summary>S = L, the lower Cholesky factor of H + λI (SVD-LLM's whitening).</summary>
    /// <exception cref="ArgumentException">The shape is wrong, a value is not finite, or the fraction is negative.</exception>
    /// <exception cref="InvalidOperationException">H + λI stays indefinite even after raising λ.</exception>
    public static Whitening Cholesky(ReadOnlySpan<double> hessian, int width, double dampingFraction = 0.01)
    {
        double mean = Check(hessian, width, dampingFraction);
        int n = width;
        double damping = dampingFraction * mean;
        for (int attempt = 0; attempt < 8; attempt++)
        {
            var l = hessian.ToArray();
            for (int i = 0; i < n; i++)
                l[i * n + i] += damping;
            if (LinearAlgebra.CholeskyLower(l, n, 1))
            {
                // L⁻¹ = ((Lᵀ)⁻¹)ᵀ, the inverse of an upper-triangular matrix.
                var inverse = LinearAlgebra.Transpose(LinearAlgebra.InvertUpper(LinearAlgebra.Transpose(l, n, n), n, 1), n, n);
                return new Whitening(n, l, inverse, damping);
            }
            damping = Math.Max(damping * 10, 1e-6 * Math.Max(mean, 1e-30));
        }
        throw new InvalidOperationException($"the Hessian ({n} x {n}) is not positive definite even with damping {damping}");
    }

    /// <summary>S = Q·(Λ + λI)^½ from the eigendecomposition H = Q·Λ·Qᵀ (EoRA's eigenspace projection); eigenvalues
    /// below zero (rounding) count as zero.</summary>
    /// <exception cref="ArgumentException">The shape is wrong, a value is not finite, or the fraction is negative.</exception>
    public static Whitening Eigen(ReadOnlySpan<double> hessian, int width, double dampingFraction = 0.01)
    {
        double mean = Check(hessian, width, dampingFraction);
        int n = width;
        double damping = Math.Max(dampingFraction * mean, 1e-6 * Math.Max(mean, 1e-30));
        var evd = Matrix<double>.Build.DenseOfRowMajor(n, n, hessian.ToArray()).Evd(Symmetricity.Symmetric);
        var q = evd.EigenVectors;
        var root = new double[n * n];
        var inverse = new double[n * n];
        for (int k = 0; k < n; k++)
        {
            double scale = Math.Sqrt(Math.Max(evd.EigenValues[k].Real, 0) + damping);
            for (int i = 0; i < n; i++)
            {
                root[i * n + k] = q[i, k] * scale;  // S = Q diag(√(λ_k + λ))
                inverse[k * n + i] = q[i, k] / scale; // S⁻¹ = diag(1/√(λ_k + λ)) Qᵀ
            }
        }
        return new Whitening(n, root, inverse, damping);
    }

    // Throws unless hessian is a finite [width, width] matrix; returns its mean diagonal.
    private static double Check(ReadOnlySpan<double> hessian, int width, double dampingFraction)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        if (hessian.Length != (long)width * width)
            throw new ArgumentException($"a {width} x {width} Hessian expected, got {hessian.Length} values", nameof(hessian));
        if (!(dampingFraction >= 0) || !double.IsFinite(dampingFraction))
            throw new ArgumentException($"damping fraction {dampingFraction} must be non-negative", nameof(dampingFraction));
        double mean = 0;
        for (int i = 0; i < hessian.Length; i++)
        {
            if (!double.IsFinite(hessian[i]))
                throw new ArgumentException($"Hessian value ({i / width}, {i % width}) is {hessian[i]}", nameof(hessian));
        }
        for (int i = 0; i < width; i++)
            mean += hessian[i * width + i];
        return mean / width;
    }
}
