namespace Squeeze.Tests.LowRank;

/// <summary>Seeded matrices for the factorization tests, and the dense products they are checked with.</summary>
internal static class LowRankTestData
{
    public static double Normal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    public static double[] Gaussian(int rows, int columns, Random rng)
    {
        var m = new double[rows * columns];
        for (int i = 0; i < m.Length; i++)
            m[i] = Normal(rng);
        return m;
    }

    /// <summary>[rows, columns] with orthonormal columns (Gram-Schmidt of a Gaussian matrix).</summary>
    public static double[] Orthonormal(int rows, int columns, Random rng)
    {
        var q = Gaussian(rows, columns, rng);
        for (int j = 0; j < columns; j++)
        {
            for (int k = 0; k < j; k++)
            {
                double dot = 0;
                for (int i = 0; i < rows; i++)
                    dot += q[i * columns + j] * q[i * columns + k];
                for (int i = 0; i < rows; i++)
                    q[i * columns + j] -= dot * q[i * columns + k];
            }
            double norm = 0;
            for (int i = 0; i < rows; i++)
                norm += q[i * columns + j] * q[i * columns + j];
            for (int i = 0; i < rows; i++)
                q[i * columns + j] /= Math.Sqrt(norm);
        }
        return q;
    }

    /// <summary>U·diag(values)·Vᵀ with random orthonormal U [rows, n] and V [columns, n], n = values.Length.</summary>
    public static double[] WithSpectrum(int rows, int columns, double[] values, Random rng)
    {
        int n = values.Length;
        var u = Orthonormal(rows, n, rng);
        var v = Orthonormal(columns, n, rng);
        var m = new double[rows * columns];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++)
                for (int k = 0; k < n; k++)
                    m[i * columns + j] += u[i * n + k] * values[k] * v[j * n + k];
        return m;
    }

    /// <summary>a [m, k] · b [k, n].</summary>
    public static double[] Product(double[] a, double[] b, int m, int k, int n)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++)
                for (int j = 0; j < n; j++)
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
        return c;
    }

    public static double[] ToDouble(float[] values) => Array.ConvertAll(values, v => (double)v);

    public static float[] ToSingle(double[] values) => Array.ConvertAll(values, v => (float)v);

    public static double Norm(double[] a) => Math.Sqrt(a.Sum(v => v * v));

    public static double[] Difference(double[] a, double[] b) => a.Select((v, i) => v - b[i]).ToArray();

    /// <summary>Calibration inputs X [tokens, columns] whose columns have very different scales and are correlated
    /// (like a transformer's activations), and H = XᵀX / tokens.</summary>
    public static (double[] X, double[] Hessian) Activations(int tokens, int columns, Random rng)
    {
        var mixing = Gaussian(columns, columns, rng);
        var x = Product(Gaussian(tokens, columns, rng), mixing, tokens, columns, columns);
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < columns; j++)
                x[t * columns + j] *= j % 7 == 0 ? 20 : 1;
        var h = new double[columns * columns];
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < columns; i++)
                for (int j = 0; j < columns; j++)
                    h[i * columns + j] += x[t * columns + i] * x[t * columns + j] / tokens;
        return (x, h);
    }

    /// <summary>‖E·Xᵀ‖_F for E [rows, columns] and X [tokens, columns].</summary>
    public static double OutputError(double[] e, double[] x, int rows, int columns, int tokens)
    {
        double sum = 0;
        for (int r = 0; r < rows; r++)
        {
            for (int t = 0; t < tokens; t++)
            {
                double y = 0;
                for (int c = 0; c < columns; c++)
                    y += e[r * columns + c] * x[t * columns + c];
                sum += y * y;
            }
        }
        return Math.Sqrt(sum);
    }
}
