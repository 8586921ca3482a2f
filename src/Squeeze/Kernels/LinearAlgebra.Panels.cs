using System.Buffers;
using System.Runtime.CompilerServices;
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

    // Columns of x read by all the row groups before the next (a multiple of 16): 64 columns of 256 rows of x are 128 KiB.
    private const int PanelColumns = 64;

    // DotRows' blocks: 32 rows of b by 512 of the length are 128 KiB.
    private const int DotBlockRows = 32;
    private const int DotBlockLength = 512;

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
        // Per group of four rows, the k that change some row of it.
        int groups = (rows + GroupRows - 1) / GroupRows;
        Span<int> used = groups * count <= 8192 ? stackalloc int[groups * count] : new int[groups * count];
        Span<int> usedCounts = groups <= 256 ? stackalloc int[groups] : new int[groups];
        for (int g = 0; g < groups; g++)
        {
            int r0 = g * GroupRows, group = Math.Min(GroupRows, rows - r0), usedCount = 0;
            for (int k = 0; k < count; k++)
            {
                for (int r = r0; r < r0 + group; r++)
                {
                    if (c[cOffset + r * cStride + k] != 0)
                    {
                        used[g * count + usedCount++] = k;
                        break;
                    }
                }
            }
            usedCounts[g] = usedCount;
        }
        // Whole groups of four, a panel of columns at a time for all groups: the panel's rows of x that some group uses are
        // first copied side by side (rows of x a power of two apart would share cache sets), then read from cache by every
        // group. Then the columns left (all of them without vectors) and the rows of a short last group, as Axpy's
        // scalar tail.
        int width = Vector512.IsHardwareAccelerated ? 16 : Vector256.IsHardwareAccelerated ? 8 : 0;
        int vectorEnd = width == 0 ? 0 : length - length % width;
        int fullGroups = rows / GroupRows;
        if (vectorEnd > 0 && fullGroups > 0)
        {
            var packed = ArrayPool<double>.Shared.Rent(count * PanelColumns); // [count, PanelColumns]
            Span<bool> needed = count <= 1024 ? stackalloc bool[count] : new bool[count];
            needed.Clear();
            for (int g = 0; g < fullGroups; g++)
            {
                foreach (int k in used.Slice(g * count, usedCounts[g]))
                    needed[k] = true;
            }
            for (int j0 = 0; j0 < vectorEnd; j0 += PanelColumns)
            {
                int j1 = Math.Min(j0 + PanelColumns, vectorEnd);
                for (int k = 0; k < count; k++)
                {
                    if (needed[k])
                        Array.Copy(x, xOffset + k * xStride + j0, packed, k * PanelColumns, j1 - j0);
                }
                for (int g = 0; g < fullGroups; g++)
                {
                    if (usedCounts[g] == 0)
                        continue;
                    var usedK = used.Slice(g * count, usedCounts[g]);
                    int cAt = cOffset + g * GroupRows * cStride, yAt = yOffset + g * GroupRows * yStride + j0;
                    if (width == 16)
                        SubtractProducts512(c, cAt, cStride, packed, PanelColumns, usedK, j1 - j0, y, yAt, yStride);
                    else
                        SubtractProducts256(c, cAt, cStride, packed, PanelColumns, usedK, j1 - j0, y, yAt, yStride);
                }
            }
            ArrayPool<double>.Shared.Return(packed);
        }
        for (int g = 0; g < groups; g++)
        {
            int r0 = g * GroupRows, group = Math.Min(GroupRows, rows - r0), from = g < fullGroups ? vectorEnd : 0;
            for (int r = r0; r < r0 + group; r++)
            {
                var yr = y.AsSpan(yOffset + r * yStride, length);
                for (int u = 0; u < usedCounts[g]; u++)
                {
                    int k = used[g * count + u];
                    double alpha = -c[cOffset + r * cStride + k];
                    int xk = xOffset + k * xStride;
                    for (int j = from; j < length; j++)
                        yr[j] += alpha * x[xk + j];
                }
            }
        }
    }

    // Four rows, a panel of columns (a multiple of 16) 16 at a time; x[k, j] at k·xStride + j. The offsets were checked by
    // SubtractProducts.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    private static void SubtractProducts512(double[] c, int cOffset, int cStride, double[] x, int xStride,
        ReadOnlySpan<int> used, int columns, double[] y, int yOffset, int yStride)
    {
        ref double yr = ref MemoryMarshal.GetArrayDataReference(y);
        ref double xr = ref MemoryMarshal.GetArrayDataReference(x);
        for (int j = 0; j < columns; j += 16)
        {
            nuint y0 = (nuint)(yOffset + j), y1 = y0 + (nuint)yStride, y2 = y1 + (nuint)yStride, y3 = y2 + (nuint)yStride;
            var a0 = Vector512.LoadUnsafe(ref yr, y0); var b0 = Vector512.LoadUnsafe(ref yr, y0 + 8);
            var a1 = Vector512.LoadUnsafe(ref yr, y1); var b1 = Vector512.LoadUnsafe(ref yr, y1 + 8);
            var a2 = Vector512.LoadUnsafe(ref yr, y2); var b2 = Vector512.LoadUnsafe(ref yr, y2 + 8);
            var a3 = Vector512.LoadUnsafe(ref yr, y3); var b3 = Vector512.LoadUnsafe(ref yr, y3 + 8);
            foreach (int k in used)
            {
                nuint xk = (nuint)(k * xStride + j);
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
    }

    // Four rows, a panel of columns (a multiple of 8) 8 at a time; x[k, j] at k·xStride + j. The offsets were checked by
    // SubtractProducts.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    private static void SubtractProducts256(double[] c, int cOffset, int cStride, double[] x, int xStride,
        ReadOnlySpan<int> used, int columns, double[] y, int yOffset, int yStride)
    {
        ref double yr = ref MemoryMarshal.GetArrayDataReference(y);
        ref double xr = ref MemoryMarshal.GetArrayDataReference(x);
        for (int j = 0; j < columns; j += 8)
        {
            nuint y0 = (nuint)(yOffset + j), y1 = y0 + (nuint)yStride, y2 = y1 + (nuint)yStride, y3 = y2 + (nuint)yStride;
            var a0 = Vector256.LoadUnsafe(ref yr, y0); var b0 = Vector256.LoadUnsafe(ref yr, y0 + 4);
            var a1 = Vector256.LoadUnsafe(ref yr, y1); var b1 = Vector256.LoadUnsafe(ref yr, y1 + 4);
            var a2 = Vector256.LoadUnsafe(ref yr, y2); var b2 = Vector256.LoadUnsafe(ref yr, y2 + 4);
            var a3 = Vector256.LoadUnsafe(ref yr, y3); var b3 = Vector256.LoadUnsafe(ref yr, y3 + 4);
            foreach (int k in used)
            {
                nuint xk = (nuint)(k * xStride + j);
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
        int fullRows = Vector256.IsHardwareAccelerated && length >= 8 ? rows / GroupRows * GroupRows : 0;
        if (fullRows > 0)
        {
            // Blocks of DotBlockRows rows of b and DotBlockLength of the length: the lane sums of a block are kept between the
            // pieces of the length (the same additions in the same order as one pass), so a and b are read from cache.
            int vectorLength = length - length % 4;
            var acc = new Vector256<double>[fullRows * DotBlockRows]; // [row, row of b in the block]
            for (int i0 = 0; i0 < count; i0 += DotBlockRows)
            {
                int i1 = Math.Min(i0 + DotBlockRows, count), pairs = i0 + (i1 - i0) / 2 * 2;
                Array.Clear(acc);
                for (int p0 = 0; p0 < vectorLength; p0 += DotBlockLength)
                {
                    int p1 = Math.Min(p0 + DotBlockLength, vectorLength);
                    for (int i = i0; i < pairs; i += 2)
                    {
                        for (int r0 = 0; r0 < fullRows; r0 += GroupRows)
                            DotRows4x2(a, aOffset + r0 * aStride, aStride, b, bOffset + i * bStride, p0, p1, bStride, acc, r0 * DotBlockRows + i - i0);
                    }
                }
                for (int r = 0; r < fullRows; r++)
                {
                    for (int i = i0; i < pairs; i++)
                        d[dOffset + r * dStride + i] = Finish(acc[r * DotBlockRows + i - i0], a, aOffset + r * aStride, b, bOffset + i * bStride, vectorLength, length);
                    for (int i = pairs; i < i1; i++)
                        d[dOffset + r * dStride + i] = Dot(new ReadOnlySpan<double>(a, aOffset + r * aStride, length), new ReadOnlySpan<double>(b, bOffset + i * bStride, length));
                }
            }
        }
        for (int r = fullRows; r < rows; r++)
        {
            var ar = new ReadOnlySpan<double>(a, aOffset + r * aStride, length);
            for (int i = 0; i < count; i++)
                d[dOffset + r * dStride + i] = Dot(ar, new ReadOnlySpan<double>(b, bOffset + i * bStride, length));
        }
    }

    // Four rows of a against two rows of b over [p0, p1): the eight lane sums at acc[at + r·DotBlockRows + i] go on.
    // The offsets were checked by DotRows.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot from the first call: no unoptimized tier
    private static void DotRows4x2(double[] a, int aOffset, int aStride, double[] b, int bOffset, int p0, int p1, int bStride, Vector256<double>[] acc, int at)
    {
        ref double ar = ref MemoryMarshal.GetArrayDataReference(a);
        ref double br = ref MemoryMarshal.GetArrayDataReference(b);
        const int S = DotBlockRows;
        var s00 = acc[at]; var s01 = acc[at + 1];
        var s10 = acc[at + S]; var s11 = acc[at + S + 1];
        var s20 = acc[at + 2 * S]; var s21 = acc[at + 2 * S + 1];
        var s30 = acc[at + 3 * S]; var s31 = acc[at + 3 * S + 1];
        int a0 = aOffset, a1 = a0 + aStride, a2 = a1 + aStride, a3 = a2 + aStride, b0 = bOffset, b1 = bOffset + bStride;
        for (int p = p0; p < p1; p += 4)
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
        acc[at] = s00; acc[at + 1] = s01;
        acc[at + S] = s10; acc[at + S + 1] = s11;
        acc[at + 2 * S] = s20; acc[at + 2 * S + 1] = s21;
        acc[at + 3 * S] = s30; acc[at + 3 * S + 1] = s31;
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
