using Squeeze.Calibration;
using Squeeze.Pruning;
using Squeeze.Runtime;

namespace Squeeze.Tests.Pruning;

public class PrunerTests
{
    private static readonly PruningMethod[] Methods = [PruningMethod.Magnitude, PruningMethod.Wanda, PruningMethod.SparseGpt];

    // Inputs with correlated columns: x = z·A with z ~ N(0, 1) and A mixing neighbouring columns, plus one scale per column.
    internal static (float[] X, ActivationStatistics Stats) CorrelatedInputs(int tokens, int width, int seed)
    {
        var random = new Random(seed);
        var x = new float[tokens * width];
        var scale = Enumerable.Range(0, width).Select(_ => 0.2 + 2 * random.NextDouble()).ToArray();
        for (int t = 0; t < tokens; t++)
        {
            var z = Enumerable.Range(0, width).Select(_ => Gaussian(random)).ToArray();
            for (int j = 0; j < width; j++)
            {
                double shared = z[j] + 0.8 * z[(j + 1) % width] + 0.5 * z[(j + 5) % width];
                x[t * width + j] = (float)(scale[j] * shared);
            }
        }
        var stats = new ActivationStatistics(0, LinearInput.FeedForward, width, collectGram: true);
        stats.Accumulate(x, tokens);
        return (x, stats);
    }

    internal static float[] RandomWeights(int rows, int columns, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, rows * columns).Select(_ => (float)Gaussian(random)).ToArray();
    }

    internal static double Gaussian(Random random) => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    public static TheoryData<int, int> NofMCases => new() { { 2, 4 }, { 4, 8 }, { 1, 4 } };

    [Theory]
    [MemberData(nameof(NofMCases))]
    public void N_of_M_masks_keep_exactly_N_in_every_group_and_zero_the_rest(int n, int m)
    {
        int rows = 12, columns = 64;
        var w = RandomWeights(rows, columns, 1);
        var (_, stats) = CorrelatedInputs(200, columns, 2);
        foreach (var method in Methods)
        {
            var result = Pruner.Prune(w, rows, columns, new SparsityPattern.NOfM(n, m), method, stats);
            for (int r = 0; r < rows; r++)
            {
                for (int g = 0; g < columns; g += m)
                {
                    int kept = 0;
                    for (int i = 0; i < m; i++)
                    {
                        int index = r * columns + g + i;
                        if (result.Mask[index])
                            kept++;
                        else
                            Assert.Equal(0f, result.Weights[index]);
                    }
                    Assert.Equal(n, kept);
                }
            }
            if (method != PruningMethod.SparseGpt)
            {
                for (int i = 0; i < w.Length; i++)
                    Assert.Equal(result.Mask[i] ? w[i] : 0f, result.Weights[i]);
            }
        }
    }

    [Theory]
    [InlineData(0.25)]
    [InlineData(0.5)]
    [InlineData(0.6)]
    public void Unstructured_pruning_removes_the_same_count_from_every_row(double sparsity)
    {
        int rows = 10, columns = 96;
        var w = RandomWeights(rows, columns, 3);
        var (_, stats) = CorrelatedInputs(300, columns, 4);
        int expected = (int)Math.Round(sparsity * columns, MidpointRounding.ToEven);
        foreach (var method in Methods)
        {
            var result = Pruner.Prune(w, rows, columns, new SparsityPattern.Unstructured(sparsity), method, stats);
            for (int r = 0; r < rows; r++)
            {
                int removed = 0;
                for (int c = 0; c < columns; c++)
                {
                    if (!result.Mask[r * columns + c])
                    {
                        removed++;
                        Assert.Equal(0f, result.Weights[r * columns + c]);
                    }
                }
                Assert.Equal(expected, removed);
            }
        }
    }

    [Fact]
    public void Magnitude_removes_the_smallest_and_Wanda_weighs_them_by_the_input_norm()
    {
        float[] w = [1, -4, 2, 3];
        var magnitude = Pruner.Prune(w, 1, 4, new SparsityPattern.NOfM(2, 4), PruningMethod.Magnitude);
        Assert.Equal([false, true, false, true], magnitude.Mask);
        // Column norms 10, 0.1, 1, 1: scores 10, 0.4, 2, 3 → keep columns 0 and 3.
        var stats = new ActivationStatistics(0, LinearInput.FeedForward, 1, [100, 0.01, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], null);
        var wanda = Pruner.Prune(w, 1, 4, new SparsityPattern.NOfM(2, 4), PruningMethod.Wanda, stats);
        Assert.Equal([true, false, false, true], wanda.Mask);
    }

    [Theory]
    [InlineData(PruningMethod.Magnitude)]
    [InlineData(PruningMethod.Wanda)]
    [InlineData(PruningMethod.SparseGpt)]
    public void Structured_patterns_remove_whole_rows_and_whole_column_groups(PruningMethod method)
    {
        int rows = 16, columns = 48;
        var w = RandomWeights(rows, columns, 5);
        var (_, stats) = CorrelatedInputs(300, columns, 6);
        var byRows = Pruner.Prune(w, rows, columns, new SparsityPattern.Rows(0.25, GroupSize: 2), method, stats);
        var removedRows = Enumerable.Range(0, rows).Where(r => !byRows.Mask[r * columns]).ToArray();
        Assert.Equal(4, removedRows.Length);
        foreach (int r in removedRows)
            Assert.Contains(r ^ 1, removedRows);
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                Assert.Equal(byRows.Mask[r * columns], byRows.Mask[r * columns + c]);
                Assert.Equal(byRows.Mask[r * columns + c] ? w[r * columns + c] : 0f, byRows.Weights[r * columns + c]);
            }
        }

        // Heads: groups of 8 columns (a head dimension of 8).
        var heads = Pruner.Prune(w, rows, columns, new SparsityPattern.Columns(1.0 / 3, GroupSize: 8), method, stats);
        var removedColumns = Enumerable.Range(0, columns).Where(c => !heads.Mask[c]).ToArray();
        Assert.Equal(16, removedColumns.Length);
        Assert.All(removedColumns.Chunk(8), group => Assert.Equal(0, group[0] % 8));
        for (int r = 0; r < rows; r++)
        {
            foreach (int c in removedColumns)
            {
                Assert.False(heads.Mask[r * columns + c]);
                Assert.Equal(0f, heads.Weights[r * columns + c]);
            }
        }
    }

    [Theory]
    [InlineData("2:4")]
    [InlineData("0.5")]
    [InlineData("columns")]
    public void SparseGpt_has_lower_calibration_weighted_error_than_magnitude_and_wanda_on_correlated_inputs(string form)
    {
        int rows = 32, columns = 64, tokens = 512;
        var w = RandomWeights(rows, columns, 7);
        var (x, stats) = CorrelatedInputs(tokens, columns, 8);
        SparsityPattern pattern = form switch
        {
            "2:4" => new SparsityPattern.NOfM(2, 4),
            "0.5" => new SparsityPattern.Unstructured(0.5),
            _ => new SparsityPattern.Columns(0.25),
        };
        double Error(PruningMethod method)
        {
            var pruned = Pruner.Prune(w, rows, columns, pattern, method, stats, new PruningOptions { DampingFraction = 0.001, BlockSize = 16 }).Weights;
            double error = 0;
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < rows; r++)
                {
                    double d = 0;
                    for (int c = 0; c < columns; c++)
                        d += ((double)w[r * columns + c] - pruned[r * columns + c]) * x[t * columns + c];
                    error += d * d;
                }
            }
            return error;
        }
        double magnitude = Error(PruningMethod.Magnitude), wanda = Error(PruningMethod.Wanda), sparseGpt = Error(PruningMethod.SparseGpt);
        Assert.True(wanda < magnitude, $"Wanda {wanda} vs magnitude {magnitude}");
        Assert.True(sparseGpt < 0.9 * wanda, $"SparseGPT {sparseGpt} vs Wanda {wanda}, magnitude {magnitude}");
    }

    [Fact]
    public void Results_do_not_depend_on_the_thread_count()
    {
        int rows = 24, columns = 64;
        var w = RandomWeights(rows, columns, 9);
        var (_, stats) = CorrelatedInputs(200, columns, 10);
        foreach (SparsityPattern pattern in new SparsityPattern[] { new SparsityPattern.NOfM(2, 4), new SparsityPattern.Unstructured(0.4) })
        {
            var one = Pruner.Prune(w, rows, columns, pattern, PruningMethod.SparseGpt, stats, new PruningOptions { Threads = 1 });
            var four = Pruner.Prune(w, rows, columns, pattern, PruningMethod.SparseGpt, stats, new PruningOptions { Threads = 4 });
            Assert.Equal(one.Weights, four.Weights);
            Assert.Equal(one.Mask, four.Mask);
        }
    }

    [Fact]
    public void Bad_arguments_are_refused()
    {
        var w = RandomWeights(2, 6, 11);
        Assert.Throws<ArgumentException>(() => Pruner.Prune(w, 2, 6, new SparsityPattern.NOfM(2, 4), PruningMethod.Magnitude));
        Assert.Throws<ArgumentException>(() => Pruner.Prune(w, 2, 6, new SparsityPattern.Unstructured(1.0), PruningMethod.Magnitude));
        Assert.Throws<ArgumentException>(() => Pruner.Prune(w, 2, 6, new SparsityPattern.Columns(0.5, 4), PruningMethod.Magnitude));
        Assert.Throws<ArgumentException>(() => Pruner.Prune(w, 2, 6, new SparsityPattern.Unstructured(0.5), PruningMethod.Wanda));
        Assert.Throws<ArgumentException>(() => Pruner.Prune(w, 3, 6, new SparsityPattern.Unstructured(0.5), PruningMethod.Magnitude));
    }
}
