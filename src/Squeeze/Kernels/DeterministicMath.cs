using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Squeeze.Kernels;

/// <summary>
/// The floating-point functions of the deterministic runtime mode (<c>RuntimeOptions.Deterministic</c>): built only
/// from IEEE-754 additions, multiplications, divisions and exact bit manipulations, never from the C runtime's
/// <c>exp</c>/<c>cos</c>/<c>pow</c> (which may differ between machines), and with every reduction in one fixed order
/// that does not depend on the vector width. Each vector version computes, element for element, the same operations in
/// the same order as its scalar version, so the two give the same bits; the vector one runs when the kernels' level
/// (<see cref="VecDot.Best"/>, capped by <c>SQUEEZE_SIMD</c>) is AVX2 or above.
/// </summary>
public static unsafe class DeterministicMath
{
    internal static bool UseVector { get; } = VecDot.Best >= SimdLevel.Avx2 && Vector256.IsHardwareAccelerated;

    /// <summary>The dot products hold their sixteen partial sums in one 512-bit register (lane j = sum j) instead of two
    /// 256-bit ones: the same fmas on the same sums in the same order, so the same bits, with half the instructions.</summary>
    internal static bool UseVector512 { get; } = UseVector && VecDot.Best >= SimdLevel.Avx512 && Vector512.IsHardwareAccelerated;

    // exp(x) = 2^k · e^r with k = round(x·log2 e) and r = x − k·ln 2 (ln 2 split in two so k·Ln2Hi is exact).
    private const float Log2E = 1.44269504f;
    private const float Ln2Hi = 0.693145752f;   // 11 significant bits: k · Ln2Hi is exact for |k| < 2^13
    private const float Ln2Lo = 1.42860677e-6f;
    private const float RoundMagic = 12582912f; // 1.5 · 2^23: (t + m) − m rounds t to the nearest integer
    private const float ExpMin = -87.3f;        // keeps 2^k normal
    private const float ExpMax = 88.3f;

    /// <summary>e^x in f32 (relative error a few ulp; inputs are clamped to [−87.3, 88.3]).</summary>
    public static float Exp(float x)
    {
        x = x < ExpMin ? ExpMin : x > ExpMax ? ExpMax : x;
        float k = x * Log2E + RoundMagic - RoundMagic;
        float r = x - k * Ln2Hi - k * Ln2Lo;
        float p = 1f + r * (1f + r * (0.5f + r * (1f / 6 + r * (1f / 24 + r * (1f / 120 + r * (1f / 720))))));
        return p * BitConverter.Int32BitsToSingle(((int)k + 127) << 23);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Exp(Vector256<float> x)
    {
        x = Vector256.ConditionalSelect(Vector256.LessThan(x, Vector256.Create(ExpMin)), Vector256.Create(ExpMin), x);
        x = Vector256.ConditionalSelect(Vector256.GreaterThan(x, Vector256.Create(ExpMax)), Vector256.Create(ExpMax), x);
        var k = x * Vector256.Create(Log2E) + Vector256.Create(RoundMagic) - Vector256.Create(RoundMagic);
        var r = x - k * Vector256.Create(Ln2Hi) - k * Vector256.Create(Ln2Lo);
        var p = Vector256.Create(1f / 720);
        p = Vector256.Create(1f / 120) + r * p;
        p = Vector256.Create(1f / 24) + r * p;
        p = Vector256.Create(1f / 6) + r * p;
        p = Vector256.Create(0.5f) + r * p;
        p = Vector256.Create(1f) + r * p;
        p = Vector256.Create(1f) + r * p;
        var scale = Vector256.ShiftLeft(Vector256.ConvertToInt32(k) + Vector256.Create(127), 23).AsSingle();
        return p * scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Exp(Vector512<float> x)
    {
        x = Vector512.ConditionalSelect(Vector512.LessThan(x, Vector512.Create(ExpMin)), Vector512.Create(ExpMin), x);
        x = Vector512.ConditionalSelect(Vector512.GreaterThan(x, Vector512.Create(ExpMax)), Vector512.Create(ExpMax), x);
        var k = x * Vector512.Create(Log2E) + Vector512.Create(RoundMagic) - Vector512.Create(RoundMagic);
        var r = x - k * Vector512.Create(Ln2Hi) - k * Vector512.Create(Ln2Lo);
        var p = Vector512.Create(1f / 720);
        p = Vector512.Create(1f / 120) + r * p;
        p = Vector512.Create(1f / 24) + r * p;
        p = Vector512.Create(1f / 6) + r * p;
        p = Vector512.Create(0.5f) + r * p;
        p = Vector512.Create(1f) + r * p;
        p = Vector512.Create(1f) + r * p;
        var scale = Vector512.ShiftLeft(Vector512.ConvertToInt32(k) + Vector512.Create(127), 23).AsSingle();
        return p * scale;
    }

    /// <summary><c>destination[i] = Exp(x[i] − shift)</c>.</summary>
    public static void ExpShifted(ReadOnlySpan<float> x, float shift, Span<float> destination) => ExpShifted(x, shift, destination, UseVector);

    internal static void ExpShifted(ReadOnlySpan<float> x, float shift, Span<float> destination, bool vector)
    {
        if (destination.Length < x.Length)
            throw new ArgumentException("destination is shorter than x", nameof(destination));
        int i = 0;
        if (vector)
        {
            fixed (float* px = x)
            fixed (float* pd = destination)
            {
                if (UseVector512)
                {
                    var s16 = Vector512.Create(shift);
                    for (; i + 16 <= x.Length; i += 16)
                        Exp(Vector512.Load(px + i) - s16).Store(pd + i);
                }
                var s = Vector256.Create(shift);
                for (; i + 8 <= x.Length; i += 8)
                    Exp(Vector256.Load(px + i) - s).Store(pd + i);
            }
        }
        for (; i < x.Length; i++)
            destination[i] = Exp(x[i] - shift);
    }

    /// <summary><c>destination[i] = 1 / (1 + Exp(−x[i]))</c>, the logistic function.</summary>
    public static void Sigmoid(ReadOnlySpan<float> x, Span<float> destination) => Sigmoid(x, destination, UseVector);

    internal static void Sigmoid(ReadOnlySpan<float> x, Span<float> destination, bool vector)
    {
        if (destination.Length < x.Length)
            throw new ArgumentException("destination is shorter than x", nameof(destination));
        int i = 0;
        if (vector)
        {
            fixed (float* px = x)
            fixed (float* pd = destination)
            {
                var one = Vector256.Create(1f);
                for (; i + 8 <= x.Length; i += 8)
                    (one / (one + Exp(-Vector256.Load(px + i)))).Store(pd + i);
            }
        }
        for (; i < x.Length; i++)
            destination[i] = 1f / (1f + Exp(-x[i]));
    }

    /// <summary>Σ x[i] in the fixed order every deterministic reduction uses: eight partial sums, x[i] going to sum i mod 8
    /// in order of i, combined as ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)).</summary>
    public static float Sum(ReadOnlySpan<float> x)
    {
        fixed (float* p = x)
            return UseVector ? SumVector(p, x.Length) : SumScalar(p, x.Length);
    }

    internal static float SumScalar(float* x, int n)
    {
        float* s = stackalloc float[8];
        for (int j = 0; j < 8; j++)
            s[j] = 0;
        for (int i = 0; i < n; i++)
            s[i & 7] += x[i];
        return Tree(s);
    }

    internal static float SumVector(float* x, int n)
    {
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i + 8 <= n; i += 8)
            acc += Vector256.Load(x + i);
        float* s = stackalloc float[8];
        acc.Store(s);
        for (; i < n; i++)
            s[i & 7] += x[i];
        return Tree(s);
    }

    /// <summary>Σ a[i] · b[i] in one fixed order: sixteen partial sums, a[i] · b[i] fused-multiply-added (one rounding,
    /// IEEE fma) into sum i mod 16 in order of i, then s_j + s_(j+8) for j &lt; 8 combined as <see cref="Sum"/> combines
    /// its eight. The vector version holds sums 0-7 and 8-15 in two registers; the scalar one uses
    /// <see cref="MathF.FusedMultiplyAdd"/>, which is correctly rounded on every machine (in hardware or in software).</summary>
    public static float Dot(float* a, float* b, int n) => UseVector512 ? DotVector512(a, b, n) : UseVector ? DotVector(a, b, n) : DotScalar(a, b, n);

    internal static float DotScalar(float* a, float* b, int n)
    {
        float* s = stackalloc float[16];
        for (int j = 0; j < 16; j++)
            s[j] = 0;
        for (int i = 0; i < n; i++)
            s[i & 15] = MathF.FusedMultiplyAdd(a[i], b[i], s[i & 15]);
        for (int j = 0; j < 8; j++)
            s[j] += s[j + 8];
        return Tree(s);
    }

    internal static float DotVector(float* a, float* b, int n)
    {
        Vector256<float> s0 = default, s1 = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            s0 = Fma.MultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
            s1 = Fma.MultiplyAdd(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), s1);
        }
        return Finish(s0, s1, a, b, i, n);
    }

    /// <summary><c>y[p] = Dot(a, b + p · bStride, n)</c> for p &lt; <paramref name="count"/>: eight or four rows at a
    /// time where the vector kernels run, bit for bit the single dots.</summary>
    public static void DotRows(float* a, float* b, long bStride, int count, int n, float* y)
    {
        int p = 0;
        if (UseVector512)
        {
            for (; p + 8 <= count; p += 8)
                Dot8Vector512(a, b + p * bStride, bStride, n, y + p, 1);
            for (; p + 4 <= count; p += 4)
                Dot4Vector512(a, b + p * bStride, bStride, n, y + p, 1);
        }
        else if (UseVector)
        {
            for (; p + 4 <= count; p += 4)
                Dot4Vector(a, b + p * bStride, bStride, n, y + p, 1);
        }
        for (; p < count; p++)
            y[p] = Dot(a, b + p * bStride, n);
    }

    /// <summary>Four rows of <paramref name="b"/> (one every <paramref name="bStride"/> floats) against one row
    /// <paramref name="a"/>: <c>y[t · yStride] = Dot(a, b + t · bStride, n)</c>, bit for bit.</summary>
    internal static void Dot4Vector(float* a, float* b, long bStride, int n, float* y, long yStride)
    {
        Vector256<float> s00 = default, s01 = default, s10 = default, s11 = default, s20 = default, s21 = default, s30 = default, s31 = default;
        float* b0 = b, b1 = b + bStride, b2 = b + 2 * bStride, b3 = b + 3 * bStride;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var w0 = Vector256.Load(a + i);
            var w1 = Vector256.Load(a + i + 8);
            s00 = Fma.MultiplyAdd(w0, Vector256.Load(b0 + i), s00);
            s01 = Fma.MultiplyAdd(w1, Vector256.Load(b0 + i + 8), s01);
            s10 = Fma.MultiplyAdd(w0, Vector256.Load(b1 + i), s10);
            s11 = Fma.MultiplyAdd(w1, Vector256.Load(b1 + i + 8), s11);
            s20 = Fma.MultiplyAdd(w0, Vector256.Load(b2 + i), s20);
            s21 = Fma.MultiplyAdd(w1, Vector256.Load(b2 + i + 8), s21);
            s30 = Fma.MultiplyAdd(w0, Vector256.Load(b3 + i), s30);
            s31 = Fma.MultiplyAdd(w1, Vector256.Load(b3 + i + 8), s31);
        }
        if (i == n)
        {
            y[0] = Tree(s00 + s01);
            y[yStride] = Tree(s10 + s11);
            y[2 * yStride] = Tree(s20 + s21);
            y[3 * yStride] = Tree(s30 + s31);
        }
        else
        {
            Finish4(s00, s01, s10, s11, s20, s21, s30, s31, a, b0, bStride, i, n, y, yStride);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Finish4(Vector256<float> s00, Vector256<float> s01, Vector256<float> s10, Vector256<float> s11, Vector256<float> s20, Vector256<float> s21,
        Vector256<float> s30, Vector256<float> s31, float* a, float* b, long bStride, int i, int n, float* y, long yStride)
    {
        y[0] = Finish(s00, s01, a, b, i, n);
        y[yStride] = Finish(s10, s11, a, b + bStride, i, n);
        y[2 * yStride] = Finish(s20, s21, a, b + 2 * bStride, i, n);
        y[3 * yStride] = Finish(s30, s31, a, b + 3 * bStride, i, n);
    }

    /// <summary><see cref="DotVector"/> with the sixteen sums in one 512-bit register.</summary>
    internal static float DotVector512(float* a, float* b, int n)
    {
        Vector512<float> s = default;
        int i = 0;
        for (; i + 16 <= n; i += 16)
            s = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s);
        return Finish(s.GetLower(), s.GetUpper(), a, b, i, n);
    }

    /// <summary><see cref="Dot4Vector"/> with each token's sixteen sums in one 512-bit register.</summary>
    internal static void Dot4Vector512(float* a, float* b, long bStride, int n, float* y, long yStride)
    {
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        float* b0 = b, b1 = b + bStride, b2 = b + 2 * bStride, b3 = b + 3 * bStride;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var w = Vector512.Load(a + i);
            s0 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b0 + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b1 + i), s1);
            s2 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b2 + i), s2);
            s3 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b3 + i), s3);
        }
        if (i == n)
        {
            y[0] = Tree(s0.GetLower() + s0.GetUpper());
            y[yStride] = Tree(s1.GetLower() + s1.GetUpper());
            y[2 * yStride] = Tree(s2.GetLower() + s2.GetUpper());
            y[3 * yStride] = Tree(s3.GetLower() + s3.GetUpper());
        }
        else
        {
            Finish4(s0.GetLower(), s0.GetUpper(), s1.GetLower(), s1.GetUpper(), s2.GetLower(), s2.GetUpper(), s3.GetLower(), s3.GetUpper(), a, b0, bStride, i, n, y, yStride);
        }
    }

    /// <summary>Eight rows of <paramref name="b"/> (one every <paramref name="bStride"/> floats) against one row
    /// <paramref name="a"/>: <c>y[t · yStride] = Dot(a, b + t · bStride, n)</c>, bit for bit. Eight independent
    /// accumulators hide the fma latency that four leave exposed.</summary>
    internal static void Dot8Vector512(float* a, float* b, long bStride, int n, float* y, long yStride)
    {
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
        float* b4 = b + 4 * bStride;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var w = Vector512.Load(a + i);
            s0 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b + i), s0);
            s1 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b + bStride + i), s1);
            s2 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b + 2 * bStride + i), s2);
            s3 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b + 3 * bStride + i), s3);
            s4 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b4 + i), s4);
            s5 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b4 + bStride + i), s5);
            s6 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b4 + 2 * bStride + i), s6);
            s7 = Avx512F.FusedMultiplyAdd(w, Vector512.Load(b4 + 3 * bStride + i), s7);
        }
        if (i == n)
        {
            y[0] = Tree(s0.GetLower() + s0.GetUpper());
            y[yStride] = Tree(s1.GetLower() + s1.GetUpper());
            y[2 * yStride] = Tree(s2.GetLower() + s2.GetUpper());
            y[3 * yStride] = Tree(s3.GetLower() + s3.GetUpper());
            y[4 * yStride] = Tree(s4.GetLower() + s4.GetUpper());
            y[5 * yStride] = Tree(s5.GetLower() + s5.GetUpper());
            y[6 * yStride] = Tree(s6.GetLower() + s6.GetUpper());
            y[7 * yStride] = Tree(s7.GetLower() + s7.GetUpper());
        }
        else
        {
            Finish4(s0.GetLower(), s0.GetUpper(), s1.GetLower(), s1.GetUpper(), s2.GetLower(), s2.GetUpper(), s3.GetLower(), s3.GetUpper(), a, b, bStride, i, n, y, yStride);
            Finish4(s4.GetLower(), s4.GetUpper(), s5.GetLower(), s5.GetUpper(), s6.GetLower(), s6.GetUpper(), s7.GetLower(), s7.GetUpper(), a, b4, bStride, i, n, y + 4 * yStride, yStride);
        }
    }

    /// <summary>Adds elements [i, n) to the sixteen sums held in two registers and reduces them in the fixed order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(Vector256<float> low, Vector256<float> high, float* a, float* b, int i, int n)
    {
        if (i + 8 <= n)
        {
            // elements i … i + 7 (i a multiple of 16) belong to sums 0-7: one vector step does exactly their eight fmas
            low = Fma.MultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), low);
            i += 8;
        }
        return i < n ? FinishScalar(low, high, a, b, i, n) : Tree(low + high);
    }

    /// <summary>The last n − i (&lt; 8) elements one by one (kept out of line: a stackalloc stops inlining).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static float FinishScalar(Vector256<float> low, Vector256<float> high, float* a, float* b, int i, int n)
    {
        float* s = stackalloc float[16];
        low.Store(s);
        high.Store(s + 8);
        for (; i < n; i++)
            s[i & 15] = MathF.FusedMultiplyAdd(a[i], b[i], s[i & 15]);
        return Tree(Vector256.Load(s) + Vector256.Load(s + 8));
    }

    /// <summary>((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)) of the eight lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Tree(Vector256<float> s)
    {
        Vector128<float> b = s.GetLower() + s.GetUpper();                       // s_j + s_(j+4)
        Vector128<float> c = b + Vector128.Shuffle(b, Vector128.Create(2, 3, 0, 1)); // (b0 + b2, b1 + b3, …)
        return c.ToScalar() + c.GetElement(1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Tree(float* s) => ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));

    // ---- double-precision functions for the RoPE tables ----

    private const double Ln2 = 0.6931471805599453;
    private const double Ln2HiD = 0.6931471803691238;   // upper bits of ln 2: k · Ln2HiD is exact for |k| < 2^20
    private const double Ln2LoD = 1.9082149292705877e-10;
    private const double HalfPiHi = 1.5707963267341256; // π/2 split: n · HalfPiHi is exact for n < 2^20
    private const double HalfPiLo = 6.077100506506192e-11;

    /// <summary>Natural logarithm of a positive finite <paramref name="x"/> (series of atanh on the mantissa).</summary>
    public static double Log(double x)
    {
        if (!(x > 0) || double.IsInfinity(x))
            throw new ArgumentOutOfRangeException(nameof(x), x, "the logarithm needs a positive finite number");
        long bits = BitConverter.DoubleToInt64Bits(x);
        int exponent = (int)((bits >> 52) & 0x7FF);
        if (exponent == 0)
            return Log(x * 4503599627370496.0) - 52 * Ln2; // subnormal: scale by 2^52 first
        double m = BitConverter.Int64BitsToDouble((bits & 0x000F_FFFF_FFFF_FFFFL) | 0x3FF0_0000_0000_0000L); // [1, 2)
        int e = exponent - 1023;
        if (m > 1.4142135623730951)
        {
            m *= 0.5;
            e++;
        }
        double s = (m - 1) / (m + 1), s2 = s * s, term = s, sum = 0;
        for (int k = 1; k < 40; k += 2)
        {
            sum += term / k;
            term *= s2;
        }
        return 2 * sum + e * Ln2;
    }

    /// <summary>e^x in f64 for |x| &lt; 700.</summary>
    public static double ExpDouble(double x)
    {
        if (!(Math.Abs(x) < 700))
            throw new ArgumentOutOfRangeException(nameof(x), x, "outside the range of this exponential");
        double k = Math.Round(x / Ln2);
        double r = x - k * Ln2HiD - k * Ln2LoD;
        double sum = 1, term = 1;
        for (int i = 1; i < 20; i++)
        {
            term *= r / i;
            sum += term;
        }
        return sum * BitConverter.Int64BitsToDouble((long)(k + 1023) << 52);
    }

    /// <summary><paramref name="x"/>^<paramref name="y"/> for positive <paramref name="x"/>.</summary>
    public static double Pow(double x, double y) => ExpDouble(y * Log(x));

    /// <summary>cos and sin of <paramref name="angle"/> (|angle| &lt; 10^5; reduced by π/2, then Taylor series).</summary>
    public static (double Cos, double Sin) CosSin(double angle)
    {
        if (!(Math.Abs(angle) < 1e5))
            throw new ArgumentOutOfRangeException(nameof(angle), angle, "outside the range of this cosine");
        double n = Math.Round(angle / (HalfPiHi + HalfPiLo));
        double r = angle - n * HalfPiHi - n * HalfPiLo; // |r| ≤ π/4
        double r2 = r * r;
        double sin = 0, cos = 0, sinTerm = r, cosTerm = 1;
        for (int i = 1; i < 24; i += 2)
        {
            sin += sinTerm;
            cos += cosTerm;
            sinTerm *= -r2 / ((i + 1) * (i + 2));
            cosTerm *= -r2 / (i * (i + 1));
        }
        return ((long)n & 3) switch
        {
            0 => (cos, sin),
            1 => (-sin, cos),
            2 => (-cos, -sin),
            _ => (sin, -cos),
        };
    }
}
