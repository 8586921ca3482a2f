using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Formats.HuggingFace;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>Bad input around the added architectures: one line naming the file and the problem.</summary>
public class ArchitectureBadInputTests
{
    private static RandomCheckpoint Gemma2 => Gemma2Checkpoint.Random;

    /// <summary>A Gemma 2 config.json with <paramref name="key"/> set to <paramref name="json"/> (null removes it).</summary>
    [Theory]
    [InlineData("architectures", "[\"Gemma3ForConditionalGeneration\"]", "Gemma3ForConditionalGeneration has no \"text_config\" object")]
    [InlineData("architectures", "[\"LlavaForConditionalGeneration\"]", "architecture \"LlavaForConditionalGeneration\" is not supported")]
    [InlineData("architectures", "[\"PhiMoEForCausalLM\"]", "architecture \"PhiMoEForCausalLM\" is not supported")]
    [InlineData("hidden_activation", "\"gelu\"", "\"hidden_activation\" \"gelu\" is not supported (gelu_pytorch_tanh)")]
    [InlineData("rope_scaling", "{\"rope_type\":\"longrope\",\"factor\":4.0}", "\"rope_scaling\" of type \"longrope\" is not supported")]
    [InlineData("rope_scaling", "{\"rope_type\":\"yarn\",\"factor\":4.0}", "\"rope_scaling\" of type \"yarn\" is not supported")]
    [InlineData("layer_types", "[\"full_attention\",\"sliding_attention\"]", "only every 2-th layer global is supported")]
    [InlineData("sliding_window", "-4", "\"sliding_window\" is -4")]
    public void Bad_gemma_configs_are_one_line_naming_the_file(string key, string json, string message)
    {
        using var dir = new TempDirectory();
        var config = Gemma2.Config();
        config[key] = JsonNode.Parse(json);
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(path));
        AssertOneLine(e, path, message);
    }

    /// <summary>A Qwen2 config.json with a sliding window on layers other than those from max_window_layers on, or a bad
    /// layer count.</summary>
    [Theory]
    [InlineData("layer_types", "[\"sliding_attention\",\"full_attention\",\"full_attention\"]", "only the layers from max_window_layers (1) on may slide")]
    [InlineData("max_window_layers", "-1", "\"max_window_layers\" is -1; expected a layer count")]
    public void Bad_qwen_window_configs_are_one_line_naming_the_file(string key, string json, string message)
    {
        using var dir = new TempDirectory();
        var config = Qwen2SlidingCheckpoint.Random.Config();
        config[key] = JsonNode.Parse(json);
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        AssertOneLine(Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(path)), path, message);
    }

    /// <summary>A model_type alone that Squeeze does not know.</summary>
    [Fact]
    public void Unknown_model_type_is_named()
    {
        using var dir = new TempDirectory();
        var config = Gemma2.Config();
        config.Remove("architectures");
        config["model_type"] = "phimoe";
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        AssertOneLine(Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(path)), path, "model_type \"phimoe\" is not supported");
    }

    /// <summary>A Gemma 2 config over tensors without Gemma's feed-forward norms (a Llama layout): the missing tensor is named.</summary>
    [Fact]
    public void Config_disagreeing_with_its_tensors_is_named()
    {
        using var dir = new TempDirectory();
        string hf = (Gemma2 with { GemmaNorms = false }).Write(dir.File("hf"));
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(hf));
        AssertOneLine(e, hf, "tensor 'model.layers.0.pre_feedforward_layernorm.weight' is missing");
    }

    /// <summary>A multimodal config.json whose text_config is not the language model its class has, or is not there.</summary>
    [Theory]
    [InlineData("model_type", "\"gemma2\"", "\"text_config\".\"model_type\" is \"gemma2\"; Gemma3ForConditionalGeneration's language model is \"gemma3_text\"")]
    [InlineData("hidden_size", "-64", "\"text_config\".\"hidden_size\" is -64; expected a positive integer")]
    [InlineData(null, null, "Gemma3ForConditionalGeneration has no \"text_config\" object")]
    public void Bad_multimodal_configs_are_one_line_naming_the_file(string? key, string? json, string message)
    {
        using var dir = new TempDirectory();
        var config = Gemma3MultimodalCheckpoint.Random.Config();
        if (key is null)
            config.Remove("text_config");
        else
            config["text_config"]![key] = JsonNode.Parse(json!);
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        AssertOneLine(Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(path)), path, message);
    }

    /// <summary>A multimodal checkpoint whose text_config disagrees with its tensors: the tensor is named as the checkpoint
    /// stores it, in the file that holds it; text-model names under a multimodal config are named too.</summary>
    [Theory]
    [InlineData("hidden_size", "tensor 'language_model.model.embed_tokens.weight' has shape [32000, 64] but config.json implies [32000, 48]")]
    [InlineData("num_hidden_layers", "tensor 'language_model.model.layers.5.input_layernorm.weight' is not expected by config.json")]
    [InlineData("names", "tensor 'model.embed_tokens.weight' is neither part of Gemma3ForConditionalGeneration's language model")]
    public void Multimodal_config_disagreeing_with_its_tensors_is_named(string change, string message)
    {
        using var dir = new TempDirectory();
        var description = Gemma3MultimodalCheckpoint.Random;
        string hf = description.Write(dir.File("hf"));
        string configPath = Path.Combine(hf, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        switch (change)
        {
            case "hidden_size":
                config["text_config"]!["hidden_size"] = 48;
                break;
            case "num_hidden_layers":
                config["text_config"]!["num_hidden_layers"] = 5;
                break;
            default: // the text model's names: a Gemma3ForCausalLM checkpoint's tensors under the multimodal config
                Directory.Delete(hf, recursive: true);
                (description with { Multimodal = null }).Write(hf);
                break;
        }
        File.WriteAllText(configPath, config.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(hf));
        AssertOneLine(e, Path.Combine(hf, "model.safetensors"), message);
    }

    /// <summary>A GGUF file of an architecture Squeeze does not run.</summary>
    [Fact]
    public void Unknown_gguf_architecture_is_named()
    {
        using var dir = new TempDirectory();
        string gguf;
        using (var model = ModelLoader.Load(Gemma2.Write(dir.File("hf"))))
        {
            gguf = dir.File("phimoe.gguf");
            var writer = new GgufWriter();
            writer.AddMetadata(GgufModelMetadata.Build(model, 0).Select(e => e.Key == "general.architecture" ? new KeyValuePair<string, GgufValue>(e.Key, GgufValue.String("phimoe")) : e));
            foreach (var t in model.Tensors)
                writer.AddTensor(t.Name, t.Type, t.Shape, EncodedTensor.Copy(t).WriteData);
            writer.Write(gguf);
        }
        AssertOneLine(Assert.Throws<ModelFormatException>(() => ModelLoader.Load(gguf)), gguf, "architecture 'phimoe' is not supported");
    }

    /// <summary>A query scale llama.cpp would not use (query_pre_attn_scalar ≠ head_dim below 27B) cannot go to GGUF.</summary>
    [Fact]
    public void Gguf_writer_refuses_what_llama_cpp_would_run_otherwise()
    {
        using var dir = new TempDirectory();
        var description = Gemma2 with { ExtraConfig = new Dictionary<string, JsonNode?>(Gemma2.ExtraConfig) { ["query_pre_attn_scalar"] = 32 } };
        string hf = description.Write(dir.File("hf"));
        using var model = ModelLoader.Load(hf);
        var e = Assert.Throws<NotSupportedException>(() => GgufModelMetadata.Build(model, 0));
        AssertOneLine(e, hf, "query_pre_attn_scalar");
    }

    internal static void AssertOneLine(Exception e, string file, string message)
    {
        Assert.Contains(message, e.Message);
        Assert.Contains(file, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
