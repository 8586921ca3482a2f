using Squeeze.Quantization;
using Squeeze.Tensors;
using Xunit.Abstractions;

namespace Squeeze.Tests.Quantization;

/// <summary>Quantize → Dequantize.Row round trips on random rows, determinism, thread-count independence, input checks
/// and the importance-weighted paths.</summary>
public class QuantizeRoundTripTests(ITestOutputHelper output)
{
    // Named limits: relative RMS error sqrt(Σ(x - x̂)² / Σx²) on Gaussian rows of at least 1024 values; Student-t(3)
    // rows get twice as much (their outliers stretch the block scales), samples under 1024 values 1.5 times as much
    // (a single block is noisy).
    public static TheoryData<GgmlType, double> Limits() => new()
    {
        { GgmlType.F16, 3.5e-4 },
        { GgmlType.BF16, 3e-3 },
        { GgmlType.Q8_0, 0.0065 },
        { GgmlType.Q6_K, 0.02 },
        { GgmlType.Q5_1, 0.045 },
        { GgmlType.Q5_0, 0.05 },
        { GgmlType.Q5_K, 0.038 },
        { GgmlType.Q4_1, 0.09 },
        { GgmlType.Q4_0, 0.1 },
        { GgmlType.Q4_K, 0.077 },
        { GgmlType.IQ4_NL, 0.085 },
        { GgmlType.Q3_K, 0.16 },
        { GgmlType.Q2_K, 0.3 },
    };

    private static float[] Gaussian(Random random, int count, double scale = 1)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
            x[i] = (float)(scale * Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        return x;
    }

    // Student-t with 3 degrees of freedom: z / sqrt(chi2_3 / 3).
    private static float[] StudentT(Random random, int count, double scale = 1)
    {
        var z = Gaussian(random, count, 1);
        var c = Gaussian(random, 3 * count, 1);
        var x = new float[count];
        for (int i = 0; i < count; i++)
        {
            double chi2 = c[3 * i] * c[3 * i] + c[3 * i + 1] * c[3 * i + 1] + c[3 * i + 2] * c[3 * i + 2];
            x[i] = (float)(scale * z[i] / Math.Sqrt(chi2 / 3 + 1e-12));
        }
        return x;
    }

    private static int[] Lengths(GgmlType type) => GgmlTypes.BlockSize(type) switch
    {
        1 => [1, 2, 3, 5, 7, 17, 31, 32, 33, 256, 288, 768],
        32 => [32, 64, 96, 256, 288, 768],
        _ => [256, 512, 768, 1024],
    };

    private static (byte[] Bytes, float[] Back) RoundTrip(GgmlType type, float[] x, int columns, float[]? importance = null, int maxThreads = 0)
    {
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        int rows = x.Length / columns;
        var bytes = new byte[rows * rowBytes];
        Quantize.Rows(type, x, columns, importance, bytes, maxThreads);
        var back = new float[x.Length];
        for (int r = 0; r < rows; r++)
            Dequantize.Row(type, bytes.AsSpan(r * rowBytes, rowBytes), back.AsSpan(r * columns, columns));
        return (bytes, back);
    }

    private static double RelativeRms(float[] x, float[] back)
    {
        double e = Quantize.WeightedSquaredError(x, back, default);
        double s = x.Sum(v => (double)v * v);
        return Math.Sqrt(e / s);
    }

    [Theory]
    [MemberData(nameof(Limits))]
    public void Round_trip_error_is_within_the_named_limit(GgmlType type, double limit)
    {
        var random = new Random(42);
        foreach (int columns in Lengths(type))
        {
            foreach (int rows in new[] { 1, 3, 7 })
            {
                foreach (bool heavy in new[] { false, true })
                {
                    float[] x = heavy ? StudentT(random, rows * columns, 0.02) : Gaussian(random, rows * columns, 0.02);
                    var (_, back) = RoundTrip(type, x, columns);
                    Assert.All(back, v => Assert.True(float.IsFinite(v)));
                    double rel = RelativeRms(x, back);
                    double bound = (heavy ? 2 * limit : limit) * (rows * columns < 1024 ? 1.5 : 1.0);
                    if (rows == 7)
                        output.WriteLine($"{type} {rows}x{columns} {(heavy ? "student-t" : "gaussian ")}: relative rms {rel:F5} (limit {bound:F5})");
                    Assert.True(rel <= bound, $"{type} {rows}x{columns} {(heavy ? "student-t" : "gaussian")}: relative rms {rel} > {bound}");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Limits))]
    public void Same_input_gives_the_same_bytes_whatever_the_thread_count(GgmlType type, double limit)
    {
        _ = limit;
        int columns = GgmlTypes.BlockSize(type) == 256 ? 512 : 96;
        float[] x = StudentT(new Random(7), 33 * columns, 0.05);
        var (one, _) = RoundTrip(type, x, columns, null, 1);
        var (two, _) = RoundTrip(type, x, columns, null, 2);
        var (many, _) = RoundTrip(type, x, columns, null, 0);
        var (again, _) = RoundTrip(type, x, columns, null, 3);
        Assert.Equal(one, two);
        Assert.Equal(one, many);
        Assert.Equal(one, again);
        // Rows is Row applied to each row.
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        var single = new byte[rowBytes];
        Quantize.Row(type, x.AsSpan(5 * columns, columns), default, single);
        Assert.Equal(one.AsSpan(5 * rowBytes, rowBytes).ToArray(), single);
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.Q3_K)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    [InlineData(GgmlType.IQ4_NL)]
    [InlineData(GgmlType.F16)]
    public void Zero_rows_decode_to_zero(GgmlType type)
    {
        var (_, back) = RoundTrip(type, new float[2 * 256], 256);
        Assert.All(back, v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(GgmlType.Q4_0, float.NaN)]
    [InlineData(GgmlType.Q4_K, float.PositiveInfinity)]
    [InlineData(GgmlType.IQ4_NL, float.NegativeInfinity)]
    [InlineData(GgmlType.F16, float.NaN)]
    [InlineData(GgmlType.Q8_0, float.NaN)]
    public void Non_finite_input_is_rejected_naming_the_row(GgmlType type, float bad)
    {
        const int columns = 256;
        float[] x = Gaussian(new Random(3), 5 * columns);
        x[3 * columns + 17] = bad;
        var bytes = new byte[5 * GgmlTypes.RowBytes(type, columns)];
        var e = Assert.Throws<ArgumentException>(() => Quantize.Rows(type, x, columns, default, bytes, 1));
        Assert.Contains("row 3", e.Message);
        Assert.Contains("column 17", e.Message);
        var row = new byte[GgmlTypes.RowBytes(type, columns)];
        e = Assert.Throws<ArgumentException>(() => Quantize.Row(type, x.AsSpan(3 * columns, columns), default, row));
        Assert.Contains("non-finite", e.Message);
        Assert.All(row, b => Assert.Equal(0, b)); // nothing written
    }

    [Theory]
    [InlineData(GgmlType.F16, 70000f)]
    [InlineData(GgmlType.Q8_0, 1e9f)]
    [InlineData(GgmlType.Q4_K, 1e9f)]
    [InlineData(GgmlType.IQ4_NL, 1e9f)]
    public void Values_too_large_for_half_precision_scales_never_decode_to_nan(GgmlType type, float huge)
    {
        // F16 and Q8_0 cannot hold them and say so; the searched types may instead find a finite (saturated)
        // encoding. Either way nothing non-finite comes back.
        float[] x = Gaussian(new Random(4), 256);
        x[200] = huge;
        var row = new byte[GgmlTypes.RowBytes(type, 256)];
        if (type is GgmlType.F16 or GgmlType.Q8_0)
        {
            var e = Assert.Throws<ArgumentException>(() => Quantize.Row(type, x, default, row));
            Assert.Contains("too large", e.Message);
        }
        else
        {
            Quantize.Row(type, x, default, row);
            var decoded = new float[256];
            Dequantize.Row(type, row, decoded);
            Assert.All(decoded, v => Assert.True(float.IsFinite(v)));
        }
        // Large but representable values are fine.
        x[200] = 1e5f;
        if (type != GgmlType.F16)
        {
            var (_, back) = RoundTrip(type, x, 256);
            Assert.All(back, v => Assert.True(float.IsFinite(v)));
        }
    }

    [Fact]
    public void Bad_lengths_and_importance_are_rejected()
    {
        var x = new float[256];
        Assert.Throws<ArgumentException>(() => Quantize.Row(GgmlType.Q4_K, x.AsSpan(0, 250), default, new byte[144]));
        Assert.Throws<ArgumentException>(() => Quantize.Row(GgmlType.Q4_K, x, default, new byte[143]));
        Assert.Throws<ArgumentException>(() => Quantize.Row(GgmlType.Q4_K, x, new float[255], new byte[144]));
        var w = Enumerable.Repeat(1f, 256).ToArray();
        w[9] = -1;
        Assert.Throws<ArgumentException>(() => Quantize.Row(GgmlType.Q4_K, x, w, new byte[144]));
        Assert.Throws<NotSupportedException>(() => Quantize.Row(GgmlType.Q8_K, x, default, new byte[292]));
    }

    // With importance, the weighted error Σ w (x - x̂)² is never above llama.cpp's imatrix algorithm on its own
    // (the same start without refinement), and importance lowers the weighted error compared with ignoring it.
    [Theory]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.Q3_K)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    [InlineData(GgmlType.IQ4_NL)]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_1)]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.Q5_1)]
    public void Importance_weighted_quantization_lowers_the_weighted_error(GgmlType type)
    {
        const int columns = 512, rows = 16;
        var random = new Random(11);
        float[] x = StudentT(random, rows * columns, 0.03);
        // A skewed importance, as an imatrix: most columns ~1, a few 30-100x.
        var importance = new float[columns];
        for (int c = 0; c < columns; c++)
            importance[c] = (float)(random.NextDouble() < 0.05 ? 30 + 70 * random.NextDouble() : 0.5 + random.NextDouble());
        var (_, withImportance) = RoundTrip(type, x, columns, importance);
        var (_, without) = RoundTrip(type, x, columns);
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        var llama = new float[x.Length];
        var buffer = new byte[rowBytes];
        double eWith = 0, eWithout = 0, eLlama = 0;
        for (int r = 0; r < rows; r++)
        {
            var xr = x.AsSpan(r * columns, columns);
            Quantize.Row(type, xr, importance, buffer, ScaleSearch.LlamaCpp);
            Dequantize.Row(type, buffer, llama.AsSpan(r * columns, columns));
            double a = Quantize.WeightedSquaredError(xr, withImportance.AsSpan(r * columns, columns), importance);
            double b = Quantize.WeightedSquaredError(xr, llama.AsSpan(r * columns, columns), importance);
            if (type is not (GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1))
                Assert.True(a <= b * (1 + 1e-9), $"row {r}: {a} > llama.cpp's {b}");
            eWith += a;
            eLlama += b;
            eWithout += Quantize.WeightedSquaredError(xr, without.AsSpan(r * columns, columns), importance);
        }
        output.WriteLine($"{type}: weighted error with importance {eWith:G6}, llama.cpp imatrix algorithm {eLlama:G6}, ignoring importance {eWithout:G6}");
        Assert.True(eWith < eWithout, $"importance did not help: {eWith} >= {eWithout}");
    }

    [Fact]
    public void Legacy_types_with_importance_follow_llama_cpp_imatrix_path()
    {
        // Q8_0 ignores importance (as llama.cpp); the 4/5-bit legacy types change their output when given one.
        float[] x = StudentT(new Random(5), 256, 0.03);
        var w = Enumerable.Range(0, 256).Select(i => (float)(1 + i % 7)).ToArray();
        foreach (var type in new[] { GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0 })
        {
            var plain = new byte[GgmlTypes.RowBytes(type, 256)];
            var weighted = new byte[plain.Length];
            var hook = new byte[plain.Length];
            Quantize.Row(type, x, default, plain);
            Quantize.Row(type, x, w, weighted);
            Quantize.Row(type, x, w, hook, ScaleSearch.LlamaCpp);
            Assert.Equal(hook, weighted);
            if (type == GgmlType.Q8_0)
                Assert.Equal(plain, weighted);
            else
                Assert.NotEqual(plain, weighted);
        }
    }
}
