using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.LinearAlgebra.Factorization;
using Squeeze.Kernels;

namespace Squeeze.LowRank;

/// <summary>How <see cref="TruncatedSvd"/> computes the leading singular triplets.</summary>
public enum SvdMethod
{
    /// <summary>Exact for matrices whose smaller side is at most <see cref="SvdOptions.ExactLimit"/> (or when the sketch
    /// would be at least half that side), randomized otherwise.</summary>
    Auto,

    /// <summary>Thin QR of the matrix (taller orientation), then the SVD of the square triangular factor.</summary>
    Exact,

    /// <summary>Halko–Martinsson–Tropp: Gaussian sketch with oversampling, power iterations, QR, SVD of the small core.</summary>
    Randomized,
}

/// <summary>Options of <see cref="TruncatedSvd.Compute"/>.</summary>
public sealed record SvdOptions
{
    /// <summary>Exact, randomized, or chosen by the matrix's size.</summary>
    public SvdMethod Method { get; init; } = SvdMethod.Auto;

    /// <summary>Extra sketch columns beyond the rank (HMT's p).</summary>
    public int Oversampling { get; init; } = 10;

    /// <summary>Power (subspace) iterations, each re-orthonormalized by QR (HMT's q).</summary>
    public int PowerIterations { get; init; } = 2;

    /// <summary>Seed of the Gaussian sketch.</summary>
    public int Seed { get; init; } = 1;

    /// <summary><see cref="SvdMethod.Auto"/> computes exactly when the matrix's smaller side is at most this.</summary>
    public int ExactLimit { get; init; } = 1024;

    /// <summary>Threads of the large products; the result does not depend on it.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
}

/// <summary>The leading <see cref="Rank"/> singular triplets of a [<see cref="Rows"/>, <see cref="Columns"/>] matrix:
/// M ≈ U · diag(Values) · Vt, values in descending order.</summary>
/// <param name="U">[rows, rank] row-major, orthonormal columns.</param>
/// <param name="Values">[rank] singular values, descending.</param>
/// <param name="Vt">[rank, columns] row-major, orthonormal rows.</param>
/// <param name="Rows">Rows of the matrix.</param>
/// <param name="Columns">Columns of the matrix.</param>
/// <param name="Rank">Triplets kept.</param>
public sealed record SingularTriplets(double[] U, double[] Values, double[] Vt, int Rows, int Columns, int Rank);

/// <summary>
/// Truncated singular value decomposition of a dense matrix (row-major, double). The large products (the matrix times
/// the sketch and its transpose times the basis) are <see cref="LinearAlgebra"/>; MathNet.Numerics computes only the
/// QR factorizations of the thin sketches and the SVD of the small square core.
/// </summary>
public static class TruncatedSvd
{
    /// <summary>The leading <paramref name="rank"/> singular triplets of <paramref name="matrix"/> [rows, columns].</summary>
    /// <exception cref="ArgumentException">The length is not rows × columns, a value is not finite, or the rank is not
    /// in 1 .. min(rows, columns).</exception>
    public static SingularTriplets Compute(ReadOnlySpan<double> matrix, int rows, int columns, int rank, SvdOptions? options = null)
    {
        options ??= new SvdOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        if (matrix.Length != (long)rows * columns)
            throw new ArgumentException($"a [{rows}, {columns}] matrix has {(long)rows * columns} values, not {matrix.Length}", nameof(matrix));
        int smaller = Math.Min(rows, columns);
        if (rank < 1 || rank > smaller)
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the rank of a [{rows}, {columns}] matrix is 1 .. {smaller}");
        for (int i = 0; i < matrix.Length; i++)
        {
            if (!double.IsFinite(matrix[i]))
                throw new ArgumentException($"value ({i / columns}, {i % columns}) is {matrix[i]}", nameof(matrix));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(options.Oversampling);
        ArgumentOutOfRangeException.ThrowIfNegative(options.PowerIterations);

        int sketch = Math.Min(smaller, rank + options.Oversampling);
        bool exact = options.Method switch
        {
            SvdMethod.Exact => true,
            SvdMethod.Randomized => false,
            _ => smaller <= options.ExactLimit || 2 * sketch >= smaller,
        };
        // Work on the tall orientation (rows ≥ columns); a wide matrix is factored as its transpose.
        bool transposed = rows < columns;
        var m = transposed ? LinearAlgebra.Transpose(matrix, rows, columns) : matrix.ToArray();
        int tall = Math.Max(rows, columns), wide = smaller;
        var (u, values, vt) = exact ? Exact(m, tall, wide, rank, options.Threads) : Randomized(m, tall, wide, rank, sketch, options);
        if (!transposed)
            return new SingularTriplets(u, values, vt, rows, columns, rank);
        // Mᵀ = U Σ Vt  ⇒  M = Vtᵀ Σ Uᵀ.
        return new SingularTriplets(LinearAlgebra.Transpose(vt, rank, wide), values, LinearAlgebra.Transpose(u, tall, rank), rows, columns, rank);
    }

    // m [tall, wide], tall ≥ wide: M = Q R, R = Ur Σ Vt  ⇒  U = Q Ur.
    private static (double[] U, double[] Values, double[] Vt) Exact(double[] m, int tall, int wide, int rank, int threads)
    {
        var qr = Matrix<double>.Build.DenseOfRowMajor(tall, wide, m).QR(QRMethod.Thin);
        var (ur, values, vt) = SquareSvd(qr.R, rank);
        var u = LinearAlgebra.Multiply(qr.Q.ToRowMajorArray(), ur, tall, wide, rank, threads);
        return (u, values, vt);
    }

    // Halko, Martinsson, Tropp (2011), algorithms 4.4 and 5.1.
    private static (double[] U, double[] Values, double[] Vt) Randomized(double[] m, int tall, int wide, int rank, int sketch, SvdOptions options)
    {
        int threads = options.Threads;
        var mt = LinearAlgebra.Transpose(m, tall, wide); // [wide, tall]
        var omega = Gaussian(wide, sketch, options.Seed); // [wide, sketch]
        var q = Orthonormal(LinearAlgebra.Multiply(m, omega, tall, wide, sketch, threads), tall, sketch); // [tall, sketch]
        for (int iteration = 0; iteration < options.PowerIterations; iteration++)
        {
            var z = Orthonormal(LinearAlgebra.Multiply(mt, q, wide, tall, sketch, threads), wide, sketch); // [wide, sketch]
            q = Orthonormal(LinearAlgebra.Multiply(m, z, tall, wide, sketch, threads), tall, sketch);
        }
        // Bᵀ = Mᵀ Q [wide, sketch] = Q₂ R₂, so B = R₂ᵀ Q₂ᵀ; R₂ᵀ = Ub Σ W  ⇒  M ≈ Q B = (Q Ub) Σ (W Q₂ᵀ).
        var bt = LinearAlgebra.Multiply(mt, q, wide, tall, sketch, threads);
        var qr = Matrix<double>.Build.DenseOfRowMajor(wide, sketch, bt).QR(QRMethod.Thin);
        var (ub, values, w) = SquareSvd(qr.R.Transpose(), rank);
        var u = LinearAlgebra.Multiply(q, ub, tall, sketch, rank, threads);
        var vt = LinearAlgebra.MultiplyTransposedRight(w, qr.Q.ToRowMajorArray(), rank, sketch, wide, threads);
        return (u, values, vt);
    }

    // The leading rank triplets of a small square matrix: U [n, rank], values [rank], Vt [rank, n].
    private static (double[] U, double[] Values, double[] Vt) SquareSvd(Matrix<double> square, int rank)
    {
        int n = square.RowCount;
        var svd = square.Svd(computeVectors: true);
        var u = new double[n * rank];
        var vt = new double[rank * n];
        var values = new double[rank];
        for (int j = 0; j < rank; j++)
        {
            values[j] = svd.S[j];
            for (int i = 0; i < n; i++)
            {
                u[i * rank + j] = svd.U[i, j];
                vt[j * n + i] = svd.VT[j, i];
            }
        }
        return (u, values, vt);
    }

    // An orthonormal basis of the columns of a [rows, columns] (rows ≥ columns) by thin QR.
    private static double[] Orthonormal(double[] a, int rows, int columns)
        => Matrix<double>.Build.DenseOfRowMajor(rows, columns, a).QR(QRMethod.Thin).Q.ToRowMajorArray();

    // [rows, columns] standard normal values (Box–Muller), seeded.
    private static double[] Gaussian(int rows, int columns, int seed)
    {
        var random = new Random(seed);
        var values = new double[(long)rows * columns];
        for (int i = 0; i < values.Length; i += 2)
        {
            double radius = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())), angle = 2 * Math.PI * random.NextDouble();
            values[i] = radius * Math.Cos(angle);
            if (i + 1 < values.Length)
                values[i + 1] = radius * Math.Sin(angle);
        }
        return values;
    }
}
