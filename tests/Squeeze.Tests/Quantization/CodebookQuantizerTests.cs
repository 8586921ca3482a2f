using Squeeze.Calibration;
using Squeeze.Formats.Native;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Quantization;

public sealed class CodebookQuantizerTests
{
    private static float[] GaussianValues(int count, int seed, double scale = 0.05)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < values.Length; i++)
            values[i] = (float)(scale * GptqTests.Gaussian(random));
        return values;
    }

    private static double WeightedError(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> weights)
    {
        double e = 0;
        for (int i = 0; i < a.Length; i++)
            e += (weights.IsEmpty ? 1 : weights[i]) * ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        return e;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(8)]
    public void FitGroup_gives_an_ascending_table_and_the_nearest_code_for_every_value(int bits)
    {
        for (int seed = 0; seed < 10; seed++)
        {
            var values = GaussianValues(64 + seed * 37, seed);
            var table = new ushort[1 << bits];
            var codes = new byte[values.Length];
            CodebookQuantizer.FitGroup(values, default, bits, 50, table, codes);
            var levels = table.Select(HalfConversions.F16ToF32).ToArray();
            for (int k = 1; k < levels.Length; k++)
                Assert.True(levels[k - 1] <= levels[k]);
            for (int i = 0; i < values.Length; i++)
            {
                double chosen = Math.Abs(values[i] - levels[codes[i]]);
                for (int k = 0; k < levels.Length; k++)
                    Assert.True(chosen <= Math.Abs(values[i] - levels[k]), $"value {values[i]}: code {codes[i]} ({levels[codes[i]]}) but {levels[k]} is nearer");
            }
        }
    }

    [Fact]
    public void FitGroup_is_exact_when_a_group_has_no_more_distinct_values_than_codes()
    {
        float[] values = [0.5f, -0.25f, 0.5f, 0.125f, -0.25f, 1f, 0.125f, 0.5f];
        var table = new ushort[4];
        var codes = new byte[values.Length];
        Assert.Throws<ArgumentException>(() => CodebookQuantizer.FitGroup(values, default, 2, 50, table.AsSpan(0, 3), codes));
        CodebookQuantizer.FitGroup(values, default, 2, 50, table, codes);
        for (int i = 0; i < values.Length; i++)
            Assert.Equal(values[i], HalfConversions.F16ToF32(table[codes[i]]));
    }

    [Theory]
    [InlineData(2, 32)]
    [InlineData(3, 96)]
    [InlineData(4, 288)]
    public void Weighted_kmeans_beats_importance_searched_uniform_codes_on_gaussian_weights(int bits, int group)
    {
        // Named limit: k-means' weighted squared error must be at most this fraction of the uniform grid's.
        const double Limit = 0.95; // measured 0.92 at 4 bits per row, lower at 2 and 3 bits
        int rows = 16, columns = 288;
        var weights = GaussianValues(rows * columns, bits);
        var random = new Random(7);
        var importance = new float[columns];
        for (int c = 0; c < columns; c++)
            importance[c] = (float)Math.Exp(2 * GptqTests.Gaussian(random));
        var codebook = CodebookQuantizer.Quantize("w", weights, rows, columns, importance, bits, group).Decode();
        var scheme = new UniformScheme(bits, group, symmetric: false);
        var uniform = new float[weights.Length];
        var rowCodes = new byte[columns];
        var scales = new ushort[columns / group];
        var mins = new ushort[columns / group];
        var packed = new byte[scheme.RowBytes(columns)];
        double codebookError = 0, uniformError = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = weights.AsSpan(r * columns, columns);
            UniformCodec.EncodeRow(row, importance, scheme, search: true, rowCodes, scales, mins);
            UniformCodec.Pack(rowCodes, bits, packed);
            UniformCodec.DecodeRow(packed, scales, mins, scheme, uniform.AsSpan(r * columns, columns));
            codebookError += WeightedError(row, codebook.AsSpan(r * columns, columns), importance);
            uniformError += WeightedError(row, uniform.AsSpan(r * columns, columns), importance);
        }
        Assert.True(codebookError <= Limit * uniformError, $"codebook {codebookError:E3}, uniform {uniformError:E3}");
    }

    [Fact]
    public void Importance_moves_the_error_off_the_important_columns_and_the_fit_is_deterministic()
    {
        int rows = 8, columns = 128;
        var weights = GaussianValues(rows * columns, 11);
        var importance = new float[columns];
        for (int c = 0; c < columns; c++)
            importance[c] = c < 16 ? 100 : 1;
        var plain = CodebookQuantizer.Quantize("w", weights, rows, columns, default, 2, columns).Decode();
        var weighted = CodebookQuantizer.Quantize("w", weights, rows, columns, importance, 2, columns).Decode();
        Assert.Equal(weighted, CodebookQuantizer.Quantize("w", weights, rows, columns, importance, 2, columns).Decode());
        Assert.True(WeightedError(weights, weighted, Expand(importance, rows)) < WeightedError(weights, plain, Expand(importance, rows)));
    }

    private static float[] Expand(float[] perColumn, int rows) => Enumerable.Repeat(perColumn, rows).SelectMany(r => r).ToArray();

    [Theory]
    [InlineData(3, 32)]
    [InlineData(2, 64)]
    [InlineData(4, 0)]
    public void Gptq_with_codebooks_has_less_output_error_than_rounding_to_fitted_codebooks(int bits, int group)
    {
        // Named limit: GPTQ's output error must be at most this fraction of k-means-then-round on the same H.
        const double Limit = 0.8;
        var (w, h) = GptqTests.Layer(seed: bits, rows: 32, columns: 128, tokens: 384);
        int n = 128;
        var diagonal = new float[n];
        for (int i = 0; i < n; i++)
            diagonal[i] = (float)h[i * n + i];
        var rtn = CodebookQuantizer.Quantize("w", w, 32, n, diagonal, bits, group).Decode();
        var hessian = GptqHessian.Prepare(h, n, 0.01, activationOrder: true);
        var gptq = CodebookQuantizer.QuantizeGptq("w", w, 32, hessian, bits, group, new GptqOptions { Threads = 2 });
        Assert.Equal(group == 0 ? n : group, gptq.Group);
        double rtnError = Gptq.OutputError(w, rtn, 32, n, h), gptqError = Gptq.OutputError(w, gptq.Decode(), 32, n, h);
        Assert.True(gptqError <= Limit * rtnError, $"GPTQ {gptqError:E3}, RTN {rtnError:E3}");
    }
}
