using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public class RotatedWeightTests
{
    [Theory]
    [InlineData(5, 288, 1UL, false)]
    [InlineData(17, 96, 2UL, true)]
    [InlineData(8, 768, 3UL, true)]
    [InlineData(3, 40, 4UL, false)]
    public void An_exactly_rotated_f32_weight_decodes_to_the_original_and_multiplies_like_it(int rows, int columns, ulong seed, bool permute)
    {
        var values = WeightTestData.Gaussian(rows, columns, (int)seed, outlierColumns: 3);
        var rotation = new RandomizedHadamard(columns, seed, permute);
        var weight = new RotatedWeight(rotation, WeightTestData.F32("w", RotatedQuantizer.RotateRows(values, rows, rotation), rows, columns));
        var row = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            weight.DecodeRow(r, row);
            for (int c = 0; c < columns; c++)
                Assert.Equal(values[r * columns + c], row[c], 1e-5);
        }

        var original = WeightTestData.F32("w", values, rows, columns);
        foreach (int tokens in new[] { 1, 3, 9 })
        {
            var x = WeightTestData.Gaussian(tokens, columns, 100 + tokens, scale: 1);
            var expected = WeightTestData.ReferenceProduct(original, x, tokens);
            foreach (int threads in new[] { 1, 2 })
            {
                using var context = new ComputeContext(threads);
                var y = new float[tokens * rows];
                weight.Multiply(x, tokens, context, y);
                for (int i = 0; i < y.Length; i++)
                    Assert.Equal(expected[i], y[i], 2e-3);
            }
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void A_rotated_uniform_weight_multiplies_as_its_decoded_rows_do_at_any_thread_count_and_deterministically(int bits)
    {
        int rows = 24, columns = 288;
        var values = WeightTestData.Gaussian(rows, columns, bits);
        var weight = RotatedQuantizer.Quantize("w", values, rows, new UniformScheme(bits, 32, false), new RandomizedHadamard(columns, 9, true), []);
        int tokens = 5;
        var x = WeightTestData.Gaussian(tokens, columns, 7, scale: 1);
        var expected = WeightTestData.ReferenceProduct(weight, x, tokens);
        float[]? first = null;
        foreach (var context in new[] { new ComputeContext(1), new ComputeContext(2), new ComputeContext(2) { Deterministic = true } })
        {
            using (context)
            {
                var y = new float[tokens * rows];
                weight.Multiply(x, tokens, context, y);
                for (int i = 0; i < y.Length; i++)
                    Assert.Equal(expected[i], y[i], context.Deterministic ? 1e-3 : 1e-3 + QuantizedActivationsBound(weight, i % rows, x.AsSpan(i / rows * columns, columns)));
                if (!context.Deterministic)
                {
                    first ??= y;
                    Assert.Equal(first, y);
                }
            }
        }
        Assert.Equal(weight.Inner.StoredBytes, weight.StoredBytes);
        Assert.StartsWith("rotation b32 perm + uniform", weight.Scheme, StringComparison.Ordinal);
    }

    /// <summary>What rounding the rotated activations F·x to 8 bits per block of 32 (the fused uniform product) can move
    /// row <paramref name="row"/>'s output by: Σ_c |w′_c| · max|F·x| / 254 ≤ Σ_c |w′_c| · ‖x‖₂ / 254, plus 1 % for the f16
    /// block scales.</summary>
    private static double QuantizedActivationsBound(RotatedWeight weight, int row, ReadOnlySpan<float> x)
    {
        var inner = new float[weight.Columns];
        weight.Inner.DecodeRow(row, inner);
        double norm = 0;
        foreach (float v in x)
            norm += v * (double)v;
        return inner.Sum(v => Math.Abs((double)v)) * Math.Sqrt(norm) / 254 * 1.01;
    }

    [Fact]
    public void Refuses_a_rotation_of_another_length()
        => Assert.Throws<ArgumentException>(() => new RotatedWeight(new RandomizedHadamard(64, 1, false), WeightTestData.F32("w", new float[96], 1, 96)));
}
