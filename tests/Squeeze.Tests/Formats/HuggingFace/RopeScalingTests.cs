using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tests.Tokenizers;
using Squeeze.Tensors;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.HuggingFace;

/// <summary>A tiny random Llama 3.2-style checkpoint (llama3 rope scaling, θ 500000, tied embeddings, the real Llama 3
/// tokenizer) and its F32 GGUF conversion, made once for the class.</summary>
public sealed class Llama3Checkpoint : IDisposable
{
    private readonly TempDirectory directory = new();

    public Llama3Checkpoint()
    {
        Description = Llama32;
        HuggingFace = Description.Write(directory.File("llama3-hf"));
        Gguf = RopeScalingTests.ConvertToF32(HuggingFace, directory.File("llama3-F32.gguf"));
    }

    /// <summary>The checkpoint: Llama 3.2's rope scaling and tokenizer at width 64.</summary>
    public static RandomCheckpoint Llama32 => new()
    {
        Architecture = "LlamaForCausalLM",
        ModelType = "llama",
        VocabSize = 128256,
        TokenizerDirectory = SharedData.Path("tokenizers", "hf", "llama3"),
        RopeTheta = 500000,
        TieWordEmbeddings = true,
        MaxPositions = 131072,
        RopeScaling = new JsonObject
        {
            ["rope_type"] = "llama3",
            ["factor"] = 32.0,
            ["low_freq_factor"] = 1.0,
            ["high_freq_factor"] = 4.0,
            ["original_max_position_embeddings"] = 8192,
        },
    };

    public RandomCheckpoint Description { get; }

    public string HuggingFace { get; }

    public string Gguf { get; }

    public void Dispose() => directory.Dispose();
}

/// <summary>Llama 3's and linear rope scaling, from config.json through Squeeze's runtime and GGUF to llama.cpp.</summary>
public class RopeScalingTests(Llama3Checkpoint llama3, ITestOutputHelper output) : IClassFixture<Llama3Checkpoint>
{
    /// <summary>The divisors llama.cpp's converter computes for head size 16, θ 500000, factor 32, low 1, high 4, original
    /// context 8192: wavelengths below 2048 keep their frequency, above 8192 divide it by 32, pair 4 (wavelength ≈ 4443)
    /// lies between: 1 / ((1 − s) / 32 + s), s = (8192 / 4443 − 1) / 3.</summary>
    [Fact]
    public void Llama3_factors_are_the_converters()
    {
        using var model = ModelLoader.Load(llama3.HuggingFace);
        Assert.True(model.Config.RopeFrequencyFactors);
        var factors = new float[8];
        Dequantize.Row(GgmlType.F32, model[TensorNames.RopeFrequencies].Row(0), factors);
        double wavelength = 2 * Math.PI / (1f / MathF.Pow(500000f, 8f / 16));
        double smooth = (8192 / wavelength - 1) / 3;
        Assert.Equal([1f, 1f, 1f, 1f, (float)(1 / ((1 - smooth) / 32 + smooth)), 32f, 32f, 32f], factors);
    }

    /// <summary>The GGUF file holds rope_freqs.weight as llama.cpp's converter writes it, Squeeze reads the same model
    /// back, and llama.cpp runs it as Squeeze does: same logits as the Hugging Face directory, KLD ≤ 1e-4 against llama.cpp.</summary>
    [Fact]
    public void Llama3_scaled_checkpoint_runs_alike_in_Squeeze_and_llama_cpp()
    {
        using (var file = GgufFile.Open(llama3.Gguf))
        {
            Assert.Equal(TensorNames.RopeFrequencies, file.Tensors[0].Name);
            Assert.Equal([8L], file.Tensors[0].Shape);
            Assert.Null(file.GetString("llama.rope.scaling.type"));
        }
        int[] tokens = LlamaCppAgreementTests.Tokens(llama3.Gguf);
        AssertSameLogits(llama3.HuggingFace, llama3.Gguf, tokens);
        LlamaCppAgreementTests.AssertAgreement(llama3.Gguf, tokens, floats: true, output);
    }

    /// <summary>Without the divisors the same weights give other logits, ten times the agreement limit (1e-4) and more: the test
    /// above measures the scaling.</summary>
    [Fact]
    public void Llama3_scaling_changes_the_logits()
    {
        int[] tokens = LlamaCppAgreementTests.Tokens(llama3.Gguf);
        using var scaled = ModelLoader.Load(llama3.HuggingFace);
        using var unscaled = new Model(scaled.Config with { RopeFrequencyFactors = false }, scaled.Vocabulary,
            [.. scaled.Tensors.Where(t => t.Name != TensorNames.RopeFrequencies)], scaled.Source, []);
        var a = Logits(scaled, tokens);
        var b = Logits(unscaled, tokens);
        var difference = RuntimeAgreement.Compare(a, b, scaled.Config.VocabSize);
        output.WriteLine($"scaled vs unscaled: {difference}");
        Assert.True(difference.MeanKld > 1e-3, difference.ToString());
    }

    /// <summary>The Llama 3 tokenizer (byte-level BPE, ignore_merges, 256 special tokens) in Squeeze's GGUF: llama.cpp's ids.</summary>
    [Fact]
    public void Llama3_token_ids_equal_llama_cpp()
        => LlamaCppTokenizerTests.AssertSameIds(llama3.Gguf, output);

    /// <summary>Linear scaling: rope.scaling.type "linear" and rope.scaling.factor in GGUF, positions divided by 4 in both runtimes.</summary>
    [Fact]
    public void Linear_scaled_checkpoint_runs_alike_in_Squeeze_and_llama_cpp()
    {
        using var dir = new TempDirectory();
        var description = RandomCheckpoint.Llama2 with { RopeScaling = new JsonObject { ["type"] = "linear", ["factor"] = 4.0 } };
        string hf = description.Write(dir.File("linear-hf"));
        string gguf = ConvertToF32(hf, dir.File("linear-F32.gguf"));
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("linear", file.GetString("llama.rope.scaling.type"));
            Assert.Equal(4.0, file.GetFloat("llama.rope.scaling.factor"));
        }
        using (var model = ModelLoader.Load(gguf))
            Assert.Equal(4f, model.Config.RopeScalingFactor);
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf);
        AssertSameLogits(hf, gguf, tokens);
        LlamaCppAgreementTests.AssertAgreement(gguf, tokens, floats: true, output);
    }

    /// <summary>Writes a checkpoint as GGUF F32 through <c>squeeze convert</c>'s library path.</summary>
    internal static string ConvertToF32(string source, string path)
    {
        using var model = ModelLoader.Load(source);
        GgufQuantizer.Write(model, QuantizationMix.Plan(model, QuantizationMix.F32, [], pure: false), path, importance: null, threads: 2);
        return path;
    }

    /// <summary>Squeeze on the checkpoint and on its F32 GGUF conversion: the same logits, bit for bit.</summary>
    private static void AssertSameLogits(string source, string gguf, int[] tokens)
    {
        using var a = ModelLoader.Load(source);
        using var b = ModelLoader.Load(gguf);
        Assert.Equal(a.Config, b.Config);
        Assert.Equal(Logits(a, tokens), Logits(b, tokens));
    }

    private static float[] Logits(Model model, int[] tokens)
    {
        using var transformer = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = tokens.Length });
        return transformer.Forward(tokens, tokens.Length).ToArray();
    }
}
