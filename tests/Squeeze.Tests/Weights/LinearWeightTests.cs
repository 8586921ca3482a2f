using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public sealed class LinearWeightTests
{
    internal static float[] RandomValues(int count, int seed)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < values.Length; i++)
            values[i] = (float)((random.NextDouble() - 0.5) * 2 * (1 + 3 * random.NextDouble() * random.NextDouble()));
        return values;
    }

    /// <summary>|a − b| ≤ tolerance · (1 + |b|) elementwise.</summary>
    internal static void AssertClose(double[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance * (1 + Math.Abs(expected[i])), $"{what}: [{i}] {actual[i]} vs {expected[i]}");
    }

    /// <summary>A weight that has only the reference, so its product is the decoded product.</summary>
    private sealed class DenseWeight(string name, int rows, int columns, float[] values) : LinearWeight(name, rows, columns)
    {
        public override long StoredBytes => 4L * values.Length;

        public override string Scheme => "dense";

        public override void DecodeRow(int row, Span<float> destination)
        {
            CheckRow(row, destination);
            values.AsSpan(row * Columns, Columns).CopyTo(destination);
        }
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 13, 1)]
    [InlineData(33, 96, 5)]
    [InlineData(64, 288, 17)]
    [InlineData(130, 40, 64)]
    public void The_decoded_product_matches_the_reference_and_does_not_depend_on_the_thread_count(int rows, int columns, int tokens)
    {
        var weight = new DenseWeight("w", rows, columns, RandomValues(rows * columns, rows + columns));
        var x = RandomValues(tokens * columns, tokens);
        var expected = WeightTestData.ReferenceProduct(weight, x, tokens);
        float[]? first = null;
        foreach (int threads in (int[])[1, 2, 3])
        {
            using var context = new ComputeContext(threads);
            var y = new float[tokens * rows];
            weight.Multiply(x, tokens, context, y);
            AssertClose(expected, y, 1e-5, $"{threads} threads");
            if (first is null)
                first = y;
            else
                Assert.Equal(first, y);
        }
    }

    [Fact]
    public unsafe void The_deterministic_decoded_product_uses_the_deterministic_dot()
    {
        var weight = new DenseWeight("w", 9, 100, RandomValues(900, 1));
        var x = RandomValues(300, 2);
        using var context = new ComputeContext(2) { Deterministic = true };
        var y = new float[27];
        weight.Multiply(x, 3, context, y);
        var row = new float[100];
        for (int t = 0; t < 3; t++)
        {
            for (int r = 0; r < 9; r++)
            {
                weight.DecodeRow(r, row);
                fixed (float* pr = row, px = x)
                    Assert.Equal(DeterministicMath.Dot(pr, px + t * 100, 100), y[t * 9 + r]);
            }
        }
    }

    [Theory]
    [InlineData(2, 32, false)]
    [InlineData(3, 96, false)]
    [InlineData(5, 48, true)]
    [InlineData(8, 288, false)]
    public void A_uniform_weight_multiplies_as_it_decodes(int bits, int group, bool symmetric)
    {
        const int rows = 21, columns = 288, tokens = 6;
        var values = RandomValues(rows * columns, bits);
        var weight = UniformWeight.Encode("u", values, rows, columns, new UniformScheme(bits, group, symmetric));
        Assert.Equal(rows * ((columns * bits + 7) / 8) + 2L * rows * (columns / group) * (symmetric ? 1 : 2), weight.StoredBytes);
        var x = RandomValues(tokens * columns, 7);
        using var context = new ComputeContext(2) { Deterministic = true };
        var y = new float[tokens * rows];
        weight.Multiply(x, tokens, context, y);
        AssertClose(WeightTestData.ReferenceProduct(weight, x, tokens), y, 1e-5, weight.Scheme);
    }

    [Theory]
    [InlineData(2, 32, false, 1)]
    [InlineData(3, 96, false, 5)]
    [InlineData(3, 32, true, 1)]
    [InlineData(5, 48, true, 9)]
    [InlineData(7, 144, false, 2)]
    [InlineData(8, 288, false, 4)]
    public unsafe void A_fused_uniform_product_is_the_decoded_rows_times_the_quantized_activations_at_any_thread_count(int bits, int group, bool symmetric, int tokens)
    {
        const int rows = 70, columns = 288;
        var weight = UniformWeight.Encode("u", WeightTestData.Gaussian(rows, columns, bits, outlierColumns: 3), rows, columns, new UniformScheme(bits, group, symmetric));
        var x = RandomValues(tokens * columns, 7);
        var prepared = new byte[UniformDot.ActivationRowBytes(columns, group) * tokens];
        var scratch = new byte[UniformDot.PrepareScratchBytes(columns)];
        fixed (float* px = x)
        fixed (byte* p = prepared, s = scratch)
            UniformDot.PrepareActivations(px, columns, group, tokens, s, p);
        float[]? first = null;
        foreach (int threads in (int[])[1, 2, 3])
        {
            using var context = new ComputeContext(threads);
            var y = new float[tokens * rows];
            weight.Multiply(x, tokens, context, y);
            fixed (byte* p = prepared)
            {
                for (int t = 0; t < tokens; t++)
                {
                    for (int r = 0; r < rows; r++)
                    {
                        var (sum, magnitude) = Tests.Kernels.UniformDotTests.Exact(weight, r, p + t * UniformDot.ActivationRowBytes(columns, group));
                        Assert.True(Math.Abs(y[t * rows + r] - sum) <= 1e-5 * magnitude, $"{weight.Scheme} token {t} row {r}: {y[t * rows + r]} vs {sum}");
                    }
                }
            }
            if (first is null)
                first = y;
            else
                Assert.Equal(first, y);
        }
        // and the quantized activations cost little against the f32 product
        using var plain = new ComputeContext(1) { Deterministic = true };
        var exact = new float[tokens * rows];
        weight.Multiply(x, tokens, plain, exact);
        double error = 0, norm = 0;
        for (int i = 0; i < exact.Length; i++)
        {
            error += (first![i] - exact[i]) * (double)(first[i] - exact[i]);
            norm += exact[i] * (double)exact[i];
        }
        Assert.True(Math.Sqrt(error / norm) < 0.01, $"relative error {Math.Sqrt(error / norm)}");
    }

    [Fact]
    public void A_prompt_of_uniform_weights_runs_the_decoded_product()
    {
        const int rows = 40, columns = 288, tokens = UniformProduct.MaxTokens;
        var weight = UniformWeight.Encode("u", WeightTestData.Gaussian(rows, columns, 3), rows, columns, new UniformScheme(4, 144, false));
        var x = RandomValues(tokens * columns, 9);
        using var context = new ComputeContext(2);
        var y = new float[tokens * rows];
        var decoded = new float[tokens * rows];
        weight.Multiply(x, tokens, context, y);
        DecodedProduct.Multiply(weight, x, tokens, context, decoded);
        Assert.Equal(decoded, y);
    }

    [Fact]
    public void A_prompt_of_uniform_weights_with_wide_rows_runs_fused_each_token_as_alone()
    {
        const int rows = 24, columns = UniformProduct.MinPromptColumns, tokens = 2 * UniformProduct.MaxTokens + 3;
        var weight = UniformWeight.Encode("u", WeightTestData.Gaussian(rows, columns, 4), rows, columns, new UniformScheme(3, 256, false));
        var x = RandomValues(tokens * columns, 10);
        using var context = new ComputeContext(2);
        var y = new float[tokens * rows];
        weight.Multiply(x, tokens, context, y);
        var decoded = new float[tokens * rows];
        DecodedProduct.Multiply(weight, x, tokens, context, decoded);
        Assert.NotEqual(decoded, y); // the fused product quantizes the activations: not the decoded product's bits
        for (int t = 0; t < tokens; t++)
        {
            var alone = new float[rows];
            weight.Multiply(x.AsSpan(t * columns, columns), 1, context, alone);
            Assert.Equal(alone, y.AsSpan(t * rows, rows).ToArray());
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_decoded_product_of_a_batch_is_each_token_s_own_bit_for_bit(bool deterministic)
    {
        const int rows = 21, columns = 288;
        var weight = UniformWeight.Encode("u", WeightTestData.Gaussian(rows, columns, 5), rows, columns, new UniformScheme(3, 32, false));
        using var context = new ComputeContext(2) { Deterministic = deterministic };
        foreach (int tokens in (int[])[1, 3, 4, 7, 9])
        {
            var x = RandomValues(tokens * columns, 11 + tokens);
            var batch = new float[tokens * rows];
            DecodedProduct.Multiply(weight, x, tokens, context, batch);
            for (int t = 0; t < tokens; t++)
            {
                var alone = new float[rows];
                DecodedProduct.Multiply(weight, x.AsSpan(t * columns, columns), 1, context, alone);
                Assert.Equal(alone, batch.AsSpan(t * rows, rows).ToArray());
            }
        }
    }

    [Fact]
    public void A_uniform_weight_decodes_bit_for_bit_as_the_reference_at_every_width()
    {
        foreach (int bits in (int[])[2, 3, 4, 5, 6, 7, 8])
        {
            foreach (var (columns, group, symmetric) in new[] { (96, 32, false), (288, 48, true), (40, 8, false), (768, 256, true), (17, 17, false) })
            {
                var values = RandomValues(5 * columns, bits * 1000 + columns);
                var scheme = new UniformScheme(bits, group, symmetric);
                var weight = UniformWeight.Encode("u", values, 5, columns, scheme);
                int rowBytes = (int)scheme.RowBytes(columns), groups = columns / group;
                var expected = new float[columns];
                var actual = new float[columns];
                for (int r = 0; r < 5; r++)
                {
                    UniformCodec.DecodeRow(weight.Codes.Slice(r * rowBytes, rowBytes), weight.Scales.Slice(r * groups, groups),
                        symmetric ? default : weight.Mins.Slice(r * groups, groups), scheme, expected);
                    weight.DecodeRow(r, actual);
                    Assert.Equal(expected, actual);
                    if (group % 8 == 0)
                    {
                        // both paths of runs of eight: scalar and (where the machine has BMI2 and AVX2) vector
                        weight.DecodeRow(r, actual, vector: false);
                        Assert.Equal(expected, actual);
                        weight.DecodeRow(r, actual, vector: true);
                        Assert.Equal(expected, actual);
                    }
                }
            }
        }
    }

    [Fact]
    public void A_sum_decodes_and_multiplies_as_the_sum_of_its_terms()
    {
        const int rows = 12, columns = 64, tokens = 3;
        var a = RandomValues(rows * columns, 1);
        var b = RandomValues(rows * columns, 2);
        var sum = new SumWeight("s", [new DenseWeight("s", rows, columns, a), UniformWeight.Encode("s", b, rows, columns, new UniformScheme(4, 32, false))]);
        var row = new float[columns];
        var part = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            sum.DecodeRow(r, row);
            sum.Terms[1].DecodeRow(r, part);
            for (int c = 0; c < columns; c++)
                Assert.Equal(a[r * columns + c] + part[c], row[c]);
        }
        var x = RandomValues(tokens * columns, 3);
        using var context = new ComputeContext(2) { Deterministic = true }; // the terms' f32 products (the uniform one is fused otherwise)
        var y = new float[tokens * rows];
        sum.Multiply(x, tokens, context, y);
        AssertClose(WeightTestData.ReferenceProduct(sum, x, tokens), y, 1e-5, "sum");
        Assert.Equal(4L * rows * columns + sum.Terms[1].StoredBytes, sum.StoredBytes);
    }

    [Fact]
    public void A_block_weight_multiplies_with_the_ggml_kernels()
    {
        const int rows = 8, columns = 64;
        var values = RandomValues(rows * columns, 5);
        using var buffer = NativeBuffer.Allocate(values.Length * 4L);
        unsafe
        {
            values.CopyTo(new Span<float>((float*)buffer.Pointer, values.Length));
        }
        var weight = new BlockWeight(new Tensor("b", GgmlType.F32, [rows, columns], buffer, 0));
        Assert.Equal("F32", weight.Scheme);
        Assert.Equal(4L * rows * columns, weight.StoredBytes);
        var x = RandomValues(2 * columns, 6);
        using var context = new ComputeContext(1);
        var y = new float[2 * rows];
        weight.Multiply(x, 2, context, y);
        AssertClose(WeightTestData.ReferenceProduct(weight, x, 2), y, 1e-5, "F32");
    }

    [Fact]
    public void Shapes_are_checked()
    {
        var weight = new DenseWeight("w", 4, 8, new float[32]);
        using var context = new ComputeContext(1);
        Assert.Throws<ArgumentException>(() => weight.Multiply(new float[15], 2, context, new float[8]));
        Assert.Throws<ArgumentException>(() => weight.Multiply(new float[16], 2, context, new float[7]));
        Assert.Throws<ArgumentOutOfRangeException>(() => weight.DecodeRow(4, new float[8]));
        Assert.Throws<ArgumentException>(() => weight.DecodeRow(0, new float[7]));
        Assert.Throws<ArgumentException>(() => new SumWeight("s", [weight, new DenseWeight("w", 4, 9, new float[36])]));
    }
}
