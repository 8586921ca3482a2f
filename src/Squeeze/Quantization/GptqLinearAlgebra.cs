namespace Squeeze.Quantization;

/// <summary>Dense symmetric positive-definite algebra in double for GPTQ (row-major n × n matrices).</summary>
internal static class GptqLinearAlgebra
{
    /// <summary>In place: a = L with a = L·Lᵀ (lower triangle; the upper triangle is zeroed). False when a pivot is not
    /// positive (the matrix is not positive definite).</summary>
    public static bool CholeskyLower(double[] a, int n)
    {
        for (int j = 0; j < n; j++)
        {
            var rowJ = a.AsSpan(j * n, n);
            double d = rowJ[j];
            for (int k = 0; k < j; k++)
                d -= rowJ[k] * rowJ[k];
            if (!(d > 0) || !double.IsFinite(d))
                return false;
            double ljj = Math.Sqrt(d);
            rowJ[j] = ljj;
            for (int i = j + 1; i < n; i++)
            {
                var rowI = a.AsSpan(i * n, n);
                double s = rowI[j];
                for (int k = 0; k < j; k++)
                    s -= rowI[k] * rowJ[k];
                rowI[j] = s / ljj;
            }
            rowJ[(j + 1)..].Clear();
        }
        return true;
    }

    /// <summary>
    /// The upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ·U) that GPTQ's error feedback uses. Returns null when H is not
    /// positive definite.
    /// </summary>
    public static double[]? InverseCholeskyUpper(ReadOnlySpan<double> h, int n)
    {
        var l = h.ToArray();
        if (!CholeskyLower(l, n))
            return null;
        // L⁻¹ column by column: L⁻¹[i, j] = −(Σ_{k=j}^{i−1} L[i, k] · L⁻¹[k, j]) / L[i, i].
        var linv = new double[l.Length];
        for (int i = 0; i < n; i++)
            linv[i * n + i] = 1.0 / l[i * n + i];
        for (int j = 0; j < n; j++)
        {
            for (int i = j + 1; i < n; i++)
            {
                double s = 0;
                for (int k = j; k < i; k++)
                    s += l[i * n + k] * linv[k * n + j];
                linv[i * n + j] = -s * linv[i * n + i];
            }
        }
        // H⁻¹ = L⁻ᵀ·L⁻¹: (H⁻¹)[i, j] = Σ_{k ≥ max(i, j)} L⁻¹[k, i] · L⁻¹[k, j].
        var hinv = new double[l.Length];
        for (int k = 0; k < n; k++)
        {
            var row = linv.AsSpan(k * n, k + 1);
            for (int i = 0; i <= k; i++)
            {
                double a = row[i];
                if (a == 0)
                    continue;
                var target = hinv.AsSpan(i * n, n);
                for (int j = i; j <= k; j++)
                    target[j] += a * row[j];
            }
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i; j++)
                hinv[i * n + j] = hinv[j * n + i];
        if (!CholeskyLower(hinv, n))
            return null;
        // U = Mᵀ for the lower factor M of H⁻¹.
        var u = new double[l.Length];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
                u[j * n + i] = hinv[i * n + j];
        return u;
    }
}
