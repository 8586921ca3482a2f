using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Formats.Architectures;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.HuggingFace;

/// <summary>
/// YaRN rope scaling (Qwen 2.5's long-context configs) from config.json through Squeeze's runtime, GGUF (llama.cpp's
/// converter's keys) and the native format to llama.cpp, on a Llama (interleaved pairs) and a Qwen2 (NeoX pairs, q/k/v
/// biases) checkpoint; and the rope scalings llama.cpp cannot run, refused in one line naming the file.
/// </summary>
public class YarnRopeScalingTests(ITestOutputHelper output)
{
    /// <summary>Factor 4 over an original context of 64: with head size 16 and θ 10000 the correction range is pairs 0 … 3
    /// (β_fast 32, β_slow 1), so some pairs keep their frequency, some are interpolated and some are mixed.</summary>
    private static RandomCheckpoint Checkpoint(string architecture, JsonObject scaling) => new()
    {
        Architecture = architecture,
        ModelType = architecture == "Qwen2ForCausalLM" ? "qwen2" : "llama",
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        AttentionBias = architecture == "Qwen2ForCausalLM",
        MaxPositions = 256,
        RopeScaling = scaling,
    };

    private static JsonObject Yarn(double? betaFast = null) => betaFast is double fast
        ? new JsonObject { ["type"] = "yarn", ["factor"] = 4.0, ["original_max_position_embeddings"] = 64, ["beta_fast"] = fast, ["beta_slow"] = 2.0 }
        : new JsonObject { ["type"] = "yarn", ["factor"] = 4.0, ["original_max_position_embeddings"] = 64 };

    /// <summary>The GGUF file holds llama.cpp's yarn keys (β only when config.json gives them), llama.cpp agrees with
    /// Squeeze on it (F32 limits), and the native copy runs as the checkpoint. Without β in config.json (Qwen 2.5's
    /// configs) Squeeze reads back the checkpoint's config and logits bit for bit; with β (16, 2 here) the checkpoint and
    /// its native copy run with them, as transformers does, and the GGUF file with β 32 and 1, as llama.cpp does (its
    /// llama and qwen2 read no β key): its logits differ from the checkpoint's.</summary>
    [Theory]
    [InlineData("LlamaForCausalLM", null)]
    [InlineData("Qwen2ForCausalLM", null)]
    [InlineData("Qwen2ForCausalLM", 16.0)]
    public void Yarn_scaled_checkpoint_runs_alike_in_Squeeze_native_and_llama_cpp(string architecture, double? betaFast)
    {
        using var dir = new TempDirectory();
        string hf = Checkpoint(architecture, Yarn(betaFast)).Write(dir.File("hf"));
        string gguf = RopeScalingTests.ConvertToF32(hf, dir.File("yarn-F32.gguf"));
        string arch = architecture == "Qwen2ForCausalLM" ? "qwen2" : "llama";
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("yarn", file.GetString($"{arch}.rope.scaling.type"));
            Assert.Equal(4.0, file.GetFloat($"{arch}.rope.scaling.factor"));
            Assert.Equal(64, file.GetInteger($"{arch}.rope.scaling.original_context_length"));
            Assert.Equal(betaFast, file.GetFloat($"{arch}.rope.scaling.yarn_beta_fast"));
            Assert.Equal(betaFast is null ? null : 2.0, file.GetFloat($"{arch}.rope.scaling.yarn_beta_slow"));
        }
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf);
        using (var a = ModelLoader.Load(hf))
        using (var b = ModelLoader.Load(gguf))
        {
            Assert.True(a.Config.Yarn);
            Assert.Equal(a.Config with { YarnBetaFast = 32, YarnBetaSlow = 1 }, b.Config);
            var difference = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(a, tokens), ArchitectureCheckpoint.Logits(b, tokens), 32000);
            output.WriteLine($"checkpoint vs its GGUF file: {difference}");
            if (betaFast is null)
                Assert.Equal(0, difference.MaxAbsLogitDelta);
            else
                Assert.True(difference.MeanKld > 1e-3, difference.ToString());
            string native = dir.File("native");
            NativeModelWriter.Write(a, native);
            using var c = ModelLoader.Load(native);
            Assert.Equal(a.Config, c.Config);
            Assert.Equal(ArchitectureCheckpoint.Logits(a, tokens), ArchitectureCheckpoint.Logits(c, tokens));
        }
        LlamaCppAgreementTests.AssertAgreement(gguf, tokens, floats: true, output);
    }

    /// <summary>The same weights with linear scaling by the same factor give other logits (mean KLD > 1e-3): the
    /// agreement above measures YaRN's ramp and attention factor, not only the division.</summary>
    [Fact]
    public void Yarn_differs_from_linear_scaling()
    {
        using var dir = new TempDirectory();
        string hf = Checkpoint("LlamaForCausalLM", Yarn()).Write(dir.File("hf"));
        using var yarn = ModelLoader.Load(hf);
        using var linear = new Model(yarn.Config with { Yarn = false, RopeOriginalContext = 0 }, yarn.Vocabulary, yarn.Tensors, yarn.Source, []);
        int[] tokens = LlamaCppAgreementTests.Tokens(RopeScalingTests.ConvertToF32(hf, dir.File("yarn.gguf")));
        var difference = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(yarn, tokens), ArchitectureCheckpoint.Logits(linear, tokens), 32000);
        output.WriteLine($"yarn vs linear: {difference}");
        Assert.True(difference.MeanKld > 1e-3, difference.ToString());
    }

    /// <summary>ggml's correction range for these numbers: dimension of β rotations = 16 · ln(64 / (2πβ)) / (2 ln 10000),
    /// β_fast 32 → −1.2, floored and clamped to 0; β_slow 1 → 2.02, ceiled to 3. Pair 0 keeps its frequency, pairs 3 …
    /// 7 are divided by 4, pairs 1 and 2 lie between; cos and sin carry 1 + 0.1 ln 4.</summary>
    [Fact]
    public void Yarn_tables_follow_ggml()
    {
        using var dir = new TempDirectory();
        using var model = ModelLoader.Load(Checkpoint("LlamaForCausalLM", Yarn()).Write(dir.File("hf")));
        var (cos, sin) = Transformer.RopeTables(model, 2, deterministic: false);
        float mscale = 1 + 0.1f * MathF.Log(4);
        for (int i = 0; i < 8; i++)
        {
            double frequency = Math.Pow(10000, -2.0 * i / 16);
            float ramp = 1 - Math.Clamp((i - 0f) / 3f, 0f, 1f);
            double expected = frequency * ((1 - ramp) / 4f + ramp);
            Assert.Equal(MathF.Cos((float)expected) * mscale, cos[8 + i], 5);
            Assert.Equal(MathF.Sin((float)expected) * mscale, sin[8 + i], 5);
        }
    }

    /// <summary>Rope scalings llama.cpp cannot run as transformers does, and incomplete ones: one line naming config.json.</summary>
    [Theory]
    [InlineData("llama", "{\"type\":\"dynamic\",\"factor\":2.0}", "\"rope_scaling\" of type \"dynamic\" (NTK) is not supported: llama.cpp has no dynamic NTK scaling")]
    [InlineData("llama", "{\"type\":\"yarn\",\"factor\":4.0}", "\"rope_scaling\" of type \"yarn\" has no \"original_max_position_embeddings\"")]
    [InlineData("llama", "{\"type\":\"yarn\",\"factor\":4.0,\"original_max_position_embeddings\":64,\"attention_factor\":0.8}", "\"rope_scaling\".\"attention_factor\" is not supported")]
    [InlineData("llama", "{\"type\":\"longrope\",\"short_factor\":[1],\"long_factor\":[1]}", "\"rope_scaling\" of type \"longrope\" is not supported")]
    [InlineData("phi3", "{\"type\":\"longrope\",\"short_factor\":[1,1],\"long_factor\":[1,1,1,1]}", "\"rope_scaling\".\"short_factor\" has 2 values; the 8 rotating values of a head need 4")]
    [InlineData("phi3", "{\"type\":\"longrope\",\"short_factor\":[1,1,1,1]}", "\"rope_scaling\" of type \"longrope\" has no \"long_factor\" list")]
    [InlineData("phi3", "{\"type\":\"yarn\",\"factor\":4.0}", "\"rope_scaling\" of type \"yarn\" is not supported for Phi-3")]
    [InlineData("phi3", "no original context", "\"original_max_position_embeddings\" is missing")]
    public void Unsupported_or_incomplete_rope_scaling_is_one_line_naming_the_file(string model, string scaling, string message)
    {
        using var dir = new TempDirectory();
        var config = model == "phi3" ? Phi3Checkpoint.Random.Config() : Checkpoint("LlamaForCausalLM", Yarn()).Config();
        if (scaling == "no original context")
            config.Remove("original_max_position_embeddings");
        else
            config["rope_scaling"] = JsonNode.Parse(scaling);
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(path));
        Assert.Contains(message, e.Message);
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
