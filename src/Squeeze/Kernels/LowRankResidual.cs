namespace Squeeze.Kernels;

/// <summary>Rank-R approximation of a small matrix by subspace iteration on its Gram matrix (GEAR's low-rank residual).</summary>
internal static class LowRankResidual
{
    private const int Iterations = 24;

    /// <summary>
    /// Factors <paramref name="matrix"/> [rows, columns] ≈ A · B with A [rows, rank] (orthonormal columns spanning the
    /// dominant left singular subspace, rounded to f16) and B = Aᵀ · matrix [rank, columns], the best coefficients for
    /// the rounded A. Deterministic: the start basis comes from a fixed seed. A column whose direction carries nothing
    /// (a matrix of lower rank) is left zero.
    /// </summary>
    public static (float[] A, float[] B) Fit(ReadOnlySpan<float> matrix, int rows, int columns, int rank)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rank, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(rank, rows);
        var gram = new double[rows * rows]; // matrix · matrixᵀ
        for (int i = 0; i < rows; i++)
        {
            var ri = matrix.Slice(i * columns, columns);
            for (int j = 0; j <= i; j++)
            {
                double sum = System.Numerics.Tensors.TensorPrimitives.Dot(ri, matrix.Slice(j * columns, columns));
                gram[i * rows + j] = gram[j * rows + i] = sum;
            }
        }
        double trace = 0;
        for (int i = 0; i < rows; i++)
            trace += gram[i * rows + i];

        var random = new Random(rows * 131 + rank);
        var basis = new double[rows * rank]; // [rows, rank]
        for (int i = 0; i < basis.Length; i++)
            basis[i] = random.NextDouble() - 0.5;
        var next = new double[rows * rank];
        for (int iteration = 0; iteration < Iterations; iteration++)
        {
            Orthonormalize(basis, rows, rank, trace);
            Array.Clear(next);
            for (int i = 0; i < rows; i++)
            {
                for (int k = 0; k < rows; k++)
                {
                    double g = gram[i * rows + k];
                    for (int j = 0; j < rank; j++)
                        next[i * rank + j] += g * basis[k * rank + j];
                }
            }
            (basis, next) = (next, basis);
        }
        Orthonormalize(basis, rows, rank, trace);

        var a = new float[rows * rank];
        for (int i = 0; i < a.Length; i++)
            a[i] = (float)(Half)basis[i];
        var b = new float[rank * columns];
        for (int j = 0; j < rank; j++)
        {
            for (int i = 0; i < rows; i++)
            {
                float weight = a[i * rank + j];
                if (weight == 0)
                    continue;
                for (int c = 0; c < columns; c++)
                    b[j * columns + c] += weight * matrix[i * columns + c];
            }
        }
        return (a, b);
    }

    /// <summary>Modified Gram-Schmidt on the columns of <paramref name="basis"/> [rows, rank]; a column whose norm is
    /// negligible against the matrix's energy becomes zero.</summary>
    private static void Orthonormalize(double[] basis, int rows, int rank, double trace)
    {
        for (int j = 0; j < rank; j++)
        {
            for (int k = 0; k < j; k++)
            {
                double dot = 0;
                for (int i = 0; i < rows; i++)
                    dot += basis[i * rank + j] * basis[i * rank + k];
                for (int i = 0; i < rows; i++)
                    basis[i * rank + j] -= dot * basis[i * rank + k];
            }
            double norm = 0;
            for (int i = 0; i < rows; i++)
                norm += basis[i * rank + j] * basis[i * rank + j];
            norm = Math.Sqrt(norm);
            double inverse = norm > 1e-12 * Math.Max(trace, 1e-30) ? 1 / norm : 0;
            for (int i = 0; i < rows; i++)
                basis[i * rank + j] *= inverse;
        }
    }
}
