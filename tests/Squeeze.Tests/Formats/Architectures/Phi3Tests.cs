using Squeeze.Allocation;
using Squeeze.Compression;
using System.Text.Json.Nodes;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Cli;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tensors;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>A Phi-3 checkpoint in the shape of Phi-3.5-mini / Phi-4-mini: fused qkv_proj and gate_up_proj, the Llama 2
/// SentencePiece vocabulary with Phi-3's eleven added tokens, padded to 32064 rows, long-rope scaling from an original context of 256 to 1024 positions (attention factor
/// √(1 + ln 4 / ln 256)), half of each head rotating (partial_rotary_factor 0.5: 8 of 16 values), and the sliding
/// window config.json declares (which llama.cpp's phi3 disables).</summary>
public sealed class Phi3Checkpoint() : ArchitectureCheckpoint(Random)
{
    public const int OriginalContext = 256;

    /// <summary>Phi-3's added tokens, ids 32000 … 32010 (its tokenizer_config.json's added_tokens_decoder).</summary>
    public static readonly string[] AddedTokens = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
        "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"];

    public static readonly float[] ShortFactors = [1.0f, 1.1f, 1.3f, 1.6f];
    public static readonly float[] LongFactors = [1.0f, 2.0f, 6.0f, 16.0f];

    /// <summary>The checkpoint's description, written by the fixture.</summary>
    public static RandomCheckpoint Random => new()
    {
        Architecture = "Phi3ForCausalLM",
        ModelType = "phi3",
        VocabSize = 32064,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
        FusedProjections = true,
        TokenizerConfig = new JsonObject
        {
            ["added_tokens_decoder"] = new JsonObject(AddedTokens.Select((text, i) =>
                new KeyValuePair<string, JsonNode?>((32000 + i).ToString(System.Globalization.CultureInfo.InvariantCulture),
                    new JsonObject { ["content"] = text, ["special"] = true }))),
        },
        MaxPositions = 1024,
        RopeScaling = new JsonObject
        {
            ["type"] = "longrope",
            ["short_factor"] = new JsonArray([.. ShortFactors.Select(f => (JsonNode)f)]),
            ["long_factor"] = new JsonArray([.. LongFactors.Select(f => (JsonNode)f)]),
        },
        ExtraConfig = new Dictionary<string, JsonNode?>
        {
            ["original_max_position_embeddings"] = OriginalContext,
            ["partial_rotary_factor"] = 0.5,
            ["sliding_window"] = 2047,
        },
    };
}

/// <summary>
/// Phi-3 from config.json through Squeeze's runtime, GGUF (llama.cpp's phi3 keys and fused tensors) and native format;
/// llama.cpp loads every GGUF Squeeze writes and agrees with Squeeze's logits on it, with the short factors (a context
/// of the original 256 positions) and with the long ones (beyond it).
/// </summary>
public class Phi3Tests(Phi3Checkpoint phi3, ITestOutputHelper output) : IClassFixture<Phi3Checkpoint>
{
    public static TheoryData<string> Mixes => [.. ArchitectureCheckpoint.Mixes];

    [Theory]
    [MemberData(nameof(Mixes))]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => phi3.AssertLlamaCppAgrees(mix, output);

    /// <summary>320 positions: both runtimes' contexts exceed the original 256, so both rotate with the long factors and
    /// agree; Squeeze's logits at the first 256 positions then differ from the short factors' (mean KLD > 1e-3), so the
    /// two agreements measure both lists.</summary>
    [Fact]
    public void Long_factors_beyond_the_original_context_run_alike_in_llama_cpp()
    {
        string gguf = phi3.Gguf("F32");
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf, 320);
        Assert.Equal(320, tokens.Length);
        LlamaCppAgreementTests.AssertAgreement(gguf, tokens, floats: true, output);

        int vocab = Phi3Checkpoint.Random.VocabSize, inside = Phi3Checkpoint.OriginalContext;
        float[] longLogits = ArchitectureCheckpoint.Logits(gguf, tokens);
        float[] shortLogits = ArchitectureCheckpoint.Logits(gguf, tokens[..inside]);
        var difference = RuntimeAgreement.Compare(shortLogits, longLogits.AsSpan(0, inside * vocab), vocab);
        output.WriteLine($"short vs long factors over the first {inside} positions: {difference}");
        Assert.True(difference.MeanKld > 1e-3, difference.ToString());
    }

    /// <summary>The GGUF file is what llama.cpp's converter (Phi3MiniModel) writes: arch phi3, attn_qkv and ffn_up fused
    /// (gate rows first), rope_factors_long/short, the rotary dimension count, original context, attention factor and
    /// window keys and no rope.scaling.type; Squeeze reads back the checkpoint's config and logits, bit for bit.</summary>
    [Fact]
    public void Gguf_holds_the_converters_keys_and_fused_tensors_and_runs_as_the_checkpoint()
    {
        string gguf = phi3.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.Equal("phi3", file.GetString("general.architecture"));
            Assert.Equal(1024, file.GetInteger("phi3.context_length"));
            Assert.Equal(8, file.GetInteger("phi3.rope.dimension_count"));
            Assert.Equal(256, file.GetInteger("phi3.rope.scaling.original_context_length"));
            Assert.Equal(2047, file.GetInteger("phi3.attention.sliding_window"));
            Assert.Equal((float)Math.Sqrt(1 + Math.Log(4) / Math.Log(256)), (float)file.GetFloat("phi3.rope.scaling.attn_factor")!.Value);
            Assert.Null(file.GetString("phi3.rope.scaling.type"));
            Assert.True(file.TryGetTensor(TensorNames.QueryKeyValue(1), out var qkv));
            Assert.Equal([64L + 2 * 32, 64], qkv.Shape);
            Assert.True(file.TryGetTensor(TensorNames.Up(1), out var up));
            Assert.Equal([2L * 128, 64], up.Shape);
            Assert.False(file.TryGetTensor(TensorNames.Query(0), out _));
            Assert.False(file.TryGetTensor(TensorNames.Gate(0), out _));
            var factors = new float[4];
            Dequantize.Row(GgmlType.F32, file.Tensors.Single(t => t.Name == TensorNames.RopeFactorsLong).Row(0), factors);
            Assert.Equal(Phi3Checkpoint.LongFactors, factors);
        }
        int[] tokens = LlamaCppAgreementTests.Tokens(gguf);
        using var hf = ModelLoader.Load(phi3.HuggingFace);
        using var converted = ModelLoader.Load(gguf);
        Assert.Equal(hf.Config, converted.Config);
        Assert.Equal(ArchitectureCheckpoint.Logits(hf, tokens), ArchitectureCheckpoint.Logits(converted, tokens));
    }

    /// <summary>Q4_K_M as llama-quantize picks it for phi3: attn_qkv has its own rule (Q5_K; rows of 64 fall back to
    /// Q5_1 as llama.cpp's do), so the model's attn_q, attn_k and attn_v share that type and are fused; gate and up share
    /// ffn_up's (Q4_K, falling back to Q5_0).</summary>
    [Fact]
    public void Q4_K_M_gives_the_fused_tensors_llama_quantizes_types()
    {
        using var model = ModelLoader.Load(phi3.HuggingFace);
        var plan = QuantizationMix.Plan(model, QuantizationMix.Q4_K_M, [], pure: false);
        foreach (string name in (string[])[TensorNames.Query(0), TensorNames.Key(0), TensorNames.Value(0)])
        {
            Assert.Equal(GgmlType.Q5_1, plan[name].Type);
            Assert.StartsWith("attn_qkv (Q4_K_M) Q5_K", plan[name].Reason);
        }
        Assert.Equal(GgmlType.Q5_0, plan[TensorNames.Gate(0)].Type);
        Assert.Equal(GgmlType.Q5_0, plan[TensorNames.Up(0)].Type);
        using var file = GgufFile.Open(phi3.Gguf("Q4_K_M"));
        Assert.True(file.TryGetTensor(TensorNames.QueryKeyValue(0), out var qkv));
        Assert.Equal(GgmlType.Q5_1, qkv.Type);
    }

    /// <summary>The parts of a fused tensor in different types cannot go into one GGUF tensor: one line naming them.</summary>
    [Fact]
    public void Fused_parts_of_different_types_are_refused()
    {
        using var model = ModelLoader.Load(phi3.HuggingFace);
        using var dir = new TempDirectory();
        var e = Assert.Throws<NotSupportedException>(() => GgufModelWriter.FileLength(model, 0,
            t => t.Name == TensorNames.Value(1) ? GgmlType.Q8_0 : GgmlType.F32));
        Assert.Contains("'blk.1.attn_qkv.weight'", e.Message);
        Assert.Contains(phi3.HuggingFace, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>Without the attention factor, or with the whole head rotating (unscaled: the factor lists fit 8 rotating
    /// values), the logits differ (mean KLD > 1e-3): the agreements above measure both.</summary>
    [Theory]
    [InlineData("attention factor")]
    [InlineData("partial rotation")]
    public void Every_rotary_option_shapes_the_logits(string option)
    {
        int[] tokens = LlamaCppAgreementTests.Tokens(phi3.Gguf("F32"));
        using var model = ModelLoader.Load(phi3.HuggingFace);
        var changed = option == "attention factor" ? model.Config with { RopeAttentionFactor = 1f }
            : model.Config with { RopeDimensions = 16, LongRope = false };
        using var other = new Model(changed, model.Vocabulary,
            [.. model.Tensors.Where(t => changed.LongRope || !Squeeze.Formats.HuggingFace.HuggingFaceReader.IsComputedFromConfig(t.Name))], model.Source, []);
        var difference = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(model, tokens), ArchitectureCheckpoint.Logits(other, tokens), model.Config.VocabSize);
        output.WriteLine($"without the {option}: {difference}");
        Assert.True(difference.MeanKld > 1e-3, difference.ToString());
    }

    [Fact]
    public void Native_copy_runs_as_the_checkpoint() => phi3.AssertNativeRunsAlike();

    /// <summary><c>squeeze compress --type Q4_K_M --method gptq</c> on the checkpoint: calibration statistics for the
    /// parts of the fused tensors, a file llama.cpp loads and agrees with.</summary>
    [Fact]
    public void Gptq_compression_writes_a_file_llama_cpp_runs()
    {
        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), compressed = dir.File("phi3-gptq.gguf");
        File.WriteAllText(calib, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..20000]);
        var result = CliRunner.Run("compress", phi3.HuggingFace, "--type", "Q4_K_M", "--calib", calib, "-o", compressed, "--method", "gptq",
            "--tokens", "1024", "--ctx", "128", "--threads", "2", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var tensors = result.Json.GetProperty("tensors").EnumerateArray().ToDictionary(t => t.GetProperty("name").GetString()!);
        string[] fused = [TensorNames.Query(1), TensorNames.Key(1), TensorNames.Value(1)];
        Assert.All(fused, name => Assert.Equal("gptq", tensors[name].GetProperty("encoding").GetString()));
        Assert.Single(fused.Select(name => tensors[name].GetProperty("format").GetString()).Distinct());
        LlamaCppAgreementTests.AssertAgreement(compressed, LlamaCppAgreementTests.Tokens(compressed), floats: false, output);
    }

    /// <summary><c>squeeze compress --format native --target-bpw 4.0</c> on the checkpoint, over a few uniform levels and
    /// f16 (every default level is the budget search's tests' work; this one is about Phi-3's tensors): the native model
    /// (split tensors, long-rope factors as tensors) loads and runs.</summary>
    [Fact]
    public void Native_size_target_runs()
    {
        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), native = dir.File("phi3-4.0");
        File.WriteAllText(calib, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..20000]);
        var result = CliRunner.Run("compress", phi3.HuggingFace, "--format", "native", "--target-bpw", "4.0", "--calib", calib, "-o", native,
            "--tokens", "512", "--ctx", "64", "--refine", "0", "--threads", "2", "--json",
            "--representation", "uniform:2:64", "--representation", "uniform:3:64", "--representation", "uniform:4:64", "--representation", "f16");
        Assert.True(result.ExitCode == 0, result.Stderr);
        using (var model = ModelLoader.Load(native))
        {
            Assert.True(model.Config.LongRope);
            float[] logits = ArchitectureCheckpoint.Logits(model, LlamaCppAgreementTests.Tokens(phi3.Gguf("F32"), 64));
            Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        }
    }

    /// <summary>The GGUF candidate set makes one unit of the parts of each fused tensor and one of every other tensor;
    /// a selection that gives parts different types is refused, the evolutionary search's mutations move parts together
    /// and fit the budget, and a written file has the size the set counts.</summary>
    [Fact]
    public void Allocation_units_keep_the_parts_of_a_fused_tensor_together()
    {
        using var model = ModelLoader.Load(phi3.HuggingFace);
        using var context = Allocator.Prepare(model, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..20000], new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Rtn, CalibrationTokens = 256, ContextLength = 64, Threads = 2 },
            KldChunks = 2,
            SwapChunks = 1,
            Types = [GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.F16],
        });
        var set = context.Candidates;
        int Index(string name) => set.Tensors.Select(t => t.Name).ToList().IndexOf(name);
        var fused = set.Units.Where(u => u.Length > 1).Select(u => u.Select(i => set.Tensors[i].Name).ToArray()).ToList();
        Assert.Equal(2 * Phi3Checkpoint.Random.Layers, fused.Count);
        Assert.Contains(fused, u => u.SequenceEqual([TensorNames.Query(0), TensorNames.Key(0), TensorNames.Value(0)]));
        Assert.Contains(fused, u => u.Order().SequenceEqual(new[] { TensorNames.Gate(0), TensorNames.Up(0) }.Order()));
        Assert.Equal(set.Tensors.Count, set.Units.Sum(u => u.Length));

        int[] split = set.Smallest();
        split[Index(TensorNames.Key(1))] = 1;
        var refused = Assert.Throws<ArgumentException>(() => set.FileBytes(split));
        Assert.Contains("stored as one tensor", refused.Message, StringComparison.Ordinal);

        long budget = (set.FileBytes(set.Smallest()) + set.FileBytes(set.Largest())) / 2;
        var parent = Allocator.Knapsack(set, budget, ErrorModel.OutputError);
        var random = new Random(3);
        int moved = 0;
        for (int i = 0; i < 200; i++)
        {
            var child = EvolutionarySearch.Mutate(set, parent, budget, random, maxRaises: 2);
            if (child is null)
                continue;
            Assert.True(set.FileBytes(child) <= budget); // FileBytes checks that every unit has one index
            moved += set.Units.Count(u => u.Length > 1 && child[u[0]] != parent[u[0]]);
            parent = child;
        }
        Assert.True(moved > 0, "no mutation moved a fused tensor");
        using var dir = new TempDirectory();
        Assert.Equal(set.FileBytes(parent), set.Write(parent, dir.File("mixed.gguf")));
    }

    /// <summary><c>squeeze compress --target-bpw 8</c> to GGUF (the tiny checkpoint's vocabulary alone takes it to 5.9 bits per weight at the least): the allocation chooses one type for the parts of each
    /// fused tensor (q, k and v of attn_qkv; gate and up of ffn_up), mixes types across tensors, fits the budget, and
    /// llama.cpp loads the file and agrees with Squeeze on it.</summary>
    [Fact]
    public void Gguf_size_target_gives_the_parts_of_a_fused_tensor_one_type_and_llama_cpp_runs_it()
    {
        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), gguf = dir.File("phi3-8.gguf");
        File.WriteAllText(calib, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..20000]);
        var result = CliRunner.Run("compress", phi3.HuggingFace, "--target-bpw", "8", "--calib", calib, "-o", gguf,
            "--tokens", "512", "--ctx", "64", "--threads", "2", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var formats = result.Json.GetProperty("tensors").EnumerateArray().ToDictionary(t => t.GetProperty("name").GetString()!, t => t.GetProperty("format").GetString()!);
        for (int l = 0; l < Phi3Checkpoint.Random.Layers; l++)
        {
            Assert.Single(new[] { TensorNames.Query(l), TensorNames.Key(l), TensorNames.Value(l) }.Select(n => formats[n]).Distinct());
            Assert.Equal(formats[TensorNames.Gate(l)], formats[TensorNames.Up(l)]);
        }
        Assert.True(formats.Values.Distinct().Count() > 1, string.Join(", ", formats.Values.Distinct()));
        using (var model = ModelLoader.Load(phi3.HuggingFace))
            Assert.True(8.0 * new FileInfo(gguf).Length / model.ParameterCount <= 8);
        LlamaCppAgreementTests.AssertAgreement(gguf, LlamaCppAgreementTests.Tokens(gguf), floats: false, output);
    }
}
