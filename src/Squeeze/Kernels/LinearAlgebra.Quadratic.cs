using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Squeeze.Kernels;

// The output error of a weight's encoding, e_rᵀ H e_r for every row r of e = w − q under a layer input's H = XᵀX / n: the
// measure every calibrated encoding is judged by, rows × n² multiply-adds, as much as GPTQ itself. QuadraticForms uses H's
// symmetry (e ᵀH e = Σ_j H_jj e_j² + 2 Σ_j e_j Σ_{k<j} H_jk e_k, half the products) and f32 products sixteen lanes wide:
// H's lower triangle is converted to f32 a panel of rows at a time and multiplied with four rows of e against four of H
// (sixteen vector accumulators), over stretches of the row that keep the panel in cache. Every sum has a fixed order —
// lanes by fused multiply-add, each stretch's lanes reduced by a fixed tree, stretches and panels added in double in order —
// so the result is the same bits on any machine and thread count. The definition in double is Gptq.OutputError (one row at a time).
internal static partial class LinearAlgebra
{
    private const int QuadraticPanel = 64;     // rows of H converted to f32 at a time
    private const int QuadraticStretch = 2048; // columns per stretch: a panel's stretch is 512 KB of f32
    private const int QuadraticRows = 4;       // rows of e (and of H) per kernel call

    /// <summary>result[r] = e_rᵀ H e_r with e = <paramref name="w"/> − <paramref name="q"/> (<paramref name="q"/> null:
    /// e = w), w and q [rows, n] row-major f32, <paramref name="h"/> [n, n] symmetric in double (only its lower triangle is
    /// read).</summary>
    public static void QuadraticForms(double[] h, int n, float[] w, float[]? q, int rows, double[] result, int threads)
    {
        ArgumentNullException.ThrowIfNull(h);
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(result);
        if (h.LongLength != (long)n * n || w.LongLength != (long)rows * n || (q is not null && q.LongLength != w.LongLength) || result.Length < rows)
            throw new ArgumentException($"H [{n}, {n}] and e [{rows}, {n}] do not fit arrays of {h.LongLength}, {w.LongLength} and {result.Length} values");
        // Rows of e padded to whole vectors and whole groups of four rows with zeros, which add exact zeros.
        int stride = (n + 15) & ~15, paddedRows = (rows + QuadraticRows - 1) / QuadraticRows * QuadraticRows;
        var e = new float[(long)paddedRows * stride];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++)
                e[(long)r * stride + j] = q is null ? w[(long)r * n + j] : w[(long)r * n + j] - q[(long)r * n + j];
        }
        var panel = new float[(long)QuadraticPanel * stride];
        var below = new double[(long)paddedRows * QuadraticPanel]; // [row, j − j0]: Σ_{k<j} H_jk e_rk
        Array.Clear(result, 0, rows);
        int tiles = paddedRows / QuadraticRows;
        for (int j0 = 0; j0 < n; j0 += QuadraticPanel)
        {
            int j1 = Math.Min(j0 + QuadraticPanel, n), width = j1 - j0, used = (j1 + 15) & ~15;
            Array.Clear(panel);
            for (int j = j0; j < j1; j++)
            {
                for (int k = 0; k < j; k++)
                    panel[(long)(j - j0) * stride + k] = (float)h[(long)j * n + k];
            }
            Array.Clear(below);
            int pj0 = j0, hRows = (width + QuadraticRows - 1) / QuadraticRows * QuadraticRows;
            void Tiles(int from, int to)
            {
                for (int k0 = 0; k0 < used; k0 += QuadraticStretch)
                {
                    int k1 = Math.Min(k0 + QuadraticStretch, used);
                    for (int t = from; t < to; t++)
                    {
                        for (int jt = 0; jt < hRows; jt += QuadraticRows)
                            Products4x4(e, t * QuadraticRows * stride, panel, jt * stride, stride, k0, k1, below, t * QuadraticRows * QuadraticPanel + jt);
                    }
                }
            }
            Split(0, tiles, (long)paddedRows * hRows * used, threads, Tiles);
            for (int r = 0; r < rows; r++)
            {
                double total = result[r];
                for (int j = j0; j < j1; j++)
                {
                    double ej = e[(long)r * stride + j];
                    total += ej * (h[(long)j * n + j] * ej + 2 * below[(long)r * QuadraticPanel + j - pj0]);
                }
                result[r] = total;
            }
        }
    }

    // Four rows of e (at e[eOffset + i·stride]) against four rows of the panel (at p[pOffset + i·stride]) over columns
    // [k0, k1) (whole vectors): the sixteen dot products, each reduced by Sum16, added to below[at + i·QuadraticPanel + c].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Products4x4(float[] e, int eOffset, float[] p, int pOffset, int stride, int k0, int k1, double[] below, int at)
    {
        ref float er = ref MemoryMarshal.GetArrayDataReference(e);
        ref float pr = ref MemoryMarshal.GetArrayDataReference(p);
        Vector512<float> s00 = default, s01 = default, s02 = default, s03 = default;
        Vector512<float> s10 = default, s11 = default, s12 = default, s13 = default;
        Vector512<float> s20 = default, s21 = default, s22 = default, s23 = default;
        Vector512<float> s30 = default, s31 = default, s32 = default, s33 = default;
        nuint e0 = (nuint)eOffset, e1 = e0 + (nuint)stride, e2 = e1 + (nuint)stride, e3 = e2 + (nuint)stride;
        nuint p0 = (nuint)pOffset, p1 = p0 + (nuint)stride, p2 = p1 + (nuint)stride, p3 = p2 + (nuint)stride;
        for (nuint k = (nuint)k0; k < (nuint)k1; k += 16)
        {
            var h0 = Vector512.LoadUnsafe(ref pr, p0 + k);
            var h1 = Vector512.LoadUnsafe(ref pr, p1 + k);
            var h2 = Vector512.LoadUnsafe(ref pr, p2 + k);
            var h3 = Vector512.LoadUnsafe(ref pr, p3 + k);
            var x = Vector512.LoadUnsafe(ref er, e0 + k);
            s00 = Vector512.FusedMultiplyAdd(x, h0, s00); s01 = Vector512.FusedMultiplyAdd(x, h1, s01);
            s02 = Vector512.FusedMultiplyAdd(x, h2, s02); s03 = Vector512.FusedMultiplyAdd(x, h3, s03);
            x = Vector512.LoadUnsafe(ref er, e1 + k);
            s10 = Vector512.FusedMultiplyAdd(x, h0, s10); s11 = Vector512.FusedMultiplyAdd(x, h1, s11);
            s12 = Vector512.FusedMultiplyAdd(x, h2, s12); s13 = Vector512.FusedMultiplyAdd(x, h3, s13);
            x = Vector512.LoadUnsafe(ref er, e2 + k);
            s20 = Vector512.FusedMultiplyAdd(x, h0, s20); s21 = Vector512.FusedMultiplyAdd(x, h1, s21);
            s22 = Vector512.FusedMultiplyAdd(x, h2, s22); s23 = Vector512.FusedMultiplyAdd(x, h3, s23);
            x = Vector512.LoadUnsafe(ref er, e3 + k);
            s30 = Vector512.FusedMultiplyAdd(x, h0, s30); s31 = Vector512.FusedMultiplyAdd(x, h1, s31);
            s32 = Vector512.FusedMultiplyAdd(x, h2, s32); s33 = Vector512.FusedMultiplyAdd(x, h3, s33);
        }
        const int S = QuadraticPanel;
        below[at] += Sum16(s00); below[at + 1] += Sum16(s01); below[at + 2] += Sum16(s02); below[at + 3] += Sum16(s03);
        below[at + S] += Sum16(s10); below[at + S + 1] += Sum16(s11); below[at + S + 2] += Sum16(s12); below[at + S + 3] += Sum16(s13);
        below[at + 2 * S] += Sum16(s20); below[at + 2 * S + 1] += Sum16(s21); below[at + 2 * S + 2] += Sum16(s22); below[at + 2 * S + 3] += Sum16(s23);
        below[at + 3 * S] += Sum16(s30); below[at + 3 * S + 1] += Sum16(s31); below[at + 3 * S + 2] += Sum16(s32); below[at + 3 * S + 3] += Sum16(s33);
    }

    // The sixteen lanes in a fixed tree: halves added lane by lane twice, then (l0 + l1) + (l2 + l3).
    private static float Sum16(Vector512<float> v)
    {
        var half = v.GetLower() + v.GetUpper();
        var quarter = half.GetLower() + half.GetUpper();
        return (quarter.GetElement(0) + quarter.GetElement(1)) + (quarter.GetElement(2) + quarter.GetElement(3));
    }
}
