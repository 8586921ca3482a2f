namespace Squeeze.Kernels;

// The large products of the factorizations (the weight times a sketch, times a whitening matrix …) in double,
// row-major. Every output row is computed by one work item in a fixed order, so results do not depend on the thread
// count. MathNet only ever sees the small matrices these products produce.
internal static partial class LinearAlgebra
{
    // Below this many multiply-adds a product runs on the calling thread.
    private const long ProductParallelThreshold = 1 << 18;

    /// <summary><c>c = a · b</c>: a [m, k], b [k, n], c [m, n].</summary>
    public static double[] Multiply(ReadOnlySpan<double> a, ReadOnlySpan<double> b, int m, int k, int n, int threads)
    {
        CheckLength(a, (long)m * k, nameof(a));
        CheckLength(b, (long)k * n, nameof(b));
        var c = new double[(long)m * n];
        var aa = a.ToArray();
        var bb = b.ToArray();
        Rows(m, (long)m * k * n, threads, i =>
        {
            var row = c.AsSpan(i * n, n);
            for (int p = 0; p < k; p++)
            {
                double v = aa[(long)i * k + p];
                if (v != 0)
                    LinearAlgebra.Axpy(v, new ReadOnlySpan<double>(bb, p * n, n), row);
            }
        });
        return c;
    }

    /// <summary><c>c = aᵀ · b</c>: a [k, m], b [k, n], c [m, n].</summary>
    public static double[] MultiplyTransposedLeft(ReadOnlySpan<double> a, ReadOnlySpan<double> b, int k, int m, int n, int threads)
    {
        CheckLength(a, (long)k * m, nameof(a));
        CheckLength(b, (long)k * n, nameof(b));
        return Multiply(Transpose(a, k, m), b, m, k, n, threads);
    }

    /// <summary><c>c = a · bᵀ</c>: a [m, k], b [n, k], c [m, n]; each element one <see cref="Dot(ReadOnlySpan{double}, ReadOnlySpan{double})"/>.</summary>
    public static double[] MultiplyTransposedRight(ReadOnlySpan<double> a, ReadOnlySpan<double> b, int m, int k, int n, int threads)
    {
        CheckLength(a, (long)m * k, nameof(a));
        CheckLength(b, (long)n * k, nameof(b));
        var c = new double[(long)m * n];
        var aa = a.ToArray();
        var bb = b.ToArray();
        Rows(m, (long)m * k * n, threads, i =>
        {
            var ai = new ReadOnlySpan<double>(aa, i * k, k);
            for (int j = 0; j < n; j++)
                c[(long)i * n + j] = Dot(ai, new ReadOnlySpan<double>(bb, j * k, k));
        });
        return c;
    }

    /// <summary>aᵀ: a [m, n] → [n, m].</summary>
    public static double[] Transpose(ReadOnlySpan<double> a, int m, int n)
    {
        CheckLength(a, (long)m * n, nameof(a));
        var t = new double[(long)m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                t[(long)j * m + i] = a[i * n + j];
        return t;
    }

    /// <summary>Σ a[i]² (the squared Frobenius norm).</summary>
    public static double SquaredNorm(ReadOnlySpan<double> a) => Dot(a, a);

    private static void Rows(int m, long work, int threads, Action<int> row)
    {
        if (threads <= 1 || work < ProductParallelThreshold || m < 2)
        {
            for (int i = 0; i < m; i++)
                row(i);
            return;
        }
        Parallel.For(0, m, new ParallelOptions { MaxDegreeOfParallelism = threads }, row);
    }

    private static void CheckLength(ReadOnlySpan<double> a, long expected, string name)
    {
        if (a.Length != expected)
            throw new ArgumentException($"{expected} values expected, got {a.Length}", name);
    }
}
