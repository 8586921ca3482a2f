using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Tests.Cli;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>Gemma 3 as Gemma 3 4B–27B are published: Gemma3ForConditionalGeneration, the <see cref="Gemma3Checkpoint"/>'s
/// language model under text_config with 8 heads of which 4 for keys and values, and every key whose value is
/// Gemma3TextConfig's default left out (head counts, rotary bases, window pattern, caps, activation, norm epsilon,
/// context, tying), as the 4B's text_config leaves them out; tensors under language_model.model.*, beside a vision
/// tower and projector.</summary>
public sealed class Gemma3MultimodalCheckpoint() : ArchitectureCheckpoint(Random)
{
    /// <summary>The checkpoint's description, written by the fixture.</summary>
    public static RandomCheckpoint Random => Gemma3Checkpoint.Random with
    {
        Multimodal = "Gemma3ForConditionalGeneration",
        MultimodalModelType = "gemma3",
        Heads = 8,
        KvHeads = 4,
        OmittedKeys =
        [
            "num_attention_heads", "num_key_value_heads", "rope_theta", "rope_local_base_freq", "sliding_window_pattern",
            "attn_logit_softcapping", "final_logit_softcapping", "hidden_act", "hidden_activation", "rms_norm_eps",
            "max_position_embeddings", "tie_word_embeddings",
        ],
    };
}

/// <summary>Mistral Small 3.1/3.2's layout: Mistral3ForConditionalGeneration, a Mistral language model under text_config
/// (head_dim apart from hidden_size / heads, no window), an untied lm_head, transformers ≥ 4.52's names
/// (model.language_model.*, lm_head.weight, model.vision_tower.*).</summary>
public sealed class Mistral3MultimodalCheckpoint() : ArchitectureCheckpoint(Random)
{
    /// <summary>The checkpoint's description, written by the fixture.</summary>
    public static RandomCheckpoint Random => new()
    {
        Architecture = "MistralForCausalLM",
        ModelType = "mistral",
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        HeadDim = 32,
        RopeTheta = 1_000_000_000,
        ExtraConfig = new Dictionary<string, JsonNode?> { ["sliding_window"] = null },
        Multimodal = "Mistral3ForConditionalGeneration",
        MultimodalModelType = "mistral3",
        NewMultimodalNames = true,
    };
}

/// <summary>
/// The language model of multimodal checkpoints, as llama.cpp's converter takes it: the text model text_config
/// describes (transformers' defaults for what it leaves out), its tensors under either of transformers' namings, the
/// vision tower and projector left out and said to be. llama.cpp loads every GGUF Squeeze writes from it and agrees.
/// </summary>
public class Gemma3MultimodalTests(Gemma3MultimodalCheckpoint gemma, ITestOutputHelper output) : IClassFixture<Gemma3MultimodalCheckpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => gemma.AssertLlamaCppAgrees(mix, output);

    /// <summary>Gemma3TextConfig's defaults fill what text_config leaves out; the GGUF file has llama.cpp's gemma3 keys
    /// for them and only the language model's tensors, and runs as the checkpoint, bit for bit.</summary>
    [Fact]
    public void Omitted_keys_take_transformers_defaults_and_the_gguf_holds_the_text_model_alone()
    {
        using var hf = ModelLoader.Load(gemma.HuggingFace);
        var c = hf.Config;
        Assert.Equal(("gemma3", 8, 4, 16), (c.Architecture, c.HeadCount, c.KvHeadCount, c.HeadDim));
        Assert.Equal((1e6f, 10000f, 6, 32), (c.RopeTheta, c.SlidingRopeTheta, c.SlidingWindowPeriod, c.SlidingWindow));
        Assert.Equal((131072, 1e-6f, true, 0f, 0f), (c.ContextLength, c.RmsNormEps, c.TiedEmbeddings, c.AttentionSoftCap, c.FinalLogitSoftCap));
        Assert.Equal(FeedForwardActivation.GeluTanh, c.Activation);

        string gguf = gemma.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("gemma3", file.GetString("general.architecture"));
            Assert.Equal(8, file.GetInteger("gemma3.attention.head_count"));
            Assert.Equal(4, file.GetInteger("gemma3.attention.head_count_kv"));
            Assert.Equal(1e6, file.GetFloat("gemma3.rope.freq_base"));
            Assert.Equal(32, file.GetInteger("gemma3.attention.sliding_window"));
            Assert.Equal(131072, file.GetInteger("gemma3.context_length"));
            Assert.Equal(hf.Tensors.Select(t => t.Name).Order(), file.Tensors.Select(t => t.Name).Order());
        }
        using var converted = ModelLoader.Load(gguf);
        Assert.Equal(c, converted.Config);
        Assert.Null(converted.LeftOut);
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf, 64);
        Assert.Equal(ArchitectureCheckpoint.Logits(hf, tokens), ArchitectureCheckpoint.Logits(converted, tokens));
    }

    /// <summary>Under transformers' old (language_model.model.*) and new (model.language_model.*) names alike, the
    /// checkpoint reads as the text checkpoint of the same config and weights: same config, same tensors, same logits bit
    /// for bit; the image part's five tensors are counted in <see cref="Model.LeftOut"/> and nowhere else.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Both_namings_read_as_the_text_checkpoint(bool newNames)
        => MultimodalChecks.AssertReadsAsTextCheckpoint(Gemma3MultimodalCheckpoint.Random with { NewMultimodalNames = newNames }, output);

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => gemma.AssertNativeRunsAlike();

    /// <summary><c>squeeze inspect</c> says the image part is left out, <c>squeeze compress --type Q4_K_M --method gptq</c>
    /// says it again and writes a file llama.cpp loads and agrees with.</summary>
    [Fact]
    public void Gptq_compression_writes_a_file_llama_cpp_runs_and_says_the_image_part_is_left_out()
    {
        var inspect = CliRunner.Run("inspect", gemma.HuggingFace, "--json");
        Assert.True(inspect.ExitCode == 0, inspect.Stderr);
        Assert.Contains("vision tower and multi-modal projector (5 tensors", inspect.Json.GetProperty("leftOut").GetString(), StringComparison.Ordinal);

        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), compressed = dir.File("gemma3-mm-gptq.gguf");
        File.WriteAllText(calib, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..20000]);
        var result = CliRunner.Run("compress", gemma.HuggingFace, "--type", "Q4_K_M", "--calib", calib, "-o", compressed, "--method", "gptq",
            "--tokens", "1024", "--ctx", "128", "--threads", "2", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Contains("note: Gemma3ForConditionalGeneration: only the language model is read", result.Stderr, StringComparison.Ordinal);
        var tensors = result.Json.GetProperty("tensors").EnumerateArray().ToDictionary(t => t.GetProperty("name").GetString()!);
        Assert.Equal("gptq", tensors[TensorNames.Query(5)].GetProperty("encoding").GetString());
        LlamaCppAgreementTests.AssertAgreement(compressed, LlamaCppAgreementTests.Tokens(compressed), floats: false, output);
    }
}

/// <summary>Mistral 3's language model, as <see cref="Gemma3MultimodalTests"/>.</summary>
public class Mistral3MultimodalTests(Mistral3MultimodalCheckpoint mistral, ITestOutputHelper output) : IClassFixture<Mistral3MultimodalCheckpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => mistral.AssertLlamaCppAgrees(mix, output);

    /// <summary>Both namings (the old one with language_model.lm_head.weight) read as the text checkpoint; the GGUF file is
    /// llama.cpp's <c>llama</c> with the head size apart from dim / heads and the separate classifier.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Both_namings_read_as_the_text_checkpoint(bool newNames)
        => MultimodalChecks.AssertReadsAsTextCheckpoint(Mistral3MultimodalCheckpoint.Random with { NewMultimodalNames = newNames }, output);

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => mistral.AssertNativeRunsAlike();

    /// <summary>text_config's window as MistralConfig reads it: null attends to every position, a number slides over that
    /// many, and none at all is the default 4096.</summary>
    [Theory]
    [InlineData("null", 0)]
    [InlineData("64", 64)]
    [InlineData(null, 4096)]
    public void Window_is_read_with_mistrals_default(string? json, int window)
    {
        using var dir = new TempDirectory();
        var config = Mistral3MultimodalCheckpoint.Random.Config();
        var text = config["text_config"]!.AsObject();
        if (json is null)
            text.Remove("sliding_window");
        else
            text["sliding_window"] = JsonNode.Parse(json);
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        Assert.Equal(window, Squeeze.Formats.HuggingFace.HuggingFaceReader.ReadConfig(path).SlidingWindow);
    }

    [Fact]
    public void Gguf_is_llamas_with_the_classifier_and_runs_as_the_checkpoint()
    {
        string gguf = mistral.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("llama", file.GetString("general.architecture"));
            Assert.Equal(32, file.GetInteger("llama.attention.key_length"));
            Assert.Equal(1e9, file.GetFloat("llama.rope.freq_base"));
            Assert.True(file.TryGetTensor(TensorNames.Output, out _));
        }
        using var hf = ModelLoader.Load(mistral.HuggingFace);
        using var converted = ModelLoader.Load(gguf);
        Assert.Equal(hf.Config, converted.Config);
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf, 64);
        Assert.Equal(ArchitectureCheckpoint.Logits(hf, tokens), ArchitectureCheckpoint.Logits(converted, tokens));
    }
}

internal static class MultimodalChecks
{
    /// <summary>The multimodal checkpoint <paramref name="description"/> and the text checkpoint of its text model (same
    /// config keys, same weights) read alike: config, tensor names and bytes, logits bit for bit; the multimodal one says
    /// what it leaves out.</summary>
    public static void AssertReadsAsTextCheckpoint(RandomCheckpoint description, ITestOutputHelper output)
    {
        using var dir = new TempDirectory();
        using var multimodal = ModelLoader.Load(description.Write(dir.File("multimodal")));
        using var text = ModelLoader.Load((description with { Multimodal = null }).Write(dir.File("text")));
        Assert.Equal(text.Config, multimodal.Config);
        Assert.Equal(text.Tensors.Select(t => t.Name), multimodal.Tensors.Select(t => t.Name));
        foreach (var (a, b) in text.Tensors.Zip(multimodal.Tensors))
        {
            Assert.Equal(a.Type, b.Type);
            Assert.Equal(a.Shape, b.Shape);
            Assert.True(Enumerable.Range(0, (int)a.Rows).All(r => a.Row(r).SequenceEqual(b.Row(r))), a.Name);
        }
        Assert.Null(text.LeftOut);
        output.WriteLine(multimodal.LeftOut);
        var image = description.StoredTensors().Where(t => t.Name.Contains("vision_tower.", StringComparison.Ordinal) || t.Name.Contains("multi_modal_projector.", StringComparison.Ordinal)).ToList();
        Assert.Equal(5, image.Count);
        Assert.Equal($"{description.Multimodal}: only the language model is read; the vision tower and multi-modal projector (5 tensors, {image.Sum(t => t.Shape.Aggregate(1L, (x, y) => x * y)):N0} parameters) are not part of this model",
            multimodal.LeftOut);
        int[] tokens = [.. text.Tokenizer.Encode(File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..400], addBos: true).Take(48)];
        Assert.Equal(ArchitectureCheckpoint.Logits(text, tokens), ArchitectureCheckpoint.Logits(multimodal, tokens));
    }
}
