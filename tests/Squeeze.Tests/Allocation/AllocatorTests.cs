using Squeeze.Allocation;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Compression;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Allocation;

/// <summary>stories260K with GPTQ candidates of every type that fits its rows, both error models measured (once for the class).</summary>
public sealed class AllocationFixture : IDisposable
{
    public AllocationFixture()
    {
        Model = Llama2cReader.Load(SharedData.Stories260K);
        Context = Allocator.Prepare(Model, CompressorTests.CalibrationText, new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Gptq, CalibrationTokens = 2048, ContextLength = 64, Threads = 2 },
            KldChunks = 4,
            SwapChunks = 1,
        });
    }

    public Model Model { get; }

    public AllocationContext<GgufCandidateSet, GgufCandidate> Context { get; }

    public void Dispose()
    {
        Context.Dispose();
        Model.Dispose();
    }
}

public sealed class AllocatorTests(AllocationFixture fixture) : IClassFixture<AllocationFixture>
{
    private GgufCandidateSet Set => fixture.Context.Candidates;

    [Fact]
    public void The_candidate_file_size_is_known_before_any_work_and_a_job_over_its_memory_is_refused_before_any_work()
    {
        // Every candidate padded to 64 bytes: the file Build writes, its last candidate's padding aside.
        long padded = Set.Tensors.Sum(t => t.Options.Sum(c => (c.Bytes + 63) / 64 * 64));
        Assert.Equal(padded, GgufCandidateSet.CandidateFileBytes(fixture.Model));

        var progress = new List<AllocationProgress>();
        var error = Assert.Throws<InsufficientMemoryException>(() => Allocator.Prepare(fixture.Model, CompressorTests.CalibrationText, new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Gptq, CalibrationTokens = 2048, ContextLength = 64, Threads = 2, MemoryLimit = 1 << 20 },
        }, new SynchronousProgress<AllocationProgress>(progress.Add)));
        Assert.Contains("squeeze-candidates", error.Message, StringComparison.Ordinal);
        Assert.Contains("calibration tokens", error.Message, StringComparison.Ordinal);
        Assert.Empty(progress);
    }

    [Fact]
    public void Candidates_are_every_type_whose_block_fits_the_rows_plus_f16_with_both_errors_measured()
    {
        Assert.Equal(fixture.Model.Tensors.Count(t => t.Shape.Length == 2), Set.Tensors.Count);
        foreach (var t in Set.Tensors)
        {
            var expected = GgufCandidateSet.DefaultTypes.Where(type => t.Shape[^1] % GgmlTypes.BlockSize(type) == 0).Order();
            Assert.Equal(expected, t.Options.Select(c => c.Type).Order());
            Assert.Contains(t.Options, c => c.Type == GgmlType.F16);
            foreach (var c in t.Options)
            {
                Assert.Equal(GgmlTypes.RowBytes(c.Type, t.Shape[^1]) * (t.Elements / t.Shape[^1]), c.Bytes);
                Assert.True(c.SwapKld >= 0 && double.IsFinite(c.SwapKld), $"{t.Name} {c.Type}: swap KLD {c.SwapKld}");
                Assert.True(c.OutputError >= 0 && double.IsFinite(c.OutputError), $"{t.Name} {c.Type}: output error {c.OutputError}");
            }
            // Ascending by size, and F16 hurts less than the smallest type.
            Assert.True(t.Options.Zip(t.Options.Skip(1)).All(p => p.First.Bytes <= p.Second.Bytes));
            if (t.Options.Count == 1)
                continue; // rows no block fits (stories260K's ffn_down, 172 wide): F16 only
            var f16 = t.Options.Single(c => c.Type == GgmlType.F16);
            Assert.True(f16.SwapKld < t.Options[0].SwapKld, $"{t.Name}: F16 swap KLD {f16.SwapKld} not below {t.Options[0].Type}'s {t.Options[0].SwapKld}");
        }
    }

    [Fact]
    public void Sampled_swaps_measure_the_sampled_tensors_exactly_and_rank_the_rest_like_the_measured_ones()
    {
        Assert.Equal([0, 1, 2, 3, 4], Allocator.SampledLayers(fixture.Model.Config.LayerCount)); // stories260K: every block
        Assert.Equal([0, 2, 5, 8, 10], Allocator.SampledLayers(11));
        Assert.Equal([0, 5, 10, 16, 21], Allocator.SampledLayers(22));

        // Only the first and last of stories260K's 5 blocks measured (as on a deep model, most blocks are not): the
        // predictions against the KLD the fixture measured for every candidate.
        int last = fixture.Model.Config.LayerCount - 1;
        var predicted = Allocator.PredictSwaps(Set, fixture.Context.Meter, [0], out int measured, layers: [0, last]);
        bool Sampled(string name) => !name.StartsWith("blk.", StringComparison.Ordinal) || name.StartsWith("blk.0.", StringComparison.Ordinal)
            || name.StartsWith($"blk.{last}.", StringComparison.Ordinal);
        Assert.Equal(Set.Tensors.Count(t => Sampled(t.Name) && t.Options.Any(c => c.OutputError > 0)), measured);
        var pairs = Set.Tensors.SelectMany((t, i) => t.Options.Select((c, k) => (Measured: c.SwapKld, Predicted: predicted[i][k]))).ToList();
        foreach (var (t, i) in Set.Tensors.Select((t, i) => (t, i)).Where(x => Sampled(x.t.Name) && x.t.Options.Any(c => c.OutputError > 0)))
        {
            // The candidate nearest 4 bits per weight is the one measured: its prediction is its measurement.
            int reference = Enumerable.Range(0, t.Options.Count).Where(k => t.Options[k].OutputError > 0)
                .MinBy(k => Math.Abs(8.0 * t.Options[k].Bytes / t.Elements - 4));
            Assert.Equal(t.Options[reference].SwapKld, predicted[i][reference], 12);
        }
        Assert.All(predicted.SelectMany(p => p), p => Assert.True(p >= 0 && double.IsFinite(p), $"prediction {p}"));
        double rho = Spearman([.. pairs.Select(p => p.Measured)], [.. pairs.Select(p => p.Predicted)]);
        Assert.True(rho > 0.8, $"rank correlation of predicted and measured swap KLD {rho:0.000}");
    }

    // Spearman's rank correlation (average ranks for ties).
    internal static double Spearman(double[] a, double[] b)
    {
        static double[] Ranks(double[] v)
        {
            var order = Enumerable.Range(0, v.Length).OrderBy(i => v[i]).ToArray();
            var ranks = new double[v.Length];
            for (int i = 0; i < order.Length;)
            {
                int j = i;
                while (j + 1 < order.Length && v[order[j + 1]] == v[order[i]])
                    j++;
                for (int k = i; k <= j; k++)
                    ranks[order[k]] = (i + j) / 2.0;
                i = j + 1;
            }
            return ranks;
        }
        var (ra, rb) = (Ranks(a), Ranks(b));
        double ma = ra.Average(), mb = rb.Average();
        double cov = ra.Zip(rb).Sum(p => (p.First - ma) * (p.Second - mb));
        return cov / Math.Sqrt(ra.Sum(x => (x - ma) * (x - ma)) * rb.Sum(x => (x - mb) * (x - mb)));
    }

    [Fact]
    public void The_size_function_is_the_size_of_the_written_file_for_random_selections()
    {
        var random = new Random(5);
        string path = CompressorTests.TempPath("sizes.gguf");
        try
        {
            for (int trial = 0; trial < 12; trial++)
            {
                var selection = RandomSelection(random);
                long predicted = Set.FileBytes(selection);
                // The generic GGUF size function agrees without any candidate written.
                var types = Set.Tensors.Select((t, i) => (t.Name, t.Options[selection[i]].Type)).ToDictionary(x => x.Name, x => x.Type);
                Assert.Equal(predicted, GgufModelWriter.FileLength(fixture.Model, Set.FileType(selection), t => types.GetValueOrDefault(t.Name, t.Type)));
                Assert.Equal(predicted, Set.Write(selection, path));
                Assert.Equal(predicted, new FileInfo(path).Length);
            }
            // The last file loads and holds the chosen types and bytes.
            var last = RandomSelection(random);
            Set.Write(last, path);
            using var loaded = ModelLoader.Load(path);
            using var composed = Set.Compose(last);
            foreach (var t in composed.Tensors)
            {
                Assert.Equal(t.Type, loaded[t.Name].Type);
                for (long r = 0; r < t.Rows; r++)
                    Assert.True(t.Row(r).SequenceEqual(loaded[t.Name].Row(r)), $"{t.Name} row {r}");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void The_knapsack_never_exceeds_random_budgets_and_beats_every_uniform_type_that_fits()
    {
        long smallest = Set.FileBytes(Set.Smallest()), largest = Set.FileBytes(Set.Largest());
        var uniform = new[] { GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0, GgmlType.F16 }.Select(Set.Uniform).ToList();
        var random = new Random(11);
        for (int trial = 0; trial < 200; trial++)
        {
            long budget = smallest + (long)(random.NextDouble() * 1.1 * (largest - smallest));
            foreach (var model in new[] { ErrorModel.SwapKld, ErrorModel.OutputError })
            {
                var selection = Allocator.Knapsack(Set, budget, model);
                Assert.True(Set.FileBytes(selection) <= budget, $"budget {budget}: {Set.FileBytes(selection)} bytes");
                double error = Allocator.PredictedError(Set, selection, model);
                foreach (var u in uniform.Where(u => Set.FileBytes(u) <= budget))
                    Assert.True(error <= Allocator.PredictedError(Set, u, model) + 1e-12, $"budget {budget}: knapsack {error} worse than a uniform selection");
            }
        }
    }

    [Fact]
    public void A_budget_below_the_smallest_file_is_refused_with_the_smallest_size()
    {
        long smallest = Set.FileBytes(Set.Smallest());
        var error = Assert.Throws<ArgumentException>(() => Allocator.Knapsack(Set, smallest - 1, ErrorModel.SwapKld));
        Assert.Contains("below the smallest file", error.Message, StringComparison.Ordinal);
        Assert.Contains($"{smallest:N0} bytes", error.Message, StringComparison.Ordinal);
        // At exactly that budget the answer is a smallest file (of the same-size types, the least damaging).
        var selection = Allocator.Knapsack(Set, smallest, ErrorModel.SwapKld);
        Assert.Equal(smallest, Set.FileBytes(selection));
        Assert.True(Allocator.PredictedError(Set, selection, ErrorModel.SwapKld) <= Allocator.PredictedError(Set, Set.Smallest(), ErrorModel.SwapKld));
    }

    [Fact]
    public void A_budget_above_the_largest_file_gives_the_least_error_and_says_so()
    {
        long largest = Set.FileBytes(Set.Largest());
        var allocation = Allocator.Allocate(fixture.Context, largest * 2, SearchMethod.Knapsack);
        Assert.Contains("nothing needs to be given up", allocation.Note, StringComparison.Ordinal);
        double least = Set.Tensors.Sum(t => t.Options.Min(c => c.SwapKld));
        Assert.Equal(least, allocation.PredictedError, 12);
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q5_1)]
    [InlineData(GgmlType.Q8_0)]
    public void A_budget_exactly_at_a_uniform_type_fits_and_is_no_worse_than_that_type(GgmlType type)
    {
        var uniform = Set.Uniform(type);
        long budget = Set.FileBytes(uniform);
        var selection = Allocator.Knapsack(Set, budget, ErrorModel.SwapKld);
        Assert.True(Set.FileBytes(selection) <= budget);
        Assert.True(Allocator.PredictedError(Set, selection, ErrorModel.SwapKld) <= Allocator.PredictedError(Set, uniform, ErrorModel.SwapKld) + 1e-15);
    }

    [Fact]
    public void Evolution_is_reproducible_for_a_seed_stays_within_budget_and_never_ends_worse_than_its_start()
    {
        long budget = (Set.FileBytes(Set.Uniform(GgmlType.Q4_0)) + Set.FileBytes(Set.Uniform(GgmlType.Q5_0))) / 2;
        var options = new EvolutionOptions { Seed = 3, Generations = 6, Offspring = 4, FinalChunks = 2 };
        var first = Allocator.Allocate(fixture.Context, budget, SearchMethod.Evolution, evolution: options);
        var second = Allocator.Allocate(fixture.Context, budget, SearchMethod.Evolution, evolution: options);
        Assert.Equal(first.Selection, second.Selection);
        Assert.Equal(first.Evolution!.Fitness, second.Evolution!.Fitness);
        Assert.Equal(first.Evolution.History.Select(s => (s.Generation, s.ChunkForwards, s.Fitness, s.FileBytes)),
            second.Evolution.History.Select(s => (s.Generation, s.ChunkForwards, s.Fitness, s.FileBytes)));
        Assert.True(first.FileBytes <= budget);
        Assert.True(first.Evolution.Fitness <= first.Evolution.StartFitness);
        Assert.Equal(6, first.Evolution.Generations);
        // The fitness is the meter's KLD of the chosen assignment on the final chunks.
        using var model = Set.Compose(first.Selection);
        Assert.Equal(first.Evolution.Fitness, fixture.Context.Meter.Measure(model, [0, 1]), 12);
    }

    [Fact]
    public void Mutations_always_fit_the_budget()
    {
        var random = new Random(9);
        long budget = Set.FileBytes(Set.Uniform(GgmlType.Q5_0));
        var parent = Allocator.Knapsack(Set, budget, ErrorModel.SwapKld);
        for (int i = 0; i < 500; i++)
        {
            var child = EvolutionarySearch.Mutate(Set, parent, budget, random, maxRaises: 3);
            if (child is null)
                continue;
            Assert.True(Set.FileBytes(child) <= budget);
            Assert.NotEqual(parent, child);
            parent = child;
        }
    }

    [Theory]
    [InlineData("1000", 1000L)]
    [InlineData("3.2GB", 3_200_000_000L)]
    [InlineData("700 MiB", 734_003_200L)]
    [InlineData("1.5kb", 1500L)]
    public void Sizes_parse_with_decimal_and_binary_units(string text, long bytes) => Assert.Equal(bytes, Allocator.ParseSize(text));

    [Theory]
    [InlineData("")]
    [InlineData("-3GB")]
    [InlineData("3 parsecs")]
    [InlineData("GB")]
    public void Bad_sizes_are_refused(string text) => Assert.Throws<ArgumentException>(() => Allocator.ParseSize(text));

    private int[] RandomSelection(Random random) => Set.Tensors.Select(t => random.Next(t.Options.Count)).ToArray();
}
