using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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
    /// positive (the matrix is not positive definite). Bit-identical to <see cref="CholeskyLowerReference"/>: every
    /// element's dot product Dot(L[i, :j], L[j, :j]) is summed in the same four lanes in the same order, but in panels of
    /// <see cref="DotBlockRows"/> columns — the part of the dot products before the panel for four rows and the whole
    /// panel at once (<see cref="DotRows4x2"/>, the rows' pieces in cache), then the part inside the panel column by
    /// column — so the factor is not read again from memory for every column. Rows below a panel are split between the
    /// threads.</summary>
    public static bool CholeskyLower(double[] a, int n, int threads)
    {
        const int Panel = DotBlockRows;
        for (int j0 = 0; j0 < n; j0 += Panel)
        {
            int j1 = Math.Min(j0 + Panel, n);
            // The panel's own rows, column by column.
            for (int j = j0; j < j1; j++)
            {
                double d = a[(long)j * n + j] - FinishLanes(Lanes(a, j * n, j * n, 0, j), a, j * n, j * n, j);
                if (!(d > 0) || !double.IsFinite(d))
                    return false;
                double ljj = Math.Sqrt(d);
                a[(long)j * n + j] = ljj;
                for (int i = j + 1; i < j1; i++)
                    a[(long)i * n + j] = (a[(long)i * n + j] - FinishLanes(Lanes(a, i * n, j * n, 0, j), a, i * n, j * n, j)) / ljj;
            }
            for (int j = j0; j < j1; j++)
                a.AsSpan(j * n + j + 1, n - j - 1).Clear();
            int jj0 = j0;
            void Below(int from, int to)
            {
                var acc = new Vector256<double>[GroupRows * Panel];
                int i = from;
                for (; i + GroupRows <= to; i += GroupRows)
                {
                    Array.Clear(acc);
                    for (int p0 = 0; p0 < jj0; p0 += DotBlockLength)
                    {
                        int p1 = Math.Min(p0 + DotBlockLength, jj0);
                        for (int j = jj0; j + 2 <= j1; j += 2)
                            DotRows4x2(a, i * n, n, a, j * n, p0, p1, n, acc, j - jj0);
                    }
                    for (int r = 0; r < GroupRows; r++)
                        PanelRow(a, n, i + r, jj0, j1, acc.AsSpan(r * Panel, Panel));
                }
                for (; i < to; i++)
                    PanelRow(a, n, i, jj0, j1, outer: []);
            }
            Split(j1, n, (long)(n - j1) * (j1 + Panel) * Panel, threads, Below);
        }
        return true;
    }

    // Row i's elements in panel columns [j0, j1) from the lanes of its dot products over [0, j0): given in outer for the
    // panel's pairs of columns, summed here for an odd last column or when outer is empty.
    private static void PanelRow(double[] a, int n, int i, int j0, int j1, Span<Vector256<double>> outer)
    {
        int paired = outer.IsEmpty ? j0 : j0 + (j1 - j0) / 2 * 2;
        for (int j = j0; j < j1; j++)
        {
            var lanes = j < paired ? outer[j - j0] : Lanes(a, i * n, j * n, 0, j0);
            double dot = FinishLanes(Lanes(a, i * n, j * n, j0, j, lanes), a, i * n, j * n, j);
            a[(long)i * n + j] = (a[(long)i * n + j] - dot) / a[(long)j * n + j];
        }
    }

    // Dot's lanes over the whole fours of [p0, length) of a[x..] and a[y..] (p0 a multiple of 4), continuing acc.
    private static Vector256<double> Lanes(double[] a, int x, int y, int p0, int length, Vector256<double> acc = default)
    {
        for (int p = p0; p + 4 <= length; p += 4)
            acc += Vector256.Create(new ReadOnlySpan<double>(a, x + p, 4)) * Vector256.Create(new ReadOnlySpan<double>(a, y + p, 4));
        return acc;
    }

    // Dot's ending for vectors of length at a[x..] and a[y..] whose whole fours are summed in acc.
    private static double FinishLanes(Vector256<double> acc, double[] a, int x, int y, int length)
        => Finish(acc, a, x, a, y, length - length % 4, length);

    /// <summary>The definition of <see cref="CholeskyLower"/>: column by column, each element one
    /// <see cref="Dot(ReadOnlySpan{double}, ReadOnlySpan{double})"/>.</summary>
    public static bool CholeskyLowerReference(double[] a, int n)
    {
        for (int j = 0; j < n; j++)
        {
            var rowJ = a.AsSpan(j * n, n);
            double d = rowJ[j] - Dot(rowJ[..j], rowJ[..j]);
            if (!(d > 0) || !double.IsFinite(d))
                return false;
            double ljj = Math.Sqrt(d);
            rowJ[j] = ljj;
            for (int i = j + 1; i < n; i++)
            {
                var rowI = a.AsSpan(i * n, n);
                rowI[j] = (rowI[j] - Dot(rowI[..j], rowJ[..j])) / ljj;
            }
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
    /// U[i, j] = −(Σ_{k=i+1}^{j} V[i, k]·U[k, j]) / V[i, i], U[i, i] = 1 / V[i, i], the sum in ascending k. A column of U
    /// needs only the same column of the rows below, so the columns are made in strips of <see cref="InverseStrip"/>, each
    /// strip bottom to top with its rows in cache, the strips split between the threads: the same arithmetic as
    /// <see cref="InvertUpperReference"/>, element for element, without reading all of U below a row for every row.</summary>
    public static double[] InvertUpper(double[] v, int n, int threads)
    {
        var u = new double[(long)n * n];
        int strips = (n + InverseStrip - 1) / InverseStrip;
        void Strip(int s)
        {
            int from = s * InverseStrip, to = Math.Min(from + InverseStrip, n);
            for (int i = to - 1; i >= 0; i--)
            {
                double inverse = 1.0 / v[(long)i * n + i];
                int first = Math.Max(i + 1, from);
                if (first < to && to - from == InverseStrip)
                {
                    StripRow(v, u, n, i, from, first, to, inverse);
                }
                else if (first < to)
                {
                    var row = u.AsSpan(i * n, n);
                    for (int k = i + 1; k < to; k++)
                    {
                        double coefficient = v[(long)i * n + k];
                        if (coefficient == 0)
                            continue;
                        int start = Math.Max(k, first);
                        Axpy(-coefficient, new ReadOnlySpan<double>(u, k * n + start, to - start), row[start..to]);
                    }
                    for (int j = first; j < to; j++)
                        row[j] *= inverse;
                }
                if (i >= from)
                    u[(long)i * n + i] = inverse;
            }
        }
        // The widest strips (on the right: their columns have the most rows) first.
        if (threads <= 1 || (long)n * n * n < 64 * FactorParallelThreshold)
        {
            for (int s = strips - 1; s >= 0; s--)
                Strip(s);
        }
        else
        {
            Parallel.For(0, strips, new ParallelOptions { MaxDegreeOfParallelism = threads }, s => Strip(strips - 1 - s));
        }
        return u;
    }

    // Columns of U per strip of InvertUpper: a strip of a 14,336-wide U is 7 MB.
    private const int InverseStrip = 64;

    // Row i of a whole strip [from, to) of U, its sums kept in sixteen vectors while k runs: each element receives
    // −V[i, k]·U[k, j] for k = i + 1 … in order exactly as Axpy adds them (U[k, j] = 0 for j < k adds nothing: the sums start
    // at +0 and never become −0), then is scaled by the inverse; only the columns from first on are stored.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StripRow(double[] v, double[] u, int n, int i, int from, int first, int to, double inverse)
    {
        ref double ur = ref MemoryMarshal.GetArrayDataReference(u);
        Vector256<double> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector256<double> a8 = default, a9 = default, a10 = default, a11 = default, a12 = default, a13 = default, a14 = default, a15 = default;
        for (int k = i + 1; k < to; k++)
        {
            double coefficient = v[(long)i * n + k];
            if (coefficient == 0)
                continue;
            var c = Vector256.Create(-coefficient);
            nuint at = (nuint)((long)k * n + from);
            a0 += c * Vector256.LoadUnsafe(ref ur, at); a1 += c * Vector256.LoadUnsafe(ref ur, at + 4);
            a2 += c * Vector256.LoadUnsafe(ref ur, at + 8); a3 += c * Vector256.LoadUnsafe(ref ur, at + 12);
            a4 += c * Vector256.LoadUnsafe(ref ur, at + 16); a5 += c * Vector256.LoadUnsafe(ref ur, at + 20);
            a6 += c * Vector256.LoadUnsafe(ref ur, at + 24); a7 += c * Vector256.LoadUnsafe(ref ur, at + 28);
            a8 += c * Vector256.LoadUnsafe(ref ur, at + 32); a9 += c * Vector256.LoadUnsafe(ref ur, at + 36);
            a10 += c * Vector256.LoadUnsafe(ref ur, at + 40); a11 += c * Vector256.LoadUnsafe(ref ur, at + 44);
            a12 += c * Vector256.LoadUnsafe(ref ur, at + 48); a13 += c * Vector256.LoadUnsafe(ref ur, at + 52);
            a14 += c * Vector256.LoadUnsafe(ref ur, at + 56); a15 += c * Vector256.LoadUnsafe(ref ur, at + 60);
        }
        Span<double> sums = stackalloc double[InverseStrip];
        a0.CopyTo(sums); a1.CopyTo(sums[4..]); a2.CopyTo(sums[8..]); a3.CopyTo(sums[12..]);
        a4.CopyTo(sums[16..]); a5.CopyTo(sums[20..]); a6.CopyTo(sums[24..]); a7.CopyTo(sums[28..]);
        a8.CopyTo(sums[32..]); a9.CopyTo(sums[36..]); a10.CopyTo(sums[40..]); a11.CopyTo(sums[44..]);
        a12.CopyTo(sums[48..]); a13.CopyTo(sums[52..]); a14.CopyTo(sums[56..]); a15.CopyTo(sums[60..]);
        for (int j = first; j < to; j++)
            u[(long)i * n + j] = sums[j - from] * inverse;
    }

    /// <summary>The definition of <see cref="InvertUpper"/>: row by row from the bottom, each row's sums over all of U below it.</summary>
    public static double[] InvertUpperReference(double[] v, int n)
    {
        var u = new double[(long)n * n];
        for (int i = n - 1; i >= 0; i--)
        {
            double inverse = 1.0 / v[(long)i * n + i];
            var row = u.AsSpan(i * n, n);
            for (int k = i + 1; k < n; k++)
            {
                double coefficient = v[(long)i * n + k];
                if (coefficient != 0)
                    Axpy(-coefficient, new ReadOnlySpan<double>(u, k * n + k, n - k), row[k..]);
            }
            for (int j = i + 1; j < n; j++)
                row[j] *= inverse;
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
