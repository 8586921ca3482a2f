using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

// c = a · bᵀ (or c += a · bᵀ) in f32 for the tuning graph: a [m, k], b [n, k], c [m, n], all row-major. The rows of b are split
// into blocks across the threads; each element is one dot product in a fixed order (eight-lane partial sums, then the
// tail), so the result does not depend on the thread count. MultiplyTransposedReference is the plain definition.
internal static partial class LinearAlgebra
{
    private const int BlockRows = 32; // rows of b per work item

    public static void MultiplyTransposed(float[] a, float[] b, int m, int k, int n, float[] c, int threads, bool accumulate = false)
    {
        CheckProduct(a, b, m, k, n, c);
        int blocks = (n + BlockRows - 1) / BlockRows;
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads) };
        if ((long)m * n * k < 1 << 16 || threads <= 1)
        {
            for (int block = 0; block < blocks; block++)
                Block(a, b, m, k, n, c, block, accumulate);
            return;
        }
        Parallel.For(0, blocks, parallel, block => Block(a, b, m, k, n, c, block, accumulate));
    }

    private static void Block(float[] a, float[] b, int m, int k, int n, float[] c, int block, bool accumulate)
    {
        Span<float> four = stackalloc float[4];
        int j0 = block * BlockRows, j1 = Math.Min(n, j0 + BlockRows);
        for (int i = 0; i < m; i++)
        {
            var ai = a.AsSpan(i * k, k);
            int j = j0;
            for (; j + 4 <= j1; j += 4)
            {
                Dot4(ai, b.AsSpan(j * k, 4 * k), k, four);
                for (int q = 0; q < 4; q++)
                    c[i * n + j + q] = accumulate ? c[i * n + j + q] + four[q] : four[q];
            }
            for (; j < j1; j++)
                c[i * n + j] = accumulate ? c[i * n + j] + Dot(ai, b.AsSpan(j * k, k)) : Dot(ai, b.AsSpan(j * k, k));
        }
    }

    /// <summary>Four dots of <paramref name="x"/> with four consecutive rows, each summed exactly as <see cref="Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/>.</summary>
    private static void Dot4(ReadOnlySpan<float> x, ReadOnlySpan<float> rows, int k, Span<float> result)
    {
        var s0 = Vector256<float>.Zero;
        var s1 = Vector256<float>.Zero;
        var s2 = Vector256<float>.Zero;
        var s3 = Vector256<float>.Zero;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var xv = Vector256.Create(x.Slice(p, 8));
            s0 = Vector256.FusedMultiplyAdd(xv, Vector256.Create(rows.Slice(p, 8)), s0);
            s1 = Vector256.FusedMultiplyAdd(xv, Vector256.Create(rows.Slice(k + p, 8)), s1);
            s2 = Vector256.FusedMultiplyAdd(xv, Vector256.Create(rows.Slice(2 * k + p, 8)), s2);
            s3 = Vector256.FusedMultiplyAdd(xv, Vector256.Create(rows.Slice(3 * k + p, 8)), s3);
        }
        float r0 = Vector256.Sum(s0), r1 = Vector256.Sum(s1), r2 = Vector256.Sum(s2), r3 = Vector256.Sum(s3);
        for (; p < k; p++)
        {
            r0 = MathF.FusedMultiplyAdd(x[p], rows[p], r0);
            r1 = MathF.FusedMultiplyAdd(x[p], rows[k + p], r1);
            r2 = MathF.FusedMultiplyAdd(x[p], rows[2 * k + p], r2);
            r3 = MathF.FusedMultiplyAdd(x[p], rows[3 * k + p], r3);
        }
        result[0] = r0;
        result[1] = r1;
        result[2] = r2;
        result[3] = r3;
    }

    /// <summary>One dot product in the order <see cref="Dot4"/> uses.</summary>
    public static float Dot(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        var s = Vector256<float>.Zero;
        int p = 0, k = x.Length;
        for (; p + 8 <= k; p += 8)
            s = Vector256.FusedMultiplyAdd(Vector256.Create(x.Slice(p, 8)), Vector256.Create(y.Slice(p, 8)), s);
        float r = Vector256.Sum(s);
        for (; p < k; p++)
            r = MathF.FusedMultiplyAdd(x[p], y[p], r);
        return r;
    }

    /// <summary>The definition, in double: c[i, j] = Σ_p a[i, p] · b[j, p].</summary>
    public static void MultiplyTransposedReference(float[] a, float[] b, int m, int k, int n, float[] c)
    {
        CheckProduct(a, b, m, k, n, c);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = 0;
                for (int p = 0; p < k; p++)
                    sum += (double)a[i * k + p] * b[j * k + p];
                c[i * n + j] = (float)sum;
            }
        }
    }

    /// <summary>The transpose of a [rows, columns] matrix into <paramref name="t"/> [columns, rows].</summary>
    public static void Transpose(ReadOnlySpan<float> a, int rows, int columns, Span<float> t)
    {
        const int Tile = 32;
        for (int r0 = 0; r0 < rows; r0 += Tile)
        {
            for (int c0 = 0; c0 < columns; c0 += Tile)
            {
                for (int r = r0; r < Math.Min(rows, r0 + Tile); r++)
                {
                    for (int c = c0; c < Math.Min(columns, c0 + Tile); c++)
                        t[c * rows + r] = a[r * columns + c];
                }
            }
        }
    }

    private static void CheckProduct(float[] a, float[] b, int m, int k, int n, float[] c)
    {
        if (a.Length < (long)m * k || b.Length < (long)n * k || c.Length < (long)m * n)
            throw new ArgumentException($"a [{m}, {k}] · bᵀ with b [{n}, {k}] does not fit arrays of {a.Length}, {b.Length} and {c.Length} values");
    }
}
