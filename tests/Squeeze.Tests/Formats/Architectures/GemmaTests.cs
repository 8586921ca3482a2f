using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tensors;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>A Gemma 2 checkpoint: layer 0 slides over 32 positions, layer 1 is global; caps small enough (5) that the
/// soft-capping of scores and logits shapes them; query_pre_attn_scalar = head_dim, as llama.cpp derives it.</summary>
public sealed class Gemma2Checkpoint() : ArchitectureCheckpoint(Random)
{
    /// <summary>The checkpoint's description, written by the fixture.</summary>
    public static RandomCheckpoint Random => new()
    {
        Architecture = "Gemma2ForCausalLM",
        ModelType = "gemma2",
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        HeadDim = 16,
        GemmaNorms = true,
        TieWordEmbeddings = true,
        HiddenAct = "gelu_pytorch_tanh",
        ExtraConfig = new Dictionary<string, JsonNode?>
        {
            ["hidden_activation"] = "gelu_pytorch_tanh",
            ["sliding_window"] = 32,
            ["query_pre_attn_scalar"] = 16,
            ["attn_logit_softcapping"] = 5.0,
            ["final_logit_softcapping"] = 5.0,
        },
    };
}

/// <summary>A Gemma 3 (text) checkpoint of six layers (five sliding over 32 positions with rotary base 10000, the sixth
/// global with base 1e6 and linear scaling 8), q/k norms, query_pre_attn_scalar = head_dim.</summary>
public sealed class Gemma3Checkpoint() : ArchitectureCheckpoint(Random)
{
    /// <summary>The checkpoint's description, written by the fixture.</summary>
    public static RandomCheckpoint Random => new()
    {
        Architecture = "Gemma3ForCausalLM",
        ModelType = "gemma3_text",
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        HeadDim = 16,
        Layers = 6,
        GemmaNorms = true,
        QkNorm = true,
        TieWordEmbeddings = true,
        RopeTheta = 1_000_000,
        HiddenAct = "gelu_pytorch_tanh",
        RopeScaling = new JsonObject { ["rope_type"] = "linear", ["factor"] = 8.0 },
        ExtraConfig = new Dictionary<string, JsonNode?>
        {
            ["hidden_activation"] = "gelu_pytorch_tanh",
            ["sliding_window"] = 32,
            ["sliding_window_pattern"] = 6,
            ["rope_local_base_freq"] = 10000.0,
            ["query_pre_attn_scalar"] = 16,
            ["attn_logit_softcapping"] = null,
            ["final_logit_softcapping"] = null,
        },
    };
}

/// <summary>
/// Gemma 2 and Gemma 3 from config.json through Squeeze's runtime, GGUF (llama.cpp's gemma2/gemma3 keys, norms stored
/// as 1 + w) and native format; llama.cpp loads every GGUF Squeeze writes and agrees with Squeeze's logits on it.
/// </summary>
public class Gemma2Tests(Gemma2Checkpoint gemma, ITestOutputHelper output) : IClassFixture<Gemma2Checkpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => gemma.AssertLlamaCppAgrees(mix, output);

    /// <summary>The GGUF file has llama.cpp's gemma2 keys and the (1 + w) norm weights; Squeeze reads back the same config
    /// and computes the same logits as on the checkpoint, bit for bit.</summary>
    [Fact]
    public void Gguf_holds_the_converters_keys_and_runs_as_the_checkpoint()
    {
        string gguf = gemma.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("gemma2", file.GetString("general.architecture"));
            Assert.Equal(32, file.GetInteger("gemma2.attention.sliding_window"));
            Assert.Equal(5.0, file.GetFloat("gemma2.attn_logit_softcapping"));
            Assert.Equal(5.0, file.GetFloat("gemma2.final_logit_softcapping"));
            Assert.Equal(16, file.GetInteger("gemma2.attention.key_length"));
            Assert.False(file.TryGetTensor(TensorNames.Output, out _));
            Assert.True(file.TryGetTensor(TensorNames.PostFeedForwardNorm(1), out _));
        }
        GemmaChecks.AssertSameAsCheckpoint(gemma, gguf);
    }

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => gemma.AssertNativeRunsAlike();

    /// <summary>The f16 and quantized KV caches run the sliding window and the attention cap: over a sequence longer than
    /// the window their logits stay within a small fraction of the 1e-3 (mean KLD) that leaving either option out moves
    /// them by (<see cref="Every_option_shapes_the_logits"/>), against the f32 cache's.</summary>
    [Theory]
    [InlineData("f16", 1e-6)]
    [InlineData("q8", 5e-5)]
    public void Compressed_caches_run_the_window_and_the_cap(string kv, double limit)
    {
        using var model = ModelLoader.Load(gemma.HuggingFace);
        int[] tokens = LlamaCppAgreementTests.Tokens(gemma.Gguf("F32"));
        Assert.True(tokens.Length > 2 * model.Config.SlidingWindow);
        using var compressed = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = tokens.Length, KvCache = KvCachePolicy.Parse(kv) });
        var difference = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(model, tokens), compressed.Forward(tokens, tokens.Length).ToArray(), model.Config.VocabSize);
        output.WriteLine($"{kv} cache against f32: {difference}");
        Assert.True(difference.MeanKld < limit, difference.ToString());
    }

    /// <summary>Each Gemma 2 option changes the logits (mean KLD > 1e-3 when it is left out), so the agreement with
    /// llama.cpp above measures all of them.</summary>
    [Theory]
    [InlineData("window")]
    [InlineData("attention cap")]
    [InlineData("logit cap")]
    [InlineData("post norms")]
    [InlineData("embedding scale")]
    public void Every_option_shapes_the_logits(string option) => GemmaChecks.AssertOptionMatters(gemma, option, output);
}

/// <summary>Gemma 3 (text), as <see cref="Gemma2Tests"/>.</summary>
public class Gemma3Tests(Gemma3Checkpoint gemma, ITestOutputHelper output) : IClassFixture<Gemma3Checkpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => gemma.AssertLlamaCppAgrees(mix, output);

    [Fact]
    public void Gguf_holds_the_converters_keys_and_runs_as_the_checkpoint()
    {
        string gguf = gemma.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("gemma3", file.GetString("general.architecture"));
            Assert.Equal(32, file.GetInteger("gemma3.attention.sliding_window"));
            Assert.Equal("linear", file.GetString("gemma3.rope.scaling.type"));
            Assert.Equal(1e6, file.GetFloat("gemma3.rope.freq_base"));
            Assert.True(file.TryGetTensor(TensorNames.QueryNorm(5), out _));
        }
        GemmaChecks.AssertSameAsCheckpoint(gemma, gguf);
    }

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => gemma.AssertNativeRunsAlike();

    [Theory]
    [InlineData("window")]
    [InlineData("local rope base")]
    [InlineData("post norms")]
    [InlineData("embedding scale")]
    public void Every_option_shapes_the_logits(string option) => GemmaChecks.AssertOptionMatters(gemma, option, output);
}

internal static class GemmaChecks
{
    /// <summary>The GGUF file reads back as the checkpoint's config, its norm weights are the checkpoint's plus 1, and
    /// Squeeze's logits on both are the same bits.</summary>
    public static void AssertSameAsCheckpoint(ArchitectureCheckpoint checkpoint, string gguf)
    {
        using var hf = ModelLoader.Load(checkpoint.HuggingFace);
        using var converted = ModelLoader.Load(gguf);
        Assert.Equal(hf.Config, converted.Config);
        using (var raw = Squeeze.Formats.Safetensors.SafetensorsFile.Open(Path.Combine(checkpoint.HuggingFace, "model.safetensors")))
        {
            var stored = new float[hf.Config.Dim];
            var loaded = new float[hf.Config.Dim];
            var t = raw.GetTensor("model.layers.0.pre_feedforward_layernorm.weight", "x");
            Dequantize.Row(t.Type, t.Row(0), stored);
            Dequantize.Row(GgmlType.F32, converted[TensorNames.FeedForwardNorm(0)].Row(0), loaded);
            Assert.Equal(stored.Select(w => w + 1f), loaded);
        }
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf);
        Assert.Equal(ArchitectureCheckpoint.Logits(hf, tokens), ArchitectureCheckpoint.Logits(converted, tokens));
    }

    /// <summary>Leaving <paramref name="option"/> out of the config (the window: widening it past the sequence) changes the logits by mean KLD > 1e-3.</summary>
    public static void AssertOptionMatters(ArchitectureCheckpoint checkpoint, string option, ITestOutputHelper output)
    {
        using var model = ModelLoader.Load(checkpoint.HuggingFace);
        var c = model.Config;
        var changed = option switch
        {
            "window" => c with { SlidingWindow = 1 << 20 }, // the same layers slide, over more positions than there are
            "attention cap" => c with { AttentionSoftCap = 0 },
            "logit cap" => c with { FinalLogitSoftCap = 0 },
            "post norms" => c with { PostNorms = false },
            "embedding scale" => c with { ScaleEmbedding = false },
            "local rope base" => c with { SlidingRopeTheta = c.RopeTheta },
            _ => throw new ArgumentException(option),
        };
        Assert.NotEqual(c, changed);
        using var other = new Model(changed, model.Vocabulary, model.Tensors, model.Source, []);
        int[] tokens = LlamaCppAgreementTests.Tokens(checkpoint.Gguf("F32"));
        var difference = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(model, tokens), ArchitectureCheckpoint.Logits(other, tokens), c.VocabSize);
        output.WriteLine($"without {option}: {difference}");
        Assert.True(difference.MeanKld > 1e-3, difference.ToString());
    }
}
