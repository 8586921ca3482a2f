using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>A Qwen2 checkpoint of three layers with use_sliding_window, a window of 32 positions and max_window_layers 1:
/// layer 0 attends to every earlier position, layers 1 and 2 slide (transformers' Qwen2Config).</summary>
public sealed class Qwen2SlidingCheckpoint() : ArchitectureCheckpoint(Random)
{
    public const int Window = 32;

    /// <summary>The checkpoint's description, written by the fixture.</summary>
    public static RandomCheckpoint Random => new()
    {
        Architecture = "Qwen2ForCausalLM",
        ModelType = "qwen2",
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        Layers = 3,
        AttentionBias = true,
        MaxPositions = 32768,
        RopeTheta = 1_000_000,
        ExtraConfig = new Dictionary<string, JsonNode?>
        {
            ["use_sliding_window"] = true,
            ["sliding_window"] = Window,
            ["max_window_layers"] = 1,
        },
    };
}

/// <summary>
/// Qwen2's partial sliding window (use_sliding_window, sliding_window, max_window_layers): the Hugging Face checkpoint
/// and its native copy run it as transformers does, checked against <see cref="ReferenceDecoder"/>; llama.cpp's qwen2
/// has no window (its converter writes none and its graph attends to every position), so a GGUF file runs without it in
/// both runtimes, and llama.cpp agrees with Squeeze on it.
/// </summary>
public class Qwen2SlidingWindowTests(Qwen2SlidingCheckpoint qwen, ITestOutputHelper output) : IClassFixture<Qwen2SlidingCheckpoint>
{
    private const int Vocab = 32000;

    private int[] Tokens => LlamaCppAgreementTests.Tokens(qwen.Gguf("F32"));

    private float[] Reference(Func<int, int> window) => new ReferenceDecoder(Qwen2SlidingCheckpoint.Random, qwen.HuggingFace) { Window = window }.Logits(Tokens);

    /// <summary>The config reads layers 1 and 2 as sliding over 32 positions and the whole context (not capped); Squeeze's
    /// logits on the checkpoint are the reference's with the window on those layers, and differ from the reference's
    /// with it on every layer or on none.</summary>
    [Fact]
    public void Checkpoint_slides_on_the_layers_from_max_window_layers_as_transformers_does()
    {
        using var model = ModelLoader.Load(qwen.HuggingFace);
        var c = model.Config;
        Assert.Equal((Qwen2SlidingCheckpoint.Window, 1, 32768), (c.SlidingWindow, c.FirstSlidingLayer, c.ContextLength));
        Assert.Equal([false, true, true], Enumerable.Range(0, 3).Select(c.IsSlidingLayer));
        float[] squeeze = ArchitectureCheckpoint.Logits(model, Tokens);
        var exact = RuntimeAgreement.Compare(Reference(l => l >= 1 ? Qwen2SlidingCheckpoint.Window : 0), squeeze, Vocab);
        output.WriteLine($"reference (layers 1, 2 slide) vs Squeeze: {exact}");
        Assert.True(exact.MeanKld < 1e-6 && exact.SameTopShare >= 0.99, exact.ToString());
        foreach (var (what, window) in new (string, Func<int, int>)[] { ("every layer slides", _ => Qwen2SlidingCheckpoint.Window), ("no layer slides", _ => 0) })
        {
            var other = RuntimeAgreement.Compare(Reference(window), squeeze, Vocab);
            output.WriteLine($"reference ({what}) vs Squeeze: {other}");
            Assert.True(other.MeanKld > 1e-3, other.ToString());
        }
    }

    /// <summary>The GGUF file is the converter's qwen2 (no window key, the whole context): Squeeze runs it without the
    /// window, as the reference without one, and llama.cpp agrees with Squeeze on it.</summary>
    [Theory]
    [InlineData("F32")]
    [InlineData("Q4_K_M")]
    public void Gguf_runs_without_the_window_as_llama_cpp_does(string mix)
    {
        string gguf = qwen.Gguf(mix);
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Null(file.GetInteger("qwen2.attention.sliding_window"));
            Assert.Equal(32768, file.GetInteger("qwen2.context_length"));
        }
        using (var hf = ModelLoader.Load(qwen.HuggingFace))
        using (var converted = ModelLoader.Load(gguf))
            Assert.Equal(hf.Config with { SlidingWindow = 0, FirstSlidingLayer = 0 }, converted.Config);
        if (mix == "F32")
        {
            var unwindowed = RuntimeAgreement.Compare(Reference(_ => 0), ArchitectureCheckpoint.Logits(gguf, Tokens), Vocab);
            output.WriteLine($"reference (no window) vs Squeeze on the GGUF file: {unwindowed}");
            Assert.True(unwindowed.MeanKld < 1e-6, unwindowed.ToString());
        }
        qwen.AssertLlamaCppAgrees(mix, output);
    }

    /// <summary>The native copy keeps use_sliding_window and max_window_layers and runs as the checkpoint.</summary>
    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => qwen.AssertNativeRunsAlike();
}
