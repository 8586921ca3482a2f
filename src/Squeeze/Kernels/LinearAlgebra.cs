using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

/// <summary>
/// Dense linear algebra, the one home of it: symmetric positive-definite factorizations in double for GPTQ, SparseGPT
/// and the whitening of the low-rank factorizations (row-major n × n matrices, this file); the large double products of
/// the factorizations (<c>LinearAlgebra.Products.cs</c>); and the f32 products of the tuning graph
/// (<c>LinearAlgebra.Single.cs</c>). Results are bit-identical whatever the thread count and whether or not the machine
/// has 256-bit vectors: every dot product sums in fixed lanes, and every element is computed by exactly one work item.
/// </summary>
internal static partial class LinearAlgebra
{
    // Below this many multiply-adds a step runs on the calling thread.
    private const long FactorParallelThreshold = 1 << 16;

    /// <summary>
    /// The upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ·U, as <c>torch.linalg.cholesky(H⁻¹, upper=True)</c>) that GPTQ's error
    /// feedback uses, without forming H⁻¹: with J the order reversal, J·H·J = L·Lᵀ gives H = V·Vᵀ for the upper
    /// V = J·L·J, so H⁻¹ = V⁻ᵀ·V⁻¹ and U = V⁻¹. Returns null when H is not positive definite.
    /// Works in <paramref name="h"/>'s own storage, which it overwrites: J·H·J is H reversed element by element, factored
    /// in place, and reversed back into V (J·L·J of a lower L is upper), so the only other n² array is U — what a wide
    /// layer's Hessian (14,336 columns: 1.6 GB a copy) can afford.
    /// </summary>
    public static double[]? InverseCholeskyUpper(double[] h, int n, int threads)
    {
        ArgumentNullException.ThrowIfNull(h);
        if (h.LongLength != (long)n * n)
            throw new ArgumentException($"a {n} x {n} matrix expected, got {h.LongLength} values", nameof(h));
        h.AsSpan().Reverse();
        if (!CholeskyLower(h, n, threads))
            return null;
        h.AsSpan().Reverse();
        return InvertUpper(h, n, threads);
    }

    /// <summary>In place: a = L with a = L·Lᵀ (lower triangle; the upper triangle is zeroed). False when a pivot is not
    /// positive (the matrix is not positive definite).</summary>
    public static bool CholeskyLower(double[] a, int n, int threads)
    {
        for (int j = 0; j < n; j++)
        {
            var rowJ = a.AsSpan(j * n, n);
            double d = rowJ[j] - Dot(rowJ[..j], rowJ[..j]);
            if (!(d > 0) || !double.IsFinite(d))
                return false;
            double ljj = Math.Sqrt(d);
            rowJ[j] = ljj;
            int jj = j;
            void Rows(int from, int to)
            {
                var lj = new ReadOnlySpan<double>(a, jj * n, jj);
                for (int i = from; i < to; i++)
                {
                    var rowI = a.AsSpan(i * n, n);
                    rowI[jj] = (rowI[jj] - Dot(rowI[..jj], lj)) / ljj;
                }
            }
            Split(j + 1, n, (long)(n - j - 1) * j, threads, Rows);
            rowJ[(j + 1)..].Clear();
        }
        return true;
    }

    /// <summary>Solves a·x = b for a symmetric positive-definite a ([n, n], overwritten by its Cholesky factor); b becomes x.
    /// False when a is not positive definite.</summary>
    public static bool SolvePositiveDefinite(double[] a, double[] b, int n)
    {
        if (!CholeskyLower(a, n, 1))
            return false;
        for (int i = 0; i < n; i++)
            b[i] = (b[i] - Dot(new ReadOnlySpan<double>(a, i * n, i), new ReadOnlySpan<double>(b, 0, i))) / a[i * n + i];
        for (int i = n - 1; i >= 0; i--)
        {
            double s = b[i];
            for (int k = i + 1; k < n; k++)
                s -= a[k * n + i] * b[k];
            b[i] = s / a[i * n + i];
        }
        return true;
    }

    /// <summary>U = V⁻¹ for an upper-triangular V, row by row from the bottom:
    /// U[i, j] = −(Σ_{k=i+1}^{j} V[i, k]·U[k, j]) / V[i, i], U[i, i] = 1 / V[i, i].</summary>
    public static double[] InvertUpper(double[] v, int n, int threads)
    {
        var u = new double[(long)n * n];
        for (int i = n - 1; i >= 0; i--)
        {
            double inverse = 1.0 / v[(long)i * n + i];
            int ii = i;
            void Columns(int from, int to)
            {
                var row = u.AsSpan(ii * n, n);
                for (int k = ii + 1; k < to; k++)
                {
                    double coefficient = v[(long)ii * n + k];
                    if (coefficient == 0)
                        continue;
                    int start = Math.Max(k, from);
                    Axpy(-coefficient, new ReadOnlySpan<double>(u, k * n + start, to - start), row[start..to]);
                }
                for (int j = from; j < to; j++)
                    row[j] *= inverse;
            }
            Split(i + 1, n, (long)(n - i) * (n - i) / 2, threads, Columns);
            u[(long)i * n + i] = inverse;
        }
        return u;
    }

    /// <summary>Σ a[i]·b[i] summed in four lanes (element i goes to lane i mod 4, the tail to lane 0), then (l0 + l1) + (l2 + l3).</summary>
    public static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        int n = a.Length, i = 0;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var acc = Vector256<double>.Zero;
            for (; i + 4 <= n; i += 4)
                acc += Vector256.Create(a.Slice(i, 4)) * Vector256.Create(b.Slice(i, 4));
            s0 = acc[0];
            s1 = acc[1];
            s2 = acc[2];
            s3 = acc[3];
        }
        else
        {
            for (; i + 4 <= n; i += 4)
            {
                s0 += a[i] * b[i];
                s1 += a[i + 1] * b[i + 1];
                s2 += a[i + 2] * b[i + 2];
                s3 += a[i + 3] * b[i + 3];
            }
        }
        for (; i < n; i++)
            s0 += a[i] * b[i];
        return (s0 + s1) + (s2 + s3);
    }

    /// <summary>y[i] += alpha · x[i] (each element rounded the same way with or without vectors).</summary>
    public static void Axpy(double alpha, ReadOnlySpan<double> x, Span<double> y)
    {
        int n = x.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var va = Vector256.Create(alpha);
            for (; i + 4 <= n; i += 4)
                (Vector256.Create(y.Slice(i, 4)) + va * Vector256.Create(x.Slice(i, 4))).CopyTo(y.Slice(i, 4));
        }
        for (; i < n; i++)
            y[i] += alpha * x[i];
    }

    // Runs body over [from, to) in contiguous chunks, in parallel when the work is large enough.
    private static void Split(int from, int to, long work, int threads, Action<int, int> body)
    {
        int count = to - from;
        if (count <= 0)
            return;
        if (threads <= 1 || work < FactorParallelThreshold || count < 2 * threads)
        {
            body(from, to);
            return;
        }
        int chunks = Math.Min(count, threads * 4);
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, c =>
        {
            int start = from + (int)((long)count * c / chunks), end = from + (int)((long)count * (c + 1) / chunks);
            body(start, end);
        });
    }
}
