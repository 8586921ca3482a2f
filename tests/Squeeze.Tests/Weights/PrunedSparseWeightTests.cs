using Squeeze.Formats;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Pruning;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tests.Pruning;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public class PrunedSparseWeightTests
{
    private static float Half(float value) => (float)(Half)value;

    // Kept values in f32, so a structured product (the inner weight's own kernel) is exact f32.
    private static LinearWeight F32(string name, float[] values, int rows, int columns) => WeightTestData.F32(name, values, rows, columns);

    private static void AssertProductMatches(LinearWeight weight, int seed)
    {
        var random = new Random(seed);
        foreach (int tokens in new[] { 1, 3, 17 })
        {
            var x = Enumerable.Range(0, tokens * weight.Columns).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
            var expected = WeightTestData.ReferenceProduct(weight, x, tokens);
            float[]? first = null;
            foreach (int threads in new[] { 1, 3 })
            {
                using var context = new ComputeContext(threads);
                var y = new float[tokens * weight.Rows];
                weight.Multiply(x, tokens, context, y);
                for (int i = 0; i < y.Length; i++)
                {
                    double tolerance = 1e-5 * (1 + Math.Sqrt(weight.Columns));
                    Assert.True(Math.Abs(y[i] - expected[i]) <= tolerance, $"{weight} tokens {tokens} output {i}: {y[i]} vs {expected[i]}");
                }
                if (first is null)
                    first = y;
                else
                    Assert.Equal(first, y);
            }
        }
    }

    public static TheoryData<int, int, int, int> NmShapes => new()
    {
        { 2, 4, 7, 16 }, { 2, 4, 33, 288 }, { 2, 4, 5, 172 }, { 2, 4, 3, 20 }, { 2, 4, 2, 4 }, { 4, 8, 9, 64 }, { 1, 4, 5, 20 }, { 3, 8, 4, 40 }, { 2, 4, 64, 768 },
    };

    [Theory]
    [MemberData(nameof(NmShapes))]
    public void N_of_M_weight_decodes_to_the_pruned_matrix_and_multiplies_only_the_kept_weights(int n, int m, int rows, int columns)
    {
        var w = PrunerTests.RandomWeights(rows, columns, rows + columns);
        var result = Pruner.Prune(w, rows, columns, new SparsityPattern.NOfM(n, m), PruningMethod.Magnitude);
        var weight = PrunedWeights.NOfM("w", result, n, m);
        Assert.Equal(NmSparseWeight.BitsFor(m) * (long)rows * columns * n / m / 8, weight.IndexBytes, 1.0 * rows);
        var decoded = weight.Decode();
        for (int i = 0; i < decoded.Length; i++)
            Assert.Equal(result.Mask[i] ? Half(w[i]) : 0f, decoded[i]);
        AssertProductMatches(weight, rows * columns);
        Assert.Equal(weight.Values.StoredBytes + weight.IndexBytes, weight.StoredBytes);
    }

    [Fact]
    public void Two_of_four_takes_nine_bits_per_weight_with_f16_values()
    {
        var w = PrunerTests.RandomWeights(8, 64, 1);
        var weight = PrunedWeights.NOfM("w", Pruner.Prune(w, 8, 64, new SparsityPattern.NOfM(2, 4), PruningMethod.Magnitude), 2, 4);
        Assert.Equal(9.0, weight.BitsPerWeight, 9);
    }

    [Theory]
    [InlineData(0.25, 5, 96)]
    [InlineData(0.5, 13, 288)]
    [InlineData(0.6, 3, 21)]
    public void Masked_weight_decodes_to_the_pruned_matrix_and_multiplies_only_the_kept_weights(double sparsity, int rows, int columns)
    {
        var w = PrunerTests.RandomWeights(rows, columns, 17);
        var result = Pruner.Prune(w, rows, columns, new SparsityPattern.Unstructured(sparsity), PruningMethod.Magnitude);
        var weight = PrunedWeights.Unstructured("w", result);
        var decoded = weight.Decode();
        for (int i = 0; i < decoded.Length; i++)
            Assert.Equal(result.Mask[i] ? Half(w[i]) : 0f, decoded[i]);
        Assert.Equal((long)rows * ((columns + 7) / 8), weight.IndexBytes);
        AssertProductMatches(weight, 5);
    }

    [Theory]
    [InlineData("rows")]
    [InlineData("columns")]
    [InlineData("both")]
    public void Structured_weight_keeps_the_sub_matrix_and_multiplies_only_it(string form)
    {
        int rows = 24, columns = 40;
        var w = PrunerTests.RandomWeights(rows, columns, 23);
        var result = form switch
        {
            "rows" => Pruner.Prune(w, rows, columns, new SparsityPattern.Rows(0.25), PruningMethod.Magnitude),
            "columns" => Pruner.Prune(w, rows, columns, new SparsityPattern.Columns(0.5, 4), PruningMethod.Magnitude),
            _ => Pruner.Prune(Pruner.Prune(w, rows, columns, new SparsityPattern.Rows(0.5), PruningMethod.Magnitude).Weights, rows, columns,
                new SparsityPattern.Columns(0.25), PruningMethod.Magnitude),
        };
        var weight = Assert.IsType<StructuredSparseWeight>(PrunedWeights.Structured("w", result, F32));
        var mask = result.Mask;
        if (form == "both")
        {
            // The second pass scored the zero rows lowest only by columns; rebuild the mask of both passes.
            mask = result.Weights.Select(v => v != 0).ToArray();
        }
        var decoded = weight.Decode();
        for (int i = 0; i < decoded.Length; i++)
            Assert.Equal(mask[i] ? w[i] : 0f, decoded[i]);
        Assert.True(weight.Kept.Rows * weight.Kept.Columns < rows * columns);
        AssertProductMatches(weight, 29);
    }

    [Theory]
    [InlineData(8)]
    [InlineData(33)]
    [InlineData(70)]
    public void Batch_products_sum_in_the_order_of_the_scalar_reference(int tokens)
    {
        int rows = 11, columns = 96;
        var w = PrunerTests.RandomWeights(rows, columns, tokens);
        var weight = PrunedWeights.Unstructured("w", Pruner.Prune(w, rows, columns, new SparsityPattern.Unstructured(0.4), PruningMethod.Magnitude));
        var x = PrunerTests.RandomWeights(tokens, columns, tokens + 1);
        var y = new float[tokens * rows];
        using var context = new ComputeContext(2);
        weight.Multiply(x, tokens, context, y);
        var values = new float[weight.KeptPerRow];
        var kept = new int[weight.KeptPerRow];
        for (int r = 0; r < rows; r++)
        {
            weight.Values.DecodeRow(r, values);
            weight.KeptColumns(r, kept);
            for (int t = 0; t < tokens; t++)
            {
                float sum = 0;
                for (int k = 0; k < kept.Length; k++)
                    sum += values[k] * x[t * columns + kept[k]];
                Assert.Equal(sum, y[t * rows + r]);
            }
        }
    }

    [Fact]
    public void Zero_weight_stores_nothing_and_multiplies_to_zero()
    {
        var weight = new ZeroWeight("w", 5, 7);
        Assert.Equal(0, weight.StoredBytes);
        var y = Enumerable.Repeat(1f, 10).ToArray();
        using var context = new ComputeContext(1);
        weight.Multiply(new float[14], 2, context, y);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Deterministic_products_are_the_decoded_product()
    {
        var w = PrunerTests.RandomWeights(16, 64, 31);
        var weight = PrunedWeights.NOfM("w", Pruner.Prune(w, 16, 64, new SparsityPattern.NOfM(2, 4), PruningMethod.Magnitude), 2, 4);
        var x = PrunerTests.RandomWeights(3, 64, 32);
        using var deterministic = new ComputeContext(2) { Deterministic = true };
        var y = new float[3 * 16];
        weight.Multiply(x, 3, deterministic, y);
        var expected = WeightTestData.ReferenceProduct(weight, x, 3);
        for (int i = 0; i < y.Length; i++)
            Assert.Equal(expected[i], y[i], 1e-4);
    }

    [Fact]
    public void Bad_parts_are_found()
    {
        var values = PrunedWeights.F16("v", new float[2 * 4], 2, 4);
        // 2:4 over 8 columns: 4 kept per row, 2 bits each = 1 byte per row. Positions (0, 1 | 2, 3) = 0b11_10_01_00.
        Assert.Null(NmSparseWeight.FindProblem(2, 8, 2, 4, 2, 4, [0b11_10_01_00, 0b11_10_01_00]));
        Assert.Contains("strictly increasing", NmSparseWeight.FindProblem(2, 8, 2, 4, 2, 4, [0b11_10_01_01, 0b11_10_01_00]));
        Assert.Contains("bytes", NmSparseWeight.FindProblem(2, 8, 2, 4, 2, 4, [0b11_10_01_00]));
        Assert.Contains("kept values", NmSparseWeight.FindProblem(2, 8, 2, 4, 2, 3, [0, 0]));
        // 3:6 (3 bits): position 6 is outside a group of 6.
        Assert.Contains("outside", NmSparseWeight.FindProblem(1, 6, 3, 6, 1, 3, [0b10_001_000, 0b0000000_1]));
        Assert.Contains("padding", NmSparseWeight.FindProblem(1, 6, 3, 6, 1, 3, [0b10_001_000, 0b0000010_0]));
        Assert.Throws<ArgumentException>(() => new NmSparseWeight("w", 2, 8, 2, 4, values, new byte[] { 0b00_10_01_00, 0b11_10_01_00 }));

        Assert.Null(MaskedSparseWeight.FindProblem(2, 10, 2, 4, [0b1111, 0, 0b11, 0b11]));
        Assert.Contains("keeps 3", MaskedSparseWeight.FindProblem(2, 10, 2, 4, [0b0111, 0, 0b11, 0b11]));
        Assert.Contains("beyond", MaskedSparseWeight.FindProblem(2, 10, 2, 4, [0b1111, 0, 0b11, 0b101]));
        Assert.Contains("bytes", MaskedSparseWeight.FindProblem(2, 10, 2, 4, [0b1111, 0, 0b11]));

        Assert.Null(StructuredSparseWeight.FindProblem(4, 10, [0b0101], [0xFF, 0b00], 2, 8));
        Assert.Contains("row mask keeps 3", StructuredSparseWeight.FindProblem(4, 10, [0b0111], [0xFF, 0b00], 2, 8));
        Assert.Contains("beyond", StructuredSparseWeight.FindProblem(4, 10, [0b10101], [0xFF, 0b00], 3, 8));
        Assert.Contains("column mask takes", StructuredSparseWeight.FindProblem(4, 10, [0b0101], [0xFF], 2, 8));
    }

    [Fact]
    public void A_dropped_sub_layer_runs_as_the_zero_matrix_does()
    {
        using var source = ModelLoader.Load(SharedData.Stories260K);
        string[] dropped = [TensorNames.AttentionOutput(1), TensorNames.Down(2), TensorNames.AttentionOutput(3), TensorNames.Down(3)];
        using var zeros = source.WithTensors(dropped.ToDictionary(name => name, name => (GgmlType.F32, new byte[source[name].ElementCount * sizeof(float)]), StringComparer.Ordinal));
        var zeroWeights = dropped.Select(name => (LinearWeight)new ZeroWeight(name, (int)source[name].Rows, (int)source[name].Columns)).ToArray();
        using var skipped = new Model(source.Config, source.Vocabulary, source.Tensors.Where(t => !dropped.Contains(t.Name)).ToArray(), source.Source, [], zeroWeights);
        int[] tokens = [1, 403, 407, 262, 300, 289, 47, 122, 301, 44];
        using var withZeros = new Transformer(zeros, new RuntimeOptions { Threads = 2 });
        using var withSkips = new Transformer(skipped, new RuntimeOptions { Threads = 2 });
        var expected = withZeros.Forward(tokens, tokens.Length).ToArray();
        var actual = withSkips.Forward(tokens, tokens.Length).ToArray();
        Assert.Equal(expected, actual);
        Assert.Equal(source.TensorBytes - dropped.Sum(name => source[name].ByteLength), skipped.TensorBytes);
    }
}
