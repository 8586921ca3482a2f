using System.Text.Json.Nodes;
using Squeeze.Formats.HuggingFace;
using Squeeze.Tensors;
using Squeeze.Tests.Formats.Architectures;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats.HuggingFace;

/// <summary>
/// transformers v5's <c>rope_parameters</c> (rope_theta inside, per layer type for Gemma 3) read as the older
/// <c>rope_theta</c> + <c>rope_scaling</c> naming: the same <see cref="Squeeze.Models.ModelConfig"/>, so the same runtime,
/// GGUF and native files as the older configs, which the architecture tests prove against llama.cpp.
/// </summary>
public class RopeParametersTests
{
    /// <summary>config.json of <paramref name="description"/> with its rotary settings moved into rope_parameters.</summary>
    private static JsonObject NewNaming(RandomCheckpoint description, JsonObject parameters)
    {
        var config = description.Config();
        config.Remove("rope_theta");
        config.Remove("rope_scaling");
        config.Remove("rope_local_base_freq");
        config["rope_parameters"] = parameters;
        return config;
    }

    private static Squeeze.Models.ModelConfig Read(JsonObject config)
    {
        using var dir = new TempDirectory();
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        return HuggingFaceReader.ReadConfig(path);
    }

    private static RandomCheckpoint Checkpoint(string architecture, string modelType, double theta, JsonObject? scaling) => new()
    {
        Architecture = architecture,
        ModelType = modelType,
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        RopeTheta = theta,
        RopeScaling = scaling,
        MaxPositions = 256,
    };

    public static TheoryData<string, string, string?> Scalings => new()
    {
        { "Qwen3ForCausalLM", "qwen3", null },
        { "LlamaForCausalLM", "llama", """{"rope_type":"linear","factor":2.0}""" },
        { "LlamaForCausalLM", "llama", """{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}""" },
        { "Qwen2ForCausalLM", "qwen2", """{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":64}""" },
    };

    /// <summary>Each rotary scaling (and none: rope_parameters {"rope_type": "default", "rope_theta": …}) reads alike in
    /// both namings, the base from inside rope_parameters.</summary>
    [Theory]
    [MemberData(nameof(Scalings))]
    public void Rope_parameters_read_as_rope_theta_and_rope_scaling(string architecture, string modelType, string? scaling)
    {
        var old = Checkpoint(architecture, modelType, 500000, scaling is null ? null : JsonNode.Parse(scaling)!.AsObject());
        var parameters = scaling is null ? new JsonObject { ["rope_type"] = "default" } : JsonNode.Parse(scaling)!.AsObject();
        parameters["rope_theta"] = 500000.0;
        var a = Read(old.Config());
        var b = Read(NewNaming(old, parameters));
        Assert.Equal(500000f, b.RopeTheta);
        Assert.Equal(a, b);
    }

    /// <summary>Gemma 3's rope_parameters per layer type: the global layers' base and linear scaling from
    /// "full_attention", the sliding layers' base from "sliding_attention" — the config of
    /// <see cref="Gemma3Checkpoint"/>, whose files llama.cpp runs (<see cref="Gemma3Tests"/>).</summary>
    [Fact]
    public void Gemma3_rope_parameters_per_layer_type_read_as_the_older_keys()
    {
        var parameters = new JsonObject
        {
            ["full_attention"] = new JsonObject { ["rope_type"] = "linear", ["factor"] = 8.0, ["rope_theta"] = 1_000_000.0 },
            ["sliding_attention"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 10000.0 },
        };
        var a = Read(Gemma3Checkpoint.Random.Config());
        var b = Read(NewNaming(Gemma3Checkpoint.Random, parameters));
        Assert.Equal((1_000_000f, 8f, 10000f), (b.RopeTheta, b.RopeScalingFactor, b.SlidingRopeTheta));
        Assert.Equal(a, b);
    }

    /// <summary>What the runtime cannot run as transformers and llama.cpp do: one line naming the file.</summary>
    [Theory]
    [InlineData("qwen per layer type", "per layer type is supported for Gemma 3 only")]
    [InlineData("gemma3 scaled sliding layers", "Gemma 3's sliding layers rotate unscaled (default)")]
    [InlineData("ministral3 default", "of type \"default\" is not supported for Ministral 3 (yarn")]
    [InlineData("ministral3 mscale", "\"mscale\" is 2; llama.cpp's mistral3 takes 1")]
    [InlineData("ministral3 no beta", "has no \"llama_4_scaling_beta\"; Ministral 3 needs it")]
    [InlineData("ministral3 attention factor", "\"attention_factor\" is not supported")]
    [InlineData("not an object", "\"rope_parameters\" is 5; expected an object")]
    public void Unsupported_rope_parameters_are_one_line_naming_the_file(string what, string message)
    {
        JsonObject config;
        JsonObject MinistralRope() => (JsonObject)Ministral3Checkpoint.Random.ExtraConfig["rope_parameters"]!.DeepClone();
        switch (what)
        {
            case "qwen per layer type":
                config = NewNaming(Checkpoint("Qwen2ForCausalLM", "qwen2", 10000, null), new JsonObject
                {
                    ["full_attention"] = new JsonObject { ["rope_type"] = "default" },
                    ["sliding_attention"] = new JsonObject { ["rope_type"] = "default" },
                });
                break;
            case "gemma3 scaled sliding layers":
                config = NewNaming(Gemma3Checkpoint.Random, new JsonObject
                {
                    ["full_attention"] = new JsonObject { ["rope_type"] = "default" },
                    ["sliding_attention"] = new JsonObject { ["rope_type"] = "linear", ["factor"] = 2.0 },
                });
                break;
            case "not an object":
                config = Ministral3Checkpoint.Random.Config();
                config["rope_parameters"] = 5;
                break;
            default:
                var rope = MinistralRope();
                if (what == "ministral3 default")
                    rope["rope_type"] = "default";
                else if (what == "ministral3 mscale")
                    rope["mscale"] = 2.0;
                else if (what == "ministral3 no beta")
                    rope.Remove("llama_4_scaling_beta");
                else
                    rope["attention_factor"] = 1.0;
                config = Ministral3Checkpoint.Random.Config();
                config["rope_parameters"] = rope;
                break;
        }
        using var dir = new TempDirectory();
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        ArchitectureBadInputTests.AssertOneLine(Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(path)), path, message);
    }
}
