using Squeeze.Allocation;
using Squeeze.Compression;
using Squeeze.Compression.Representations;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Tests.Compression;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Allocation;

/// <summary>The native size target's estimate (<see cref="Allocator.EstimateNative(Model, IReadOnlyList{NativeRepresentation}, AllocationOptions, long)"/>):
/// every family's size bound against what it encodes, the candidate files against their bound, a job over its limit
/// refused before any work, and the stages at the 8B shape.</summary>
public sealed class NativeEstimateTests
{
    // One level of every family, with the nested and wrapped forms (split of splits, rotation, entropy coding, sums).
    private static readonly string[] EveryFamily =
    [
        "uniform:3:~64", "uniform:4:32:sym", "codebook:2:row", "codebook:3:~16", "vq:4:7:scaled", "rvq:2:4:4", "f16", "rot+uniform:4:~64",
        "entropy+uniform:4:~64", "entropy+rot+uniform:3:32", "dfloat11", "nm:2:4:f16", "nm:2:4:4", "unstructured:0.5:f16", "unstructured:0.3:3",
        "svd:8", "svd:8:4", "eora:3:~64:4", "slim:2:4:4:4:6", "zero", "split:64:uniform:5:~64/split:128:uniform:3:~64/vq:4:6",
    ];

    [Fact]
    public void Every_familys_size_bound_is_the_bytes_its_scheme_writes_exact_where_they_do_not_depend_on_the_values()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        // Token usage descending with the token id: the split levels fit the token embedding.
        var usage = Enumerable.Range(0, model.Config.VocabSize).Select(t => (double)(model.Config.VocabSize - t)).ToArray();
        var encoder = new TensorEncoder(model, null, new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 2 }, usage);
        var checkedFamilies = new HashSet<string>();
        foreach (string spec in EveryFamily)
        {
            var level = NativeRepresentation.Parse(spec);
            foreach (var (name, shape) in NativeCandidateSet.Matrices(model))
            {
                int rows = (int)shape[0], columns = (int)shape[1];
                if (!level.Fits(encoder, name))
                    continue;
                Assert.True(level.MayFit(name, rows, columns), $"{spec} fits {name} but the estimate does not count it");
                long stored = WrittenBytes(level.Encode(encoder, name).Weight), bound = level.StoredBytesBound(rows, columns);
                if (level is EntropyRepresentation or DFloat11Representation)
                {
                    // Coded sizes depend on the values: the bound is the codes at their plain width plus the coder's tables.
                    Assert.True(stored <= bound, $"{spec} {name}: {stored} stored, bound {bound}");
                }
                else
                {
                    Assert.True(stored == bound, $"{spec} {name}: {stored} stored, bound {bound}");
                }
                checkedFamilies.Add(spec);
            }
        }
        Assert.Equal(EveryFamily.Order(), checkedFamilies.Order());
        // Row splits fit only the token-indexed matrices, by name, before any token usage is known.
        var split = NativeRepresentation.Parse(EveryFamily[^1]);
        Assert.False(split.MayFit(TensorNames.Down(0), 4096, 64));
        Assert.True(split.MayFit(TensorNames.TokenEmbedding, 4096, 64));
    }

    [Fact]
    public void The_candidate_files_are_within_their_bound_and_a_job_over_its_memory_limit_is_refused_before_any_work()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var levels = EveryFamily.Select(NativeRepresentation.Parse).ToList();
        var usage = Enumerable.Range(0, model.Config.VocabSize).Select(t => (double)(model.Config.VocabSize - t)).ToArray();
        var options = new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 2 };
        using var set = NativeCandidateSet.Build(model, null, options, usage, levels);
        var matrices = NativeCandidateSet.Matrices(model);
        long bound = NativeCandidateSet.CandidateFileBytes(matrices, levels);
        int candidates = set.Tensors.Sum(t => t.Options.Count);
        long data = set.Tensors.Sum(t => t.Options.Sum(c => c.Bytes));
        long dataBound = matrices.Sum(m => NativeCandidateSet.CandidateBounds(m, levels).Sum());
        Assert.Equal(candidates, matrices.Sum(m => NativeCandidateSet.CandidateBounds(m, levels).Count()));
        Assert.True(set.CandidateFilesBytes <= bound, $"{set.CandidateFilesBytes} bytes written, bound {bound}");
        // The files' headers stay under the allowance per candidate; the rest of the slack is the coded levels'.
        Assert.True(set.CandidateFilesBytes - data <= candidates * NativeCandidateSet.CandidateHeaderBound,
            $"headers {set.CandidateFilesBytes - data} bytes for {candidates} candidates");
        Assert.True(bound - set.CandidateFilesBytes <= dataBound - data + candidates * NativeCandidateSet.CandidateHeaderBound + 16L * matrices.Count);

        var progress = new List<AllocationProgress>();
        var error = Assert.Throws<InsufficientMemoryException>(() => Allocator.PrepareNative(model, CompressorTests.CalibrationText, new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Gptq, CalibrationTokens = 1024, ContextLength = 64, Threads = 2, MemoryLimit = 1 << 20 },
        }, levels, new SynchronousProgress<AllocationProgress>(progress.Add)));
        Assert.DoesNotContain('\n', error.Message);
        Assert.Contains("more than the limit of 1 MiB; use fewer calibration tokens than 1,024, or fewer representations", error.Message, StringComparison.Ordinal);
        Assert.Empty(progress);
    }

    [Fact]
    public void At_the_8B_shape_encoding_and_measuring_hold_one_layers_buffers_and_writing_twice_the_output()
    {
        // Llama-3.1-8B's shape as the benchmark harness writes it (Llama 2's 32,000-token vocabulary), and the same with
        // twice the layers: every stage but writing is the same size, since none holds a buffer per layer.
        var config = new ModelConfig
        {
            Architecture = "llama", Dim = 4096, HiddenDim = 14336, LayerCount = 32, HeadCount = 32, KvHeadCount = 8, HeadDim = 128, VocabSize = 32000,
            ContextLength = 8192,
        };
        var deeper = config with { LayerCount = 64 };
        var options = new AllocationOptions { Compression = new CompressionOptions { Method = CompressionMethod.Gptq } };
        ResourceEstimate Estimate(ModelConfig c, long budget) => Allocator.EstimateNative(c, Matrices(c), NativeRepresentation.Defaults, options with { Budget = budget }, 4096);
        long parameters = Matrices(config).Sum(m => m.Shape[0] * m.Shape[1]);
        long deeperParameters = Matrices(deeper).Sum(m => m.Shape[0] * m.Shape[1]);
        var estimate = Estimate(config, Allocator.BudgetForBitsPerWeight(3.0, parameters));
        var twice = Estimate(deeper, Allocator.BudgetForBitsPerWeight(3.0, deeperParameters));
        Assert.Equal([Allocator.CalibratingAndEncoding, "measuring", "searching", "writing"], estimate.Stages.Select(s => s.Stage));
        long kvGrowth = ResourceEstimate.RuntimeBytes(deeper) - ResourceEstimate.RuntimeBytes(config) + KldMeter.ForwardBytes(deeper, 256) - KldMeter.ForwardBytes(config, 256);
        Assert.Equal(estimate.Stages[0].Bytes + ResourceEstimate.RuntimeBytes(deeper) - ResourceEstimate.RuntimeBytes(config), twice.Stages[0].Bytes);
        Assert.Equal(estimate.Stages[1].Bytes + kvGrowth, twice.Stages[1].Bytes);
        Assert.True(twice.Stages[2].Bytes - estimate.Stages[2].Bytes < (1L << 30), "the knapsack's table grows by one row per tensor");
        // Writing: the meter and the chosen candidates read back and serialized once more, twice the 3-bpw output.
        Assert.Equal(2 * Allocator.BudgetForBitsPerWeight(3.0, parameters) + KldMeter.ReferenceBytes(config.VocabSize, 256, 8) + ResourceEstimate.RuntimeBytes(config),
            estimate.Stages[3].Bytes);
        Assert.Equal(estimate.MemoryBytes, estimate.Stages.Max(s => s.Bytes));
        // Encoding is the peak: the vector levels keep a second prepared Hessian of every input, in natural column order.
        Assert.Equal(estimate.Stages[0].Bytes, estimate.MemoryBytes);
        Assert.Contains(($"the {TensorEncoder.NaturalOrderHessian} of every input of one block", ResourceEstimate.PerInputPairBytes(config)), estimate.Parts);
    }

    // The data bytes the weight's scheme writes: its companion tensors' sizes in a safetensors file.
    private static long WrittenBytes(Squeeze.Weights.LinearWeight weight)
    {
        var writer = new SafetensorsWriter();
        writer.Metadata["scheme"] = new NativeTensorSink(writer).Store("w", weight).ToJsonString();
        if (writer.Count == 0)
            return 0;
        using var file = SafetensorsFile.Parse(NativeBuffer.MapTemporary(writer.FileLength(), writer.WriteTo), ownsBuffer: true);
        return file.Tensors.Sum(t => t.ByteLength);
    }

    private static List<(string Name, long[] Shape)> Matrices(ModelConfig config)
        => [.. HuggingFaceReader.ExpectedTensors(config).Where(t => t.Shape.Length == 2).Select(t => (t.Name, t.Shape))];
}
