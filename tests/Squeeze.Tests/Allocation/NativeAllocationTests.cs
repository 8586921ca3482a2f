using Squeeze.Allocation;
using Squeeze.Compression.Representations;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Tests.Compression;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Allocation;

/// <summary>stories260K with GPTQ native candidates (uniform 2, 3, 4, 8 bits in groups of 32 and 64, f16, and for the embedding a row split), single swaps measured.</summary>
public sealed class NativeAllocationFixture : IDisposable
{
    public NativeAllocationFixture()
    {
        Model = Llama2cReader.Load(SharedData.Stories260K);
        Context = Allocator.PrepareNative(Model, CompressorTests.CalibrationText, new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Gptq, CalibrationTokens = 2048, ContextLength = 64, RefinePasses = 1, Threads = 2 },
            KldChunks = 4,
            SwapChunks = 1,
        }, [.. "uniform:2:32 uniform:3:32 uniform:4:64 uniform:8:32 f16 split:64:uniform:8:32/uniform:2:32".Split(' ').Select(NativeRepresentation.Parse)]);
    }

    public Model Model { get; }

    public AllocationContext<NativeCandidateSet, NativeCandidate> Context { get; }

    public void Dispose()
    {
        Context.Dispose();
        Model.Dispose();
    }
}

public sealed class NativeAllocationTests(NativeAllocationFixture fixture) : IClassFixture<NativeAllocationFixture>, IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-native-alloc-{Guid.NewGuid():N}");

    private NativeCandidateSet Set => fixture.Context.Candidates;

    public void Dispose()
    {
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void Every_matrix_gets_every_representation_that_fits_with_both_errors()
    {
        Assert.Equal(fixture.Model.Tensors.Count(t => t.Shape.Length == 2), Set.Tensors.Count);
        foreach (var t in Set.Tensors)
        {
            // the split level fits only the token embedding (the calibration text's token counts rank its rows)
            int expected = (t.Shape[1] % 32 == 0 ? 3 : 0) + (t.Shape[1] % 64 == 0 ? 1 : 0) + 1 + (t.Name == TensorNames.TokenEmbedding ? 1 : 0);
            Assert.Equal(expected, t.Options.Count);
            Assert.All(t.Options, c => Assert.True(double.IsFinite(c.SwapKld) && c.SwapKld >= 0, $"{t.Name} {c.Format}: {c.SwapKld}"));
            Assert.All(t.Options, c => Assert.Equal(0, c.FileBytes % Set.Grain));
            Assert.True(t.Options.Zip(t.Options.Skip(1)).All(p => p.First.FileBytes <= p.Second.FileBytes), t.Name);
        }
    }

    [Fact]
    public void The_bound_holds_and_the_exact_size_is_the_written_directory_for_random_selections()
    {
        var random = new Random(11);
        for (int trial = 0; trial < 3; trial++)
        {
            var selection = Set.Tensors.Select(t => random.Next(t.Options.Count)).ToArray();
            long exact = Set.FileBytes(selection);
            Assert.True(exact <= Set.BoundBytes(selection), $"exact {exact} > bound {Set.BoundBytes(selection)}");
            Assert.True(Set.BoundBytes(selection) - exact < 64L * (Set.Tensors.Count + 8) + 40L * 3 * Set.Tensors.Count, "the bound is loose");
            string dir = Path.Combine(root, $"t{trial}");
            Assert.Equal(exact, Set.Write(selection, dir));
            using var loaded = ModelLoader.Load(dir);
            using var composed = Set.Compose(selection);
            int[] tokens = [1, 50, 300, 7, 8, 99];
            using var a = new Squeeze.Runtime.Transformer(loaded, new Squeeze.Runtime.RuntimeOptions { Threads = 1 });
            using var b = new Squeeze.Runtime.Transformer(composed, new Squeeze.Runtime.RuntimeOptions { Threads = 1 });
            Assert.Equal(b.Forward(tokens, tokens.Length).ToArray(), a.Forward(tokens, tokens.Length).ToArray());
        }
    }

    [Fact]
    public void The_knapsack_fits_the_budget_exactly_and_is_no_worse_than_uniform_4_bits()
    {
        // 4-bit codes where the rows take groups of 64, f16 elsewhere
        var uniform4 = Set.Tensors.Select(t => t.Options.ToList().FindIndex(c => t.Shape[1] % 64 == 0 ? Set.Weight(t.Name, c) is UniformWeight { UniformScheme.Bits: 4 } : c.Format == "F16")).ToArray();
        Assert.DoesNotContain(-1, uniform4);
        Assert.Contains(Set.Tensors, t => t.Shape[1] % 64 == 0);
        long budget = Set.BoundBytes(uniform4);
        var allocation = Allocator.Allocate(fixture.Context, budget, SearchMethod.Knapsack);
        Assert.True(allocation.FileBytes <= budget);
        Assert.Equal(Set.FileBytes(allocation.Selection), allocation.FileBytes);
        Assert.True(allocation.PredictedError <= Allocator.PredictedError(Set, uniform4, ErrorModel.SwapKld) + 1e-12);
        var smallest = Assert.Throws<ArgumentException>(() => Allocator.Allocate(fixture.Context, Set.BoundBytes(Set.Smallest()) - 1, SearchMethod.Knapsack));
        Assert.Contains("below the smallest file", smallest.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_restricted_knapsack_chooses_only_allowed_levels_and_never_beats_the_full_one()
    {
        long budget = (3 * Set.BoundBytes(Set.Smallest()) + Set.BoundBytes(Set.Largest())) / 4;
        var full = Allocator.Allocate(fixture.Context, budget, SearchMethod.Knapsack);
        var restricted = Allocator.Allocate(fixture.Context, budget, SearchMethod.Knapsack, allowed: c => c.Level != "uniform:3:32");
        Assert.True(restricted.FileBytes <= budget);
        for (int i = 0; i < Set.Tensors.Count; i++)
            Assert.NotEqual("uniform:3:32", Set.Chosen(restricted.Selection, i).Level);
        Assert.True(full.PredictedError <= restricted.PredictedError + 1e-12);
        Assert.Throws<ArgumentException>(() => Allocator.Allocate(fixture.Context, budget, SearchMethod.Knapsack, allowed: _ => false));
    }

    [Fact]
    public void The_zero_level_drops_a_matrix_and_stores_nothing()
    {
        var encoder = new TensorEncoder(fixture.Model, null, new CompressionOptions { Threads = 1 });
        var dropped = new DroppedRepresentation().Encode(encoder, TensorNames.AttentionOutput(0));
        var zero = Assert.IsType<ZeroWeight>(dropped.Weight);
        Assert.Equal((fixture.Model.Config.Dim, fixture.Model.Config.QDim, 0L), (zero.Rows, zero.Columns, zero.StoredBytes));
        Assert.All(zero.Decode(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Representation_specs_parse_and_bad_ones_are_refused()
    {
        Assert.Equal(new UniformRepresentation(3, 96, false), NativeRepresentation.Parse("uniform:3:96"));
        Assert.Equal(new UniformRepresentation(4, 32, true), NativeRepresentation.Parse("UNIFORM:4:32:sym"));
        Assert.Equal(new Float16Representation(), NativeRepresentation.Parse("f16"));
        Assert.Equal(new DroppedRepresentation(), NativeRepresentation.Parse("zero"));
        Assert.Equal(new CodebookRepresentation(3, 0, false), NativeRepresentation.Parse("codebook:3:row"));
        Assert.Equal(144, Assert.IsType<CodebookRepresentation>(NativeRepresentation.Parse("codebook:2:~200")).GroupFor(288));
        Assert.Equal(288, new CodebookRepresentation(3, 0, false).GroupFor(288));
        var atMost = Assert.IsType<UniformRepresentation>(NativeRepresentation.Parse("uniform:2:~64"));
        Assert.Equal((48, 64, 0), (atMost.GroupFor(288), atMost.GroupFor(768), atMost.GroupFor(7)));
        foreach (string bad in (string[])["uniform:9:32", "uniform:3", "uniform:3:0", "uniform:3:32:x", "codebook:1:row", "codebook:3", "lattice", ""])
            Assert.Throws<FormatException>(() => NativeRepresentation.Parse(bad));
        Assert.All(NativeRepresentation.Defaults, r => Assert.Equal(r, NativeRepresentation.Parse(r.Spec)));
    }
}
