using Squeeze.Allocation;
using Squeeze.Compression;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Compression;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Allocation;

/// <summary>The GGUF size target's estimate (<see cref="Allocator.EstimateGguf(Model, AllocationOptions, long)"/>): each
/// stage what it holds, the refusal comparing the peak stage and naming it before any work, and the stages at the
/// TinyLlama-1.1B shape from its config alone.</summary>
public sealed class GgufEstimateTests
{
    [Fact]
    public void Each_stage_holds_its_parts_and_the_peak_is_the_largest_stage()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var c = model.Config;
        const long tokens = 2048;
        long budget = Allocator.BudgetForBitsPerWeight(5.0, model.ParameterCount);
        var options = new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Gptq, ContextLength = 64 },
            KldChunks = 4,
            SwapChunks = 1,
            Budget = budget,
        };
        var matrices = GgufCandidateSet.Matrices(model);
        var largest = ResourceEstimate.LargestGgufEncoding(matrices.SelectMany(m => GgufCandidateSet.Fitting(m.Shape[^1], GgufCandidateSet.DefaultTypes)
            .Select(type => (m.Name, m.Shape, type))));
        // The largest encoding is a tensor's in F16, the largest type.
        Assert.Equal(ResourceEstimate.GgufEncodingBytes(matrices.Max(m => m.Shape[^2] * m.Shape[^1]) / c.Dim, c.Dim, GgmlType.F16, TensorEncoder.BandValues), largest.Bytes);
        long meter = KldMeter.ReferenceBytes(c.VocabSize, 64, 4), runtime = ResourceEstimate.RuntimeBytes(c);
        long encoding = ResourceEstimate.MixParts(c, CompressionMethod.Gptq, tokens, largest).Sum(p => p.Bytes);
        long measuring = ResourceEstimate.ResidualStream(c, tokens).Bytes + meter + KldMeter.ForwardBytes(c, 64) + runtime;
        long table = MultipleChoiceKnapsack.TableBytes(matrices.Count, budget / 32 + 1);

        var estimate = Allocator.EstimateGguf(model, options, tokens);
        Assert.Equal(
            [new(Allocator.CalibratingAndEncoding, encoding + runtime), new("measuring", measuring), new("searching", meter + table + runtime), new StageEstimate("writing", meter + runtime)],
            estimate.Stages);
        Assert.Equal(estimate.Stages.Max(s => s.Bytes), estimate.MemoryBytes);
        Assert.Equal(estimate.MemoryBytes, estimate.Parts.Sum(p => p.Bytes));
        Assert.Equal(GgufCandidateSet.CandidateFileBytes(model), estimate.DiskBytes);
        // The same from the shapes alone.
        Assert.Equal(estimate.Stages, Allocator.EstimateGguf(c, matrices, options, tokens).Stages);

        // Evolution also runs a chunk's forward pass while it searches; rounded candidates are followed by GPTQ of the
        // chosen types, a named mix's stage, in place of writing from the candidate file.
        var evolved = Allocator.EstimateGguf(model, options with { Search = SearchMethod.Evolution }, tokens);
        Assert.Equal(estimate.Stages[2].Bytes + KldMeter.ForwardBytes(c, 64), evolved.Stages[2].Bytes);
        var rounded = Allocator.EstimateGguf(model, options with { Candidates = CandidateEncoding.Rounding }, tokens);
        Assert.Equal(new StageEstimate(Allocator.EncodingChosen(CompressionMethod.Gptq), meter + encoding + runtime), rounded.Stages[^1]);
        Assert.Equal(rounded.Stages[^1].Bytes, rounded.MemoryBytes);
    }

    [Fact]
    public void A_job_over_its_memory_limit_is_refused_in_one_line_naming_the_peak_stage_before_any_work()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var options = new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Imatrix, CalibrationTokens = 1024, ContextLength = 64, Threads = 2 },
            KldChunks = 4,
            SwapChunks = 1,
        };
        // The text gives 1,024 tokens in whole chunks of 64: the estimate the job checks is this one.
        var estimate = Allocator.EstimateGguf(model, options, 1024);
        var peak = estimate.Stages.MaxBy(s => s.Bytes);
        var progress = new List<AllocationProgress>();
        var error = Assert.Throws<InsufficientMemoryException>(() => Allocator.Prepare(model, CompressorTests.CalibrationText,
            options with { Compression = options.Compression with { MemoryLimit = estimate.MemoryBytes - 1 } }, new SynchronousProgress<AllocationProgress>(progress.Add)));
        Assert.DoesNotContain('\n', error.Message);
        Assert.Contains($"of memory in its {peak.Stage} stage (", error.Message, StringComparison.Ordinal);
        Assert.Contains("use fewer calibration tokens than 1,024, or fewer candidate types", error.Message, StringComparison.Ordinal);
        Assert.Empty(progress);
    }

    [Fact]
    public void At_the_TinyLlama_shape_no_stage_but_the_knapsacks_grows_with_the_layers()
    {
        // TinyLlama-1.1B's shape as the benchmark harness writes it, and the same with twice the layers: what grows is
        // the runtime's KV cache of every layer (and the knapsack's table, one row per tensor), never a layer's buffers.
        var config = new ModelConfig
        {
            Architecture = "llama", Dim = 2048, HiddenDim = 5632, LayerCount = 22, HeadCount = 32, KvHeadCount = 4, HeadDim = 64, VocabSize = 32000,
            ContextLength = 2048,
        };
        var deeper = config with { LayerCount = 44 };
        var options = new AllocationOptions { Compression = new CompressionOptions { Method = CompressionMethod.Gptq } };
        var estimate = Allocator.EstimateGguf(config, Matrices(config), options, 4096);
        var twice = Allocator.EstimateGguf(deeper, Matrices(deeper), options, 4096);
        // GPTQ in every type of a 1.1B model is above the work Auto affords: the chosen types are encoded after the search.
        Assert.Equal([Allocator.CalibratingAndEncoding, "measuring", "searching", Allocator.EncodingChosen(CompressionMethod.Gptq)], estimate.Stages.Select(s => s.Stage));
        long kv = ResourceEstimate.RuntimeBytes(deeper) - ResourceEstimate.RuntimeBytes(config);
        long forwardKv = KldMeter.ForwardBytes(deeper, 256) - KldMeter.ForwardBytes(config, 256);
        Assert.Equal(estimate.Stages[0].Bytes + kv, twice.Stages[0].Bytes);
        Assert.Equal(estimate.Stages[1].Bytes + kv + forwardKv, twice.Stages[1].Bytes);
        Assert.Equal(estimate.Stages[2].Bytes + kv + MultipleChoiceKnapsack.TableBytes(Matrices(deeper).Count, 1 << 22)
            - MultipleChoiceKnapsack.TableBytes(Matrices(config).Count, 1 << 22), twice.Stages[2].Bytes);
        Assert.Equal(estimate.Stages[3].Bytes + kv, twice.Stages[3].Bytes);
    }

    private static List<(string Name, long[] Shape)> Matrices(ModelConfig config)
        => [.. HuggingFaceReader.ExpectedTensors(config).Where(t => t.Shape.Length >= 2).Select(t => (t.Name, t.Shape))];
}
