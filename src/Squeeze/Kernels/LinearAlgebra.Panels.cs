using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

// Matrix-matrix forms of Axpy and Dot for GPTQ's row tiles: the rows of a tile share every row of the factor or of H,
// so a group of four rows reads each once, with the rows' partial results held in registers. Each output element gets
// exactly the arithmetic of the one-row kernel (the same products, rounded and summed in the same order), so results are
// bit-identical to Axpy / Dot row by row, with 512-bit, 256-bit or no vectors. SubtractProductsReference and
// DotRowsReference are the plain definitions.
internal static partial class LinearAlgebra
{
    private const int GroupRows = 4;

    /// <summary>
    /// <c>y[r, j] −= c[r, k] · x[k, j]</c> for r &lt; <paramref name="rows"/>, j &lt; <paramref name="length"/>, k = 0 …
    /// <paramref name="count"/> − 1 in that order, each step rounded as <see cref="Axpy"/>(−c[r, k], x[k, :], y[r, :]) is;
    /// a k whose coefficients are zero for every row of a group is skipped. c[r, k] at <c>cOffset + r·cStride + k</c>,
    /// x[k, j] at <c>xOffset + k·xStride + j</c>, y[r, j] at <c>yOffset + r·yStride + j</c>.
    /// </summary>
    public static void SubtractProducts(double[] c, int cOffset, int cStride, double[] x, int xOffset, int xStride,
        int rows, int count, int length, double[] y, int yOffset, int yStride)
    {
        if (rows <= 0 || count <= 0 || length <= 0)
            return;
        CheckPanel(c.Length, cOffset, cStride, rows, count, nameof(c));
        CheckPanel(x.Length, xOffset, xStride, count, length, nameof(x));
        CheckPanel(y.Length, yOffset, yStride, rows, length, nameof(y));
        Span<int> used = count <= 512 ? stackalloc int[count] : new int[count];
        for (int r0 = 0; r0 < rows; r0 += GroupRows)
        {
            int group = Math.Min(GroupRows, rows - r0);
            // The k that change some row of the group.
            int usedCount = 0;
            for (int k = 0; k < count; k++)
            {
                for (int r = 0; r < group; r++)
                {
                    if (c[cOffset + (r0 + r) * cStride + k] != 0)
                    {
                        used[usedCount++] = k;
                        break;
                    }
                }
            }
            if (usedCount == 0)
                continue;
            int j = 0;
            if (group == GroupRows)
            {
                if (Vector512.IsHardwareAccelerated)
                    j = SubtractProducts512(c, cOffset + r0 * cStride, cStride, x, xOffset, xStride, used[..usedCount], length, y, yOffset + r0 * yStride, yStride);
                else if (Vector256.IsHardwareAccelerated)
                    j = SubtractProducts256(c, cOffset + r0 * cStride, cStride, x, xOffset, xStride, used[..usedCount], length, y, yOffset + r0 * yStride, yStride);
            }
            // The columns left (all of them without vectors or for a short group), as Axpy's scalar tail.
            for (int r = 0; r < group; r++)
            {
                var yr = y.AsSpan(yOffset + (r0 + r) * yStride, length);
                for (int u = 0; u < usedCount; u++)
                {
                    int k = used[u];
                    double alpha = -c[cOffset + (r0 + r) * cStride + k];
                    int xk = xOffset + k * xStride;
                    for (int jj = j; jj < length; jj++)
                        yr[jj] += alpha * x[xk + jj];
                }
            }
        }
    }

    // Four rows, 16 columns at a time; returns the columns done. The offsets were checked by SubtractProducts.
    private static int SubtractProducts512(double[] c, int cOffset, int cStride, double[] x, int xOffset, int xStride,
        ReadOnlySpan<int> used, int length, double[] y, int yOffset, int yStride)
    {
        ref double yr = ref MemoryMarshal.GetArrayDataReference(y);
        ref double xr = ref MemoryMarshal.GetArrayDataReference(x);
        int j = 0;
        for (; j + 16 <= length; j += 16)
        {
            nuint y0 = (nuint)(yOffset + j), y1 = y0 + (nuint)yStride, y2 = y1 + (nuint)yStride, y3 = y2 + (nuint)yStride;
            var a0 = Vector512.LoadUnsafe(ref yr, y0); var b0 = Vector512.LoadUnsafe(ref yr, y0 + 8);
            var a1 = Vector512.LoadUnsafe(ref yr, y1); var b1 = Vector512.LoadUnsafe(ref yr, y1 + 8);
            var a2 = Vector512.LoadUnsafe(ref yr, y2); var b2 = Vector512.LoadUnsafe(ref yr, y2 + 8);
            var a3 = Vector512.LoadUnsafe(ref yr, y3); var b3 = Vector512.LoadUnsafe(ref yr, y3 + 8);
            foreach (int k in used)
            {
                nuint xk = (nuint)(xOffset + k * xStride + j);
                int ck = cOffset + k;
                var xa = Vector512.LoadUnsafe(ref xr, xk);
                var xb = Vector512.LoadUnsafe(ref xr, xk + 8);
                var c0 = Vector512.Create(-c[ck]);
                var c1 = Vector512.Create(-c[ck + cStride]);
                var c2 = Vector512.Create(-c[ck + 2 * cStride]);
                var c3 = Vector512.Create(-c[ck + 3 * cStride]);
                a0 += c0 * xa; b0 += c0 * xb;
                a1 += c1 * xa; b1 += c1 * xb;
                a2 += c2 * xa; b2 += c2 * xb;
                a3 += c3 * xa; b3 += c3 * xb;
            }
            a0.StoreUnsafe(ref yr, y0); b0.StoreUnsafe(ref yr, y0 + 8);
            a1.StoreUnsafe(ref yr, y1); b1.StoreUnsafe(ref yr, y1 + 8);
            a2.StoreUnsafe(ref yr, y2); b2.StoreUnsafe(ref yr, y2 + 8);
            a3.StoreUnsafe(ref yr, y3); b3.StoreUnsafe(ref yr, y3 + 8);
        }
        return j;
    }

    // Four rows, 8 columns at a time; returns the columns done. The offsets were checked by SubtractProducts.
    private static int SubtractProducts256(double[] c, int cOffset, int cStride, double[] x, int xOffset, int xStride,
        ReadOnlySpan<int> used, int length, double[] y, int yOffset, int yStride)
    {
        ref double yr = ref MemoryMarshal.GetArrayDataReference(y);
        ref double xr = ref MemoryMarshal.GetArrayDataReference(x);
        int j = 0;
        for (; j + 8 <= length; j += 8)
        {
            nuint y0 = (nuint)(yOffset + j), y1 = y0 + (nuint)yStride, y2 = y1 + (nuint)yStride, y3 = y2 + (nuint)yStride;
            var a0 = Vector256.LoadUnsafe(ref yr, y0); var b0 = Vector256.LoadUnsafe(ref yr, y0 + 4);
            var a1 = Vector256.LoadUnsafe(ref yr, y1); var b1 = Vector256.LoadUnsafe(ref yr, y1 + 4);
            var a2 = Vector256.LoadUnsafe(ref yr, y2); var b2 = Vector256.LoadUnsafe(ref yr, y2 + 4);
            var a3 = Vector256.LoadUnsafe(ref yr, y3); var b3 = Vector256.LoadUnsafe(ref yr, y3 + 4);
            foreach (int k in used)
            {
                nuint xk = (nuint)(xOffset + k * xStride + j);
                int ck = cOffset + k;
                var xa = Vector256.LoadUnsafe(ref xr, xk);
                var xb = Vector256.LoadUnsafe(ref xr, xk + 4);
                var c0 = Vector256.Create(-c[ck]);
                var c1 = Vector256.Create(-c[ck + cStride]);
                var c2 = Vector256.Create(-c[ck + 2 * cStride]);
                var c3 = Vector256.Create(-c[ck + 3 * cStride]);
                a0 += c0 * xa; b0 += c0 * xb;
                a1 += c1 * xa; b1 += c1 * xb;
                a2 += c2 * xa; b2 += c2 * xb;
                a3 += c3 * xa; b3 += c3 * xb;
            }
            a0.StoreUnsafe(ref yr, y0); b0.StoreUnsafe(ref yr, y0 + 4);
            a1.StoreUnsafe(ref yr, y1); b1.StoreUnsafe(ref yr, y1 + 4);
            a2.StoreUnsafe(ref yr, y2); b2.StoreUnsafe(ref yr, y2 + 4);
            a3.StoreUnsafe(ref yr, y3); b3.StoreUnsafe(ref yr, y3 + 4);
        }
        return j;
    }

    /// <summary>The definition of <see cref="SubtractProducts"/>: one <see cref="Axpy"/> per row and nonzero coefficient.</summary>
    public static void SubtractProductsReference(double[] c, int cOffset, int cStride, double[] x, int xOffset, int xStride,
        int rows, int count, int length, double[] y, int yOffset, int yStride)
    {
        for (int r = 0; r < rows; r++)
        {
            for (int k = 0; k < count; k++)
            {
                double coefficient = c[cOffset + r * cStride + k];
                if (coefficient != 0)
                    Axpy(-coefficient, new ReadOnlySpan<double>(x, xOffset + k * xStride, length), y.AsSpan(yOffset + r * yStride, length));
            }
        }
    }

    /// <summary>
    /// <c>d[r, i] = Dot(a[r, :], b[i, :])</c> over vectors of <paramref name="length"/> for r &lt; <paramref name="rows"/>,
    /// i &lt; <paramref name="count"/>, each exactly as <see cref="Dot(ReadOnlySpan{double}, ReadOnlySpan{double})"/> sums
    /// (four lanes, then the tail, then (l0 + l1) + (l2 + l3)). a[r, p] at <c>aOffset + r·aStride + p</c>, b[i, p] at
    /// <c>bOffset + i·bStride + p</c>, d[r, i] at <c>dOffset + r·dStride + i</c>.
    /// </summary>
    public static void DotRows(double[] a, int aOffset, int aStride, double[] b, int bOffset, int bStride,
        int rows, int count, int length, double[] d, int dOffset, int dStride)
    {
        if (rows <= 0 || count <= 0)
            return;
        CheckPanel(a.Length, aOffset, aStride, rows, length, nameof(a));
        CheckPanel(b.Length, bOffset, bStride, count, length, nameof(b));
        CheckPanel(d.Length, dOffset, dStride, rows, count, nameof(d));
        int r0 = 0;
        if (Vector256.IsHardwareAccelerated && length >= 8)
        {
            for (; r0 + GroupRows <= rows; r0 += GroupRows)
            {
                int i = 0;
                for (; i + 2 <= count; i += 2)
                    DotRows4x2(a, aOffset + r0 * aStride, aStride, b, bOffset + i * bStride, bStride, length, d, dOffset + r0 * dStride + i, dStride);
                for (; i < count; i++)
                {
                    for (int r = r0; r < r0 + GroupRows; r++)
                        d[dOffset + r * dStride + i] = Dot(new ReadOnlySpan<double>(a, aOffset + r * aStride, length), new ReadOnlySpan<double>(b, bOffset + i * bStride, length));
                }
            }
        }
        for (int r = r0; r < rows; r++)
        {
            var ar = new ReadOnlySpan<double>(a, aOffset + r * aStride, length);
            for (int i = 0; i < count; i++)
                d[dOffset + r * dStride + i] = Dot(ar, new ReadOnlySpan<double>(b, bOffset + i * bStride, length));
        }
    }

    // Four rows of a against two rows of b: eight Dot accumulators. The offsets were checked by DotRows.
    private static void DotRows4x2(double[] a, int aOffset, int aStride, double[] b, int bOffset, int bStride, int length, double[] d, int dOffset, int dStride)
    {
        ref double ar = ref MemoryMarshal.GetArrayDataReference(a);
        ref double br = ref MemoryMarshal.GetArrayDataReference(b);
        var s00 = Vector256<double>.Zero; var s01 = Vector256<double>.Zero;
        var s10 = Vector256<double>.Zero; var s11 = Vector256<double>.Zero;
        var s20 = Vector256<double>.Zero; var s21 = Vector256<double>.Zero;
        var s30 = Vector256<double>.Zero; var s31 = Vector256<double>.Zero;
        int a0 = aOffset, a1 = a0 + aStride, a2 = a1 + aStride, a3 = a2 + aStride, b0 = bOffset, b1 = bOffset + bStride;
        int p = 0;
        for (; p + 4 <= length; p += 4)
        {
            var x0 = Vector256.LoadUnsafe(ref br, (nuint)(b0 + p));
            var x1 = Vector256.LoadUnsafe(ref br, (nuint)(b1 + p));
            var v = Vector256.LoadUnsafe(ref ar, (nuint)(a0 + p));
            s00 += v * x0; s01 += v * x1;
            v = Vector256.LoadUnsafe(ref ar, (nuint)(a1 + p));
            s10 += v * x0; s11 += v * x1;
            v = Vector256.LoadUnsafe(ref ar, (nuint)(a2 + p));
            s20 += v * x0; s21 += v * x1;
            v = Vector256.LoadUnsafe(ref ar, (nuint)(a3 + p));
            s30 += v * x0; s31 += v * x1;
        }
        d[dOffset] = Finish(s00, a, a0, b, b0, p, length);
        d[dOffset + 1] = Finish(s01, a, a0, b, b1, p, length);
        d[dOffset + dStride] = Finish(s10, a, a1, b, b0, p, length);
        d[dOffset + dStride + 1] = Finish(s11, a, a1, b, b1, p, length);
        d[dOffset + 2 * dStride] = Finish(s20, a, a2, b, b0, p, length);
        d[dOffset + 2 * dStride + 1] = Finish(s21, a, a2, b, b1, p, length);
        d[dOffset + 3 * dStride] = Finish(s30, a, a3, b, b0, p, length);
        d[dOffset + 3 * dStride + 1] = Finish(s31, a, a3, b, b1, p, length);
    }

    // Dot's ending: the lanes, the tail into lane 0, then (l0 + l1) + (l2 + l3).
    private static double Finish(Vector256<double> acc, double[] a, int aOffset, double[] b, int bOffset, int p, int length)
    {
        double s0 = acc[0];
        for (; p < length; p++)
            s0 += a[aOffset + p] * b[bOffset + p];
        return (s0 + acc[1]) + (acc[2] + acc[3]);
    }

    /// <summary>The definition of <see cref="DotRows"/>: one <see cref="Dot(ReadOnlySpan{double}, ReadOnlySpan{double})"/> per element.</summary>
    public static void DotRowsReference(double[] a, int aOffset, int aStride, double[] b, int bOffset, int bStride,
        int rows, int count, int length, double[] d, int dOffset, int dStride)
    {
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < count; i++)
                d[dOffset + r * dStride + i] = Dot(new ReadOnlySpan<double>(a, aOffset + r * aStride, length), new ReadOnlySpan<double>(b, bOffset + i * bStride, length));
    }

    // A [lines, width] panel at offset with the given stride must lie inside an array of length values.
    private static void CheckPanel(int length, int offset, int stride, int lines, int width, string name)
    {
        if (offset < 0 || width < 0 || (lines > 1 && stride < width) || (long)offset + (long)(lines - 1) * stride + width > length)
            throw new ArgumentException($"a [{lines}, {width}] panel at {offset} with stride {stride} does not fit {length} values", name);
    }
}
