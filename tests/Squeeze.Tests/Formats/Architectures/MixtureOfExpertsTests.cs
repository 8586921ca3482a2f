using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>A Mixtral checkpoint: 8 experts, top 2, each expert its own w1/w2/w3 as transformers stores them.</summary>
public sealed class MixtralCheckpoint() : ArchitectureCheckpoint(new RandomCheckpoint
{
    Architecture = "MixtralForCausalLM",
    ModelType = "mixtral",
    VocabSize = 32000,
    TokenizerDirectory = SharedData.Path("models", "stories15M"),
    Experts = 8,
    ExpertsUsed = 2,
});

/// <summary>A Qwen2-MoE checkpoint: 8 experts of width 64, top 4, weights not normalised (norm_topk_prob false, as
/// llama.cpp's qwen2moe routes), a shared expert of width 128 with its sigmoid gate, q/k/v biases.</summary>
public sealed class Qwen2MoeCheckpoint() : ArchitectureCheckpoint(new RandomCheckpoint
{
    Architecture = "Qwen2MoeForCausalLM",
    ModelType = "qwen2_moe",
    VocabSize = 32000,
    TokenizerDirectory = SharedData.Path("models", "stories15M"),
    AttentionBias = true,
    Experts = 8,
    ExpertsUsed = 4,
    ExpertIntermediateSize = 64,
    SharedExpertIntermediateSize = 128,
    ExtraConfig = new Dictionary<string, JsonNode?> { ["norm_topk_prob"] = false },
});

/// <summary>A Qwen3-MoE checkpoint: 16 experts of width 64, top 8 with normalised weights, q/k norms, head_dim 32.</summary>
public sealed class Qwen3MoeCheckpoint() : ArchitectureCheckpoint(new RandomCheckpoint
{
    Architecture = "Qwen3MoeForCausalLM",
    ModelType = "qwen3_moe",
    VocabSize = 32000,
    TokenizerDirectory = SharedData.Path("models", "stories15M"),
    QkNorm = true,
    HeadDim = 32,
    Experts = 16,
    ExpertsUsed = 8,
    ExpertIntermediateSize = 64,
    ExtraConfig = new Dictionary<string, JsonNode?> { ["norm_topk_prob"] = true },
});

/// <summary>What every mixture-of-experts architecture must show: its GGUF files load in llama.cpp and run alike, the
/// experts are stored as llama.cpp's converter stores them, and the native copy runs as the checkpoint.</summary>
internal static class MixtureChecks
{
    /// <summary>The GGUF file holds the stacked 3-D expert tensors, the router in F32 and the converter's expert keys,
    /// and runs with the checkpoint's logits (F32: the same numbers up to the order of sums).</summary>
    public static void AssertStoredAsLlamaCpp(ArchitectureCheckpoint checkpoint, string arch, ITestOutputHelper output)
    {
        var d = checkpoint.Description;
        string path = checkpoint.Gguf("Q4_K_M");
        using (var file = GgufFile.Open(path))
        {
            Assert.Equal(arch, file.GetString("general.architecture"));
            Assert.Equal(d.Experts, file.GetInteger($"{arch}.expert_count"));
            Assert.Equal(d.ExpertsUsed, file.GetInteger($"{arch}.expert_used_count"));
            int expertHidden = arch == "llama" ? d.IntermediateSize : d.ExpertIntermediateSize;
            Assert.Equal(arch == "llama" ? null : expertHidden, file.GetInteger($"{arch}.expert_feed_forward_length"));
            Assert.Equal(d.SharedExpertIntermediateSize > 0 ? d.SharedExpertIntermediateSize : null, file.GetInteger($"{arch}.expert_shared_feed_forward_length"));
            Assert.True(file.TryGetTensor(TensorNames.GateExperts(0), out var gate));
            Assert.Equal([d.Experts, expertHidden, d.HiddenSize], gate.Shape);
            Assert.True(file.TryGetTensor(TensorNames.DownExperts(1), out var down));
            Assert.Equal([d.Experts, d.HiddenSize, expertHidden], down.Shape);
            Assert.True(file.TryGetTensor(TensorNames.ExpertRouter(0), out var router));
            Assert.Equal(Squeeze.Tensors.GgmlType.F32, router.Type);
            Assert.NotEqual(Squeeze.Tensors.GgmlType.F32, gate.Type);
        }
        int[] tokens = LlamaCppAgreementTests.Tokens(path);
        var agreement = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(checkpoint.HuggingFace, tokens), ArchitectureCheckpoint.Logits(checkpoint.Gguf("F32"), tokens), 32000);
        output.WriteLine($"checkpoint vs its F32 GGUF in Squeeze: {agreement}");
        Assert.True(agreement.MeanKld < 1e-9 && agreement.SameTopShare == 1, agreement.ToString());
    }
}

public class MixtralTests(MixtralCheckpoint mixtral, ITestOutputHelper output) : IClassFixture<MixtralCheckpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => mixtral.AssertLlamaCppAgrees(mix, output);

    [Fact]
    public void Experts_are_stored_as_llama_cpp_stores_them() => MixtureChecks.AssertStoredAsLlamaCpp(mixtral, "llama", output);

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => mixtral.AssertNativeRunsAlike();
}

public class Qwen2MoeTests(Qwen2MoeCheckpoint qwen, ITestOutputHelper output) : IClassFixture<Qwen2MoeCheckpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => qwen.AssertLlamaCppAgrees(mix, output);

    [Fact]
    public void Experts_are_stored_as_llama_cpp_stores_them() => MixtureChecks.AssertStoredAsLlamaCpp(qwen, "qwen2moe", output);

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => qwen.AssertNativeRunsAlike();
}

public class Qwen3MoeTests(Qwen3MoeCheckpoint qwen, ITestOutputHelper output) : IClassFixture<Qwen3MoeCheckpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => qwen.AssertLlamaCppAgrees(mix, output);

    [Fact]
    public void Experts_are_stored_as_llama_cpp_stores_them() => MixtureChecks.AssertStoredAsLlamaCpp(qwen, "qwen3moe", output);

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => qwen.AssertNativeRunsAlike();
}
