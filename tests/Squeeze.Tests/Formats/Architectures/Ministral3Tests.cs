using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Formats.HuggingFace;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>A Ministral 3 checkpoint (Ministral3ForCausalLM, transformers v5's config: rope_parameters with rope_theta
/// inside, no rope_theta or rope_scaling beside it): YaRN factor 4 over an original context of 64 with mscale and
/// mscale_all_dim 1 as Ministral 3's configs have them, and Llama 4's query temperature β 0.5 (the real models' is 0.1; a
/// larger one moves the logits more over 256 positions), head size 16, a separate classifier.</summary>
public sealed class Ministral3Checkpoint() : ArchitectureCheckpoint(Random)
{
    public const double Factor = 4, Beta = 0.5, Theta = 10000;
    public const int Original = 64;

    public static RandomCheckpoint Random => new()
    {
        Architecture = "Ministral3ForCausalLM",
        ModelType = "ministral3",
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        HeadDim = 16,
        MaxPositions = 256,
        OmittedKeys = ["rope_theta", "rope_scaling"],
        ExtraConfig = new Dictionary<string, JsonNode?>
        {
            ["rope_parameters"] = new JsonObject
            {
                ["rope_type"] = "yarn",
                ["rope_theta"] = Theta,
                ["factor"] = Factor,
                ["original_max_position_embeddings"] = Original,
                ["max_position_embeddings"] = 256,
                ["beta_fast"] = 32.0,
                ["beta_slow"] = 1.0,
                ["mscale"] = 1.0,
                ["mscale_all_dim"] = 1.0,
                ["llama_4_scaling_beta"] = Beta,
            },
            ["sliding_window"] = null,
        },
    };

    /// <summary>transformers' Ministral 3 as <see cref="ReferenceDecoder"/>: YaRN's frequencies, attention factor
    /// get_mscale(4, 1) / get_mscale(4, mscale_all_dim), the queries' temperature.</summary>
    public static ReferenceDecoder Reference(string directory, double mscaleAllDim = 1) => new(Random, directory)
    {
        InverseFrequencies = ReferenceDecoder.YarnFrequencies(16, Theta, Factor, Original),
        AttentionFactor = (0.1 * Math.Log(Factor) + 1) / (0.1 * mscaleAllDim * Math.Log(Factor) + 1),
        TemperatureBeta = Beta,
        TemperatureLength = Original,
    };
}

/// <summary>
/// Ministral 3 (transformers' Ministral3ForCausalLM, the language model of Mistral3ForConditionalGeneration with a
/// "ministral3" text_config) from rope_parameters through Squeeze's runtime (as transformers, checked against
/// <see cref="ReferenceDecoder"/>), GGUF (llama.cpp's mistral3 with the converter's keys) and the native format;
/// llama.cpp loads every GGUF Squeeze writes and agrees with it.
/// </summary>
public class Ministral3Tests(Ministral3Checkpoint ministral, ITestOutputHelper output) : IClassFixture<Ministral3Checkpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    private int[] Tokens => LlamaCppAgreementTests.Tokens(ministral.Gguf("F32"));

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => ministral.AssertLlamaCppAgrees(mix, output);

    /// <summary>The config is read from rope_parameters; Squeeze's logits on the checkpoint are transformers' (the reference).</summary>
    [Fact]
    public void Checkpoint_runs_as_transformers_does()
    {
        using var model = ModelLoader.Load(ministral.HuggingFace);
        var c = model.Config;
        Assert.Equal(("mistral3", RopeStyle.Interleaved, true, 4f, 64, 10000f, 1f, 0.5f, 0),
            (c.Architecture, c.RopeStyle, c.Yarn, c.RopeScalingFactor, c.RopeOriginalContext, c.RopeTheta, c.YarnLogMultiplier, c.AttentionTemperatureScale, c.SlidingWindow));
        var agreement = RuntimeAgreement.Compare(Ministral3Checkpoint.Reference(ministral.HuggingFace).Logits(Tokens), ArchitectureCheckpoint.Logits(model, Tokens), 32000);
        output.WriteLine($"reference vs Squeeze on the checkpoint: {agreement}");
        Assert.True(agreement.MeanKld < 1e-6 && agreement.SameTopShare >= 0.99, agreement.ToString());
    }

    /// <summary>The GGUF file is the converter's Ministral3Model: arch mistral3, YaRN's keys, yarn_log_multiplier
    /// (mscale_all_dim) and attention.temperature_scale (llama_4_scaling_beta); it reads back as the checkpoint's config
    /// and runs as it, bit for bit.</summary>
    [Fact]
    public void Gguf_holds_the_converters_keys_and_runs_as_the_checkpoint()
    {
        string gguf = ministral.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("mistral3", file.GetString("general.architecture"));
            Assert.Equal("yarn", file.GetString("mistral3.rope.scaling.type"));
            Assert.Equal(4.0, file.GetFloat("mistral3.rope.scaling.factor"));
            Assert.Equal(64, file.GetInteger("mistral3.rope.scaling.original_context_length"));
            Assert.Equal(1.0, file.GetFloat("mistral3.rope.scaling.yarn_log_multiplier"));
            Assert.Equal(0.5, file.GetFloat("mistral3.attention.temperature_scale"));
            Assert.Equal(10000, file.GetFloat("mistral3.rope.freq_base"));
        }
        using var hf = ModelLoader.Load(ministral.HuggingFace);
        using var converted = ModelLoader.Load(gguf);
        Assert.Equal(hf.Config, converted.Config);
        Assert.Equal(ArchitectureCheckpoint.Logits(hf, Tokens), ArchitectureCheckpoint.Logits(converted, Tokens));
    }

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => ministral.AssertNativeRunsAlike();

    /// <summary>The query temperature and YaRN's attention factor each move the logits (mean KLD > 1e-3 without them), so
    /// the agreement with llama.cpp above measures both.</summary>
    [Theory]
    [InlineData("temperature")]
    [InlineData("yarn log multiplier")]
    public void Every_option_shapes_the_logits(string option)
    {
        using var model = ModelLoader.Load(ministral.HuggingFace);
        var c = model.Config;
        var changed = option == "temperature" ? c with { AttentionTemperatureScale = 0 } : c with { YarnLogMultiplier = 0 };
        using var other = new Model(changed, model.Vocabulary, model.Tensors, model.Source, []);
        var difference = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(model, Tokens), ArchitectureCheckpoint.Logits(other, Tokens), 32000);
        output.WriteLine($"without the {option}: {difference}");
        Assert.True(difference.MeanKld > 1e-3, difference.ToString());
    }

    /// <summary>mscale_all_dim 2 (attention factor (1 + 0.1·ln 4) / (1 + 0.2·ln 4)): the checkpoint runs as transformers,
    /// and its GGUF file (yarn_log_multiplier 2) as llama.cpp runs it.</summary>
    [Fact]
    public void Other_mscale_all_dim_runs_as_transformers_and_llama_cpp()
    {
        using var dir = new TempDirectory();
        var description = Ministral3Checkpoint.Random;
        var rope = (JsonObject)description.ExtraConfig["rope_parameters"]!.DeepClone();
        rope["mscale_all_dim"] = 2.0;
        description = description with { ExtraConfig = new Dictionary<string, JsonNode?>(description.ExtraConfig) { ["rope_parameters"] = rope } };
        string hf = description.Write(dir.File("hf"));
        using (var model = ModelLoader.Load(hf))
        {
            Assert.Equal(2f, model.Config.YarnLogMultiplier);
            var agreement = RuntimeAgreement.Compare(Ministral3Checkpoint.Reference(hf, mscaleAllDim: 2).Logits(Tokens), ArchitectureCheckpoint.Logits(model, Tokens), 32000);
            output.WriteLine($"reference vs Squeeze, mscale_all_dim 2: {agreement}");
            Assert.True(agreement.MeanKld < 1e-6, agreement.ToString());
        }
        string gguf = RopeScalingTests.ConvertToF32(hf, dir.File("m2-F32.gguf"));
        LlamaCppAgreementTests.AssertAgreement(gguf, Tokens, floats: true, output);
    }
}

/// <summary>Ministral 3 as the language model of Mistral3ForConditionalGeneration (text_config of model_type
/// "ministral3"): read as the text checkpoint, bit for bit.</summary>
public class Ministral3MultimodalTests
{
    [Fact]
    public void Multimodal_checkpoint_reads_as_the_text_checkpoint()
    {
        using var dir = new TempDirectory();
        string text = Ministral3Checkpoint.Random.Write(dir.File("text"));
        string multimodal = (Ministral3Checkpoint.Random with
        {
            Multimodal = "Mistral3ForConditionalGeneration",
            MultimodalModelType = "mistral3",
            NewMultimodalNames = true,
        }).Write(dir.File("multimodal"));
        using var a = ModelLoader.Load(text);
        using var b = ModelLoader.Load(multimodal);
        Assert.Equal(a.Config, b.Config);
        Assert.NotNull(b.LeftOut);
        int[] tokens = [.. Enumerable.Range(1, 80)];
        Assert.Equal(ArchitectureCheckpoint.Logits(a, tokens), ArchitectureCheckpoint.Logits(b, tokens));
    }
}
