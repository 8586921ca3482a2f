using System.Text.Json.Nodes;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Formats.Architectures;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Compression;

/// <summary>Calibrated compression of mixture-of-experts models: each expert calibrated on the tokens routed to it,
/// named mixes by GPTQ and imatrix whose files llama.cpp loads and runs as Squeeze does.</summary>
public class MixtureOfExpertsCompressionTests(MixtralCheckpoint mixtral, Qwen2MoeCheckpoint qwen2, Qwen3MoeCheckpoint qwen3, ITestOutputHelper output)
    : IClassFixture<MixtralCheckpoint>, IClassFixture<Qwen2MoeCheckpoint>, IClassFixture<Qwen3MoeCheckpoint>
{
    private ArchitectureCheckpoint Checkpoint(string name) => name switch
    {
        "mixtral" => mixtral,
        "qwen2moe" => qwen2,
        _ => qwen3,
    };

    /// <summary><c>compress --type Q4_K_M --method gptq|imatrix</c> on the checkpoint: every expert encoded with its own
    /// statistics (GPTQ no worse than rounding on any stacked tensor), and llama.cpp loads the file and agrees with Squeeze
    /// on it within the quantized limits; in sequential mode each block's input comes from the blocks before it as
    /// compressed (their stacked experts replaced and run).</summary>
    [Theory]
    [InlineData("mixtral", CompressionMethod.Gptq, false)]
    [InlineData("mixtral", CompressionMethod.Gptq, true)]
    [InlineData("mixtral", CompressionMethod.Imatrix, false)]
    [InlineData("qwen2moe", CompressionMethod.Gptq, false)]
    [InlineData("qwen3moe", CompressionMethod.Gptq, false)]
    public void Named_mix_loads_in_llama_cpp_and_runs_alike(string name, CompressionMethod method, bool sequential)
    {
        using var dir = new TempDirectory();
        string path = dir.File($"{name}-{method}-{sequential}.gguf");
        CompressionReport report;
        using (var model = ModelLoader.Load(Checkpoint(name).HuggingFace))
        {
            report = Compressor.Compress(model, CompressorTests.CalibrationText, new CompressionOptions
            {
                Mix = QuantizationMix.Q4_K_M,
                Method = method,
                Sequential = sequential,
                CalibrationTokens = 2048,
                ContextLength = 128,
                Threads = 2,
            }, path);
        }
        var experts = report.Tensors.Where(t => TensorNames.IsExperts(t.Name)).ToList();
        Assert.NotEmpty(experts);
        foreach (var t in experts)
        {
            output.WriteLine($"{t.Name}: {t.Format} {t.Encoding}, error {t.ErrorBefore:E3} → {t.ErrorAfter:E3}");
            Assert.Contains(method == CompressionMethod.Gptq ? "gptq" : "imatrix", t.Encoding);
            Assert.True(t.ErrorAfter <= t.ErrorBefore!.Value, $"{t.Name}: {t.ErrorAfter} after {t.ErrorBefore}");
        }
        Assert.Equal("F32", report.Tensors.Single(t => t.Name == TensorNames.ExpertRouter(0)).Format);
        LlamaCppAgreementTests.AssertAgreement(path, LlamaCppAgreementTests.Tokens(path), floats: false, output);
    }

    /// <summary><c>compress --target-bpw 6.5</c> (GGUF): the budget search gives each stacked tensor of experts one of
    /// llama.cpp's types (one type per GGUF tensor), encoded expert by expert, and llama.cpp loads the file and agrees;
    /// <c>--format native</c> refuses stacked experts in one line.</summary>
    [Fact]
    public void Size_target_gives_the_experts_a_type_and_llama_cpp_loads_the_file()
    {
        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), path = dir.File("budget.gguf");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        var result = Cli.CliRunner.Run("compress", mixtral.HuggingFace, "-o", path, "--target-bpw", "6.5", "--calib", calib, "-c", "128", "--threads", "2", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var tensors = result.Json.GetProperty("tensors").EnumerateArray().ToList();
        var experts = tensors.Where(t => TensorNames.IsExperts(t.GetProperty("name").GetString()!)).ToList();
        Assert.Equal(3 * mixtral.Description.Layers, experts.Count);
        Assert.All(experts, t => Assert.Contains("gptq", t.GetProperty("encoding").GetString()));
        LlamaCppAgreementTests.AssertAgreement(path, LlamaCppAgreementTests.Tokens(path), floats: false, output);

        var native = Cli.CliRunner.Run("compress", mixtral.HuggingFace, "-o", dir.File("native"), "--format", "native", "--target-bpw", "3", "--calib", calib, "-c", "128", "--threads", "2");
        Assert.NotEqual(0, native.ExitCode);
        Assert.Contains("holds routed experts stacked in 3-D, which no native representation stores yet", native.Stderr);
        Assert.Single(native.Stderr.Trim().Split('\n'), line => line.Contains("error", StringComparison.Ordinal));
    }

    /// <summary>Each expert's statistics hold exactly the rows of the tokens routed to it: the routing recomputed here from
    /// the feed-forward inputs and the router's weights (softmax, top k) gives every expert's token count and Σx².</summary>
    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen2moe")]
    [InlineData("qwen3moe")]
    public void Each_expert_is_calibrated_on_the_tokens_routed_to_it(string name)
    {
        using var model = ModelLoader.Load(Checkpoint(name).HuggingFace);
        var c = model.Config;
        var observer = new RecordingObserver(new ActivationCollector(collectGram: false));
        using (var transformer = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = 128 }) { Observer = observer })
        {
            int[] tokens = [.. model.Tokenizer.Encode(CompressorTests.CalibrationText[..2000], addBos: true).Take(128)];
            transformer.Forward(tokens);
        }
        for (int layer = 0; layer < c.LayerCount; layer++)
        {
            var inputs = observer.FeedForward[layer]; // [tokens][dim]
            var router = new float[c.ExpertCount * c.Dim];
            Dequantize.Tensor(model[TensorNames.ExpertRouter(layer)], router);
            var counts = new long[c.ExpertCount];
            var sums = new double[c.ExpertCount];
            foreach (var x in inputs)
            {
                var probabilities = new double[c.ExpertCount];
                for (int e = 0; e < c.ExpertCount; e++)
                {
                    double dot = 0;
                    for (int j = 0; j < c.Dim; j++)
                        dot += (double)router[e * c.Dim + j] * x[j];
                    probabilities[e] = dot;
                }
                foreach (int e in probabilities.Select((p, e) => (p, e)).OrderByDescending(pe => pe.p).ThenBy(pe => pe.e).Take(c.ExpertUsedCount).Select(pe => pe.e))
                {
                    counts[e]++;
                    sums[e] += x.Sum(v => (double)v * v);
                }
            }
            var routed = observer.Collector.Entries.Single(s => s.Layer == layer && s.Kind == LinearInput.ExpertFeedForward);
            Assert.Equal((long)inputs.Count * c.ExpertUsedCount, routed.TokenCount);
            Assert.True(counts.Count(n => n > 0) > 1, "the tokens all went to one expert");
            for (int e = 0; e < c.ExpertCount; e++)
            {
                var own = routed.Expert(e);
                Assert.Equal(counts[e], own?.TokenCount ?? 0);
                if (own is not null)
                    Assert.Equal(sums[e], own.SumSquares.Sum(), sums[e] * 1e-9);
            }
            var down = observer.Collector.Entries.Single(s => s.Layer == layer && s.Kind == LinearInput.ExpertFeedForwardDown);
            Assert.Equal(counts.Select(n => n).ToArray(), Enumerable.Range(0, c.ExpertCount).Select(e => down.Expert(e)?.TokenCount ?? 0).ToArray());
        }
    }

    /// <summary><c>squeeze calibrate --gram</c> on a mixture of experts stores each expert's statistics, and
    /// <c>compress --stats FILE</c> writes the bytes of a compress that calibrates itself on the same text.</summary>
    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen3moe")]
    public void Compress_from_a_statistics_file_equals_compress_that_calibrates(string name)
    {
        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), stats = dir.File("moe.stats"), fromFile = dir.File("from-file.gguf"), calibrated = dir.File("calibrated.gguf");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        string hf = Checkpoint(name).HuggingFace;
        var collect = Cli.CliRunner.Run("calibrate", hf, "--text", calib, "--ctx", "128", "--tokens", "1024", "--gram", "--threads", "2", "-o", stats);
        Assert.True(collect.ExitCode == 0, collect.Stderr);
        using (var model = ModelLoader.Load(hf))
        {
            var read = CalibrationFile.Read(stats, model);
            var routed = read.Entries.Where(e => e.Kind is LinearInput.ExpertFeedForward or LinearInput.ExpertFeedForwardDown).ToList();
            Assert.Equal(2 * model.Config.LayerCount, routed.Count);
            Assert.All(routed, e => Assert.Equal(e.TokenCount, e.Experts.Sum(x => x?.TokenCount ?? 0)));
            Assert.All(routed, e => Assert.True(e.Experts.Count(x => x is not null) > 1, $"layer {e.Layer} {e.Kind}: one expert"));
        }
        var a = Cli.CliRunner.Run("compress", hf, "--type", "Q4_K_M", "--method", "gptq", "--stats", stats, "--threads", "2", "-o", fromFile);
        Assert.True(a.ExitCode == 0, a.Stderr);
        var b = Cli.CliRunner.Run("compress", hf, "--type", "Q4_K_M", "--method", "gptq", "--calib", calib, "--ctx", "128", "--tokens", "1024", "--threads", "2", "-o", calibrated);
        Assert.True(b.ExitCode == 0, b.Stderr);
        Assert.Equal(File.ReadAllBytes(calibrated), File.ReadAllBytes(fromFile));
    }

    /// <summary>A mixture-of-experts config llama.cpp would run otherwise, or that disagrees with its tensors: one line
    /// naming the file.</summary>
    [Theory]
    [InlineData("qwen2moe", "norm_topk_prob", "true", "\"norm_topk_prob\" is true; llama.cpp's qwen2moe does not normalise the routing weights")]
    [InlineData("qwen3moe", "norm_topk_prob", "false", "\"norm_topk_prob\" is false; llama.cpp's qwen3moe normalises the routing weights")]
    [InlineData("qwen3moe", "num_experts_per_tok", "17", "\"num_experts_per_tok\" is 17, more than the 16 experts")]
    [InlineData("qwen3moe", "mlp_only_layers", "[1]", "\"mlp_only_layers\" is [1]; only models whose every layer is sparse are supported")]
    [InlineData("mixtral", "num_local_experts", "-2", "\"num_local_experts\" is -2; expected a positive integer")]
    public void Bad_configs_are_one_line_naming_the_file(string name, string key, string json, string message)
    {
        using var dir = new TempDirectory();
        var config = Checkpoint(name).Description.Config();
        config[key] = JsonNode.Parse(json);
        string path = dir.File("config.json");
        File.WriteAllText(path, config.ToJsonString());
        ArchitectureBadInputTests.AssertOneLine(Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(path)), path, message);
    }

    /// <summary>A config naming more experts than the checkpoint stores: the router's shape disagreeing is named.</summary>
    [Fact]
    public void Config_disagreeing_with_its_experts_is_named()
    {
        using var dir = new TempDirectory();
        string hf = mixtral.Description.Write(dir.File("hf"));
        var config = mixtral.Description.Config();
        config["num_local_experts"] = 9;
        File.WriteAllText(Path.Combine(hf, "config.json"), config.ToJsonString());
        ArchitectureBadInputTests.AssertOneLine(Assert.Throws<ModelFormatException>(() => ModelLoader.Load(hf)), Path.Combine(hf, "model.safetensors"),
            "tensor 'model.layers.0.block_sparse_moe.gate.weight' has shape [8, 64] but config.json implies [9, 64]");

    }

    // Forwards to a collector and keeps every layer's feed-forward input rows.
    private sealed class RecordingObserver(ActivationCollector collector) : IActivationObserver
    {
        public ActivationCollector Collector => collector;

        public Dictionary<int, List<float[]>> FeedForward { get; } = [];

        public void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens)
        {
            collector.Observe(layer, kind, input, tokens);
            if (kind != LinearInput.FeedForward)
                return;
            if (!FeedForward.TryGetValue(layer, out var rows))
                FeedForward[layer] = rows = [];
            int width = input.Length / tokens;
            for (int t = 0; t < tokens; t++)
                rows.Add(input.Slice(t * width, width).ToArray());
        }

        public void ObserveExpert(int layer, LinearInput kind, int expert, ReadOnlySpan<float> input, int tokens)
            => collector.ObserveExpert(layer, kind, expert, input, tokens);
    }
}
