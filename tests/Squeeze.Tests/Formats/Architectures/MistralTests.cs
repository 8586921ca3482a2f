using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>A Mistral checkpoint with a sliding window of 64 positions (Mistral 7B v0.1's is 4096).</summary>
public sealed class MistralCheckpoint() : ArchitectureCheckpoint(new RandomCheckpoint
{
    Architecture = "MistralForCausalLM",
    ModelType = "mistral",
    VocabSize = 32000,
    TokenizerDirectory = SharedData.Path("models", "stories15M"),
    ExtraConfig = new Dictionary<string, JsonNode?> { ["sliding_window"] = Window },
})
{
    public const int Window = 64;
}

/// <summary>
/// Mistral as llama.cpp has it: its converter writes MistralForCausalLM as architecture <c>llama</c> without the window,
/// and llama.cpp's llama attends to every earlier position. Squeeze runs the Hugging Face checkpoint (and its native
/// copy) with the window, as transformers does, and a GGUF file as llama.cpp does.
/// </summary>
public class MistralTests(MistralCheckpoint mistral, ITestOutputHelper output) : IClassFixture<MistralCheckpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => mistral.AssertLlamaCppAgrees(mix, output);

    /// <summary>The checkpoint slides over 64 positions, the GGUF file (arch llama, no window key) does not: the logits are
    /// the same bits at the first 64 positions and differ after them.</summary>
    [Fact]
    public void Window_applies_to_the_checkpoint_and_not_to_its_gguf()
    {
        string gguf = mistral.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("llama", file.GetString("general.architecture"));
            Assert.Null(file.GetInteger("llama.attention.sliding_window"));
        }
        using (var hf = ModelLoader.Load(mistral.HuggingFace))
        using (var converted = ModelLoader.Load(gguf))
        {
            Assert.Equal(MistralCheckpoint.Window, hf.Config.SlidingWindow);
            Assert.True(hf.Config.IsSlidingLayer(0) && hf.Config.IsSlidingLayer(1));
            Assert.Equal(hf.Config with { SlidingWindow = 0 }, converted.Config);
        }
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf);
        float[] windowed = ArchitectureCheckpoint.Logits(mistral.HuggingFace, tokens);
        float[] full = ArchitectureCheckpoint.Logits(gguf, tokens);
        int vocab = 32000, inside = MistralCheckpoint.Window * vocab;
        Assert.Equal(full.AsSpan(0, inside).ToArray(), windowed.AsSpan(0, inside).ToArray());
        var beyond = RuntimeAgreement.Compare(full.AsSpan(inside), windowed.AsSpan(inside), vocab);
        output.WriteLine($"beyond the window, full vs windowed attention: {beyond}");
        Assert.True(beyond.MeanKld > 1e-3, beyond.ToString());
    }

    /// <summary>The native format keeps the window (config.json's sliding_window) and runs as the checkpoint.</summary>
    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => mistral.AssertNativeRunsAlike();
}
