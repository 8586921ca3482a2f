using Squeeze.Kernels;

namespace Squeeze.Calibration;

/// <summary>
/// A layer input's Hessian H = XᵀX / n made ready for GPTQ, once for every matrix that reads that input: dead inputs
/// (H[i, i] = 0) marked and given H[i, i] = 1, the processing order (descending H[i, i] with activation order), the damping
/// λ added to the diagonal, and the upper Cholesky factor U of (H + λI)⁻¹ in processing order.
/// </summary>
public sealed class GptqHessian
{
    private GptqHessian(int columns, double[] matrix, bool[] dead, float[] diagonal, int[] order, int[] position, double[] factor, double damping, bool activationOrder)
    {
        Columns = columns;
        Matrix = matrix;
        Dead = dead;
        Diagonal = diagonal;
        Order = order;
        Position = position;
        Factor = factor;
        Damping = damping;
        ActivationOrder = activationOrder;
        DeadColumns = dead.Count(d => d);
    }

    /// <summary>Width of the input (columns of the weights).</summary>
    public int Columns { get; }

    /// <summary>The damping λ actually added to the diagonal: the requested fraction of the mean diagonal, raised tenfold
    /// while H + λI was not positive definite.</summary>
    public double Damping { get; }

    /// <summary>True when columns are processed by descending H[i, i].</summary>
    public bool ActivationOrder { get; }

    /// <summary>Number of dead inputs (H[i, i] = 0).</summary>
    public int DeadColumns { get; }

    internal double[] Matrix { get; }     // [columns, columns] H, original order, undamped, 1 on the diagonal of dead inputs

    internal bool[] Dead { get; }         // [columns] original order

    internal float[] Diagonal { get; }    // [columns] H[i, i] in original order, 1 for dead inputs

    internal int[] Order { get; }         // [columns] Order[p] = original column processed at position p

    internal int[] Position { get; }      // [columns] inverse of Order

    internal double[] Factor { get; }     // [columns, columns] upper U, processing order

    /// <summary>Prepares <paramref name="hessian"/> ([columns, columns] row-major, symmetric, positive semi-definite) on up to
    /// <paramref name="threads"/> threads (0: all cores); the result does not depend on the thread count.</summary>
    /// <exception cref="ArgumentException">The shape is wrong, a value is not finite, or the damping fraction is negative.</exception>
    /// <exception cref="InvalidOperationException">H stays indefinite even after raising the damping (H was not positive semi-definite).</exception>
    public static GptqHessian Prepare(ReadOnlySpan<double> hessian, int columns, double dampingFraction = 0.01, bool activationOrder = false, int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        int n = columns;
        if (hessian.Length != (long)n * n)
            throw new ArgumentException($"a {n} x {n} Hessian expected, got {hessian.Length} values", nameof(hessian));
        if (!(dampingFraction >= 0) || !double.IsFinite(dampingFraction))
            throw new ArgumentException($"damping fraction {dampingFraction} must be non-negative", nameof(dampingFraction));
        for (int i = 0; i < hessian.Length; i++)
        {
            if (!double.IsFinite(hessian[i]))
                throw new ArgumentException($"Hessian value ({i / n}, {i % n}) is {hessian[i]}", nameof(hessian));
        }

        // Dead inputs: H[i, i] = 0 means column i never saw a nonzero input; its weights do not matter (set to 0) and
        // H[i, i] = 1 keeps H invertible, as the reference does.
        var h = hessian.ToArray();
        var dead = new bool[n];
        var diagonal = new float[n];
        for (int i = 0; i < n; i++)
        {
            if (h[i * n + i] <= 0)
            {
                dead[i] = true;
                h[i * n + i] = 1;
            }
            diagonal[i] = (float)h[i * n + i];
        }

        var order = new int[n];
        for (int i = 0; i < n; i++)
            order[i] = i;
        if (activationOrder)
            order = [.. order.OrderByDescending(i => h[i * n + i]).ThenBy(i => i)];
        var position = new int[n];
        for (int p = 0; p < n; p++)
            position[order[p]] = p;

        // H in processing order, damped; factored in its own storage (a wide layer's H is 1.6 GB a copy), so it is
        // built again for another attempt.
        double meanDiagonal = 0;
        for (int p = 0; p < n; p++)
            meanDiagonal += h[order[p] * n + order[p]];
        meanDiagonal /= n;
        double damping = dampingFraction * meanDiagonal;
        double[]? u = null;
        for (int attempt = 0; attempt < 8 && u is null; attempt++)
        {
            var damped = new double[(long)n * n];
            for (int p = 0; p < n; p++)
            {
                for (int q = 0; q < n; q++)
                    damped[p * n + q] = h[order[p] * n + order[q]];
                damped[p * n + p] += damping;
            }
            u = LinearAlgebra.InverseCholeskyUpper(damped, n, threads > 0 ? threads : Environment.ProcessorCount);
            if (u is null)
                damping = Math.Max(damping * 10, 1e-6 * Math.Max(meanDiagonal, 1e-30));
        }
        if (u is null)
            throw new InvalidOperationException($"the Hessian ({n} x {n}) is not positive definite even with damping {damping}");
        return new GptqHessian(n, h, dead, diagonal, order, position, u, damping, activationOrder);
    }
}
