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
using Squeeze.Weights;
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
    /// llama.cpp's types (one type per GGUF tensor), encoded expert by expert, and llama.cpp loads the file and agrees.</summary>
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
    }

    /// <summary><c>compress --format native --target-bpw 4.0</c> over uniform and codebook levels: every stack of experts
    /// is stored in the "experts" scheme, each expert encoded alone with its own statistics (GPTQ where the level has a
    /// grid), and the directory loads and runs in Squeeze with finite logits. (Qwen2-MoE: routed and shared experts.)</summary>
    [Theory]
    [InlineData("qwen2moe")]
    public void Native_size_target_stores_each_expert_and_runs(string name)
    {
        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), path = dir.File("native");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        var checkpoint = Checkpoint(name);
        var result = Cli.CliRunner.Run("compress", checkpoint.HuggingFace, "-o", path, "--format", "native", "--target-bpw", "4.0", "--calib", calib, "-c", "128", "--tokens", "1024",
            "--representation", "uniform:2:~64", "--representation", "uniform:3:~64", "--representation", "uniform:4:~64", "--representation", "codebook:3:64",
            "--representation", "uniform:8:~64", "--threads", "2", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var experts = result.Json.GetProperty("tensors").EnumerateArray().Where(t => TensorNames.IsExperts(t.GetProperty("name").GetString()!)).ToList();
        Assert.Equal(3 * checkpoint.Description.Layers, experts.Count);
        foreach (var t in experts)
            output.WriteLine($"{t.GetProperty("name").GetString()}: {t.GetProperty("format").GetString()} ({t.GetProperty("encoding").GetString()})");
        Assert.Contains(experts, t => t.GetProperty("encoding").GetString()!.Contains("gptq", StringComparison.Ordinal));
        int[] tokens = LlamaCppAgreementTests.Tokens(checkpoint.Gguf("F32"));
        using var model = ModelLoader.Load(path);
        var stack = Assert.IsType<ExpertStackWeight>(model.Weight(TensorNames.DownExperts(0)));
        Assert.Equal(checkpoint.Description.Experts, stack.Experts.Count);
        var logits = ArchitectureCheckpoint.Logits(model, tokens);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        output.WriteLine($"{name} native 4.0 bpw vs the checkpoint: {RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(checkpoint.HuggingFace, tokens), logits, model.Config.VocabSize)}");
    }

    /// <summary>Every 2-D weight and every expert in 8-bit uniform codes (groups of at most 32): the native directory,
    /// loaded and run in Squeeze, stays within the tolerance its representation implies of the F32 checkpoint's logits.
    /// Rounding to b-bit codes moves each weight by an error spread evenly over ±step / 2, step = (max − min) / (2^b − 1)
    /// of its group; the tolerance is the median KLD per position of the checkpoint with exactly that noise added to
    /// every weight the directory codes (a fixed seed), times 2: the product also rounds its activations to Q8_0, an
    /// error of about the same size as the weights' (1 / 254 of a block's largest magnitude against √3 / 255 of a group's
    /// RMS), which doubles the variance of the output's error and so, to second order, the KLD. The median, not the mean:
    /// where a token's top-k experts are a near tie, any error may flip its routing, a jump of the output at a few
    /// positions that depends on which ties the draw hits, not on the error's size. (These random checkpoints are
    /// sensitive: a 0.5 % weight error gives KLDs near 0.01, so a first-order bound on the logits would not hold; the
    /// noise model measures that sensitivity instead of assuming it.)</summary>
    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen3moe")]
    public void Native_experts_at_8_bits_run_within_the_representation_s_tolerance(string name)
    {
        using var dir = new TempDirectory();
        string calib = dir.File("calib.txt"), path = dir.File("native");
        File.WriteAllText(calib, CompressorTests.CalibrationText);
        var checkpoint = Checkpoint(name);
        var result = Cli.CliRunner.Run("compress", checkpoint.HuggingFace, "-o", path, "--format", "native", "--representation", "uniform:8:~32", "--target-bpw", "16",
            "--calib", calib, "-c", "128", "--tokens", "512", "--threads", "2", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var experts = result.Json.GetProperty("tensors").EnumerateArray().Where(t => TensorNames.IsExperts(t.GetProperty("name").GetString()!)).ToList();
        Assert.Equal(3 * checkpoint.Description.Layers, experts.Count);
        Assert.All(experts, t => Assert.StartsWith($"experts {checkpoint.Description.Experts} × uniform b8", t.GetProperty("format").GetString()));
        int[] tokens = LlamaCppAgreementTests.Tokens(checkpoint.Gguf("F32"));
        int vocab = checkpoint.Description.VocabSize;
        using var hf = ModelLoader.Load(checkpoint.HuggingFace);
        using var native = ModelLoader.Load(path);
        Assert.Equal(3 * checkpoint.Description.Layers, native.Weights.OfType<ExpertStackWeight>().Count());
        var reference = ArchitectureCheckpoint.Logits(hf, tokens);
        var coded = RuntimeAgreement.Compare(reference, ArchitectureCheckpoint.Logits(native, tokens), vocab);
        using var noisy = WithRoundingNoise(hf, native, seed: 42);
        var noise = RuntimeAgreement.Compare(reference, ArchitectureCheckpoint.Logits(noisy, tokens), vocab);
        double codedMedian = MedianKld(reference, ArchitectureCheckpoint.Logits(native, tokens), vocab);
        double noiseMedian = MedianKld(reference, ArchitectureCheckpoint.Logits(noisy, tokens), vocab);
        output.WriteLine($"{name}: native {coded}, median KLD {codedMedian:E3}; rounding noise {noise}, median KLD {noiseMedian:E3}");
        Assert.True(codedMedian <= 2 * noiseMedian, $"median KLD {codedMedian} above twice the rounding noise's {noiseMedian}");
    }

    // The median over positions of KL(p ‖ q), p and q the softmax of each position's logits ([positions, vocab]).
    private static double MedianKld(float[] reference, float[] candidate, int vocab)
    {
        var klds = new double[reference.Length / vocab];
        for (int p = 0; p < klds.Length; p++)
        {
            var a = reference.AsSpan(p * vocab, vocab);
            var b = candidate.AsSpan(p * vocab, vocab);
            double maxA = double.NegativeInfinity, maxB = double.NegativeInfinity, sumA = 0, sumB = 0;
            for (int i = 0; i < vocab; i++)
            {
                maxA = Math.Max(maxA, a[i]);
                maxB = Math.Max(maxB, b[i]);
            }
            for (int i = 0; i < vocab; i++)
            {
                sumA += Math.Exp(a[i] - maxA);
                sumB += Math.Exp(b[i] - maxB);
            }
            double kld = 0;
            for (int i = 0; i < vocab; i++)
            {
                double logP = a[i] - maxA - Math.Log(sumA), logQ = b[i] - maxB - Math.Log(sumB);
                kld += Math.Exp(logP) * (logP - logQ);
            }
            klds[p] = kld;
        }
        Array.Sort(klds);
        return klds[klds.Length / 2];
    }

    // The checkpoint with every weight that `native` stores in uniform codes (alone or as a stack of experts) moved by
    // uniform noise in ±step / 2 of its group (the scheme's group; step = (max − min) / (2^bits − 1) of the group's
    // original values), as f32 tensors.
    private static Model WithRoundingNoise(Model checkpoint, Model native, int seed)
    {
        var random = new Random(seed);
        var replacements = new Dictionary<string, (GgmlType Type, byte[] Bytes)>(StringComparer.Ordinal);
        foreach (var weight in native.Weights)
        {
            var parts = weight is ExpertStackWeight stack ? stack.Experts : [weight];
            var values = checkpoint.Weight(weight.Name).Decode(); // [experts · rows, columns]: the experts' rows in order
            int offset = 0;
            foreach (var part in parts)
            {
                var scheme = Assert.IsType<UniformWeight>(part).UniformScheme;
                int length = part.Rows * part.Columns;
                for (int g = offset; g < offset + length; g += scheme.Group)
                {
                    var group = values.AsSpan(g, scheme.Group);
                    float step = (group.ToArray().Max() - group.ToArray().Min()) / ((1 << scheme.Bits) - 1);
                    for (int k = 0; k < group.Length; k++)
                        group[k] += (float)((random.NextDouble() - 0.5) * step);
                }
                offset += length;
            }
            replacements[weight.Name] = (GgmlType.F32, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
        }
        return checkpoint.WithTensors(replacements);
    }

    /// <summary>AWQ's folding on a mixture of experts changes no output: one s for the ffn_norm output, divided into
    /// the norm and multiplied into the columns of every reader (router, routed experts' gate and up, the shared
    /// expert's gate, up and sigmoid gate), and per expert an s_e for its down, divided into its up rows: the scaled F32
    /// model routes and computes as the checkpoint, up to f32 rounding, while the scales are not all 1.</summary>
    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen2moe")]
    public void Awq_folding_on_experts_keeps_the_outputs(string name)
    {
        using var model = ModelLoader.Load(Checkpoint(name).HuggingFace);
        var stats = Calibrator.Run(model, CompressorTests.CalibrationText, new CalibrationOptions { ContextLength = 128, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        var plan = QuantizationMix.Plan(model, QuantizationMix.Q4_K_M, [], pure: false, hasImportance: true);
        var run = new Compressor.Run(model, new CompressionOptions { Method = CompressionMethod.AwqGptq, Threads = 2 }, null);
        var scaled = new Dictionary<string, (GgmlType Type, byte[] Bytes)>(StringComparer.Ordinal);
        for (int l = 0; l < model.Config.LayerCount; l++)
        {
            run.ApplyAwq(l, stats.Entries.Where(e => e.Layer == l).ToDictionary(e => (e.Layer, e.Kind)), plan);
            foreach (var (tensor, replacement) in run.Replaced)
                scaled[tensor] = replacement;
            run.ReleaseLayer();
        }
        // Per layer: attention, the experts' gate/up, and one down α per expert that saw tokens.
        output.WriteLine($"{name}: α {string.Join(", ", run.AwqAlphas)}");
        Assert.Contains(run.AwqAlphas, a => a > 0);
        var names = new List<string> { TensorNames.FeedForwardNorm(0), TensorNames.ExpertRouter(0), TensorNames.GateExperts(0), TensorNames.UpExperts(0), TensorNames.DownExperts(0) };
        if (model.Config.SharedExpertHiddenDim > 0)
            names.AddRange([TensorNames.GateShared(0), TensorNames.UpShared(0), TensorNames.SharedExpertGate(0)]);
        foreach (string tensor in names)
            Assert.True(scaled.ContainsKey(tensor), $"{tensor} was not scaled");
        int[] tokens = LlamaCppAgreementTests.Tokens(Checkpoint(name).Gguf("F32"));
        using var transformed = model.WithTensors(scaled);
        var agreement = RuntimeAgreement.Compare(ArchitectureCheckpoint.Logits(model, tokens), ArchitectureCheckpoint.Logits(transformed, tokens), model.Config.VocabSize);
        output.WriteLine($"{name}: scaled F32 model vs the checkpoint: {agreement}");
        Assert.True(agreement.MeanKld < 1e-9 && agreement.SameTopShare == 1, agreement.ToString());
    }

    /// <summary><c>compress --method awq+gptq</c> on a mixture of experts: the file loads in llama.cpp and agrees with
    /// Squeeze on it within the quantized limits.</summary>
    [Fact]
    public void Awq_gptq_named_mix_loads_in_llama_cpp_and_runs_alike()
    {
        using var dir = new TempDirectory();
        string path = dir.File("qwen2moe-awq.gguf");
        using (var model = ModelLoader.Load(qwen2.HuggingFace))
        {
            var report = Compressor.Compress(model, CompressorTests.CalibrationText, new CompressionOptions
            {
                Mix = QuantizationMix.Q4_K_M,
                Method = CompressionMethod.AwqGptq,
                CalibrationTokens = 1024,
                ContextLength = 128,
                Threads = 2,
            }, path);
            Assert.Contains(report.AwqAlphas, a => a > 0);
            Assert.Equal("F32", report.Tensors.Single(t => t.Name == TensorNames.ExpertRouter(0)).Format);
        }
        LlamaCppAgreementTests.AssertAgreement(path, LlamaCppAgreementTests.Tokens(path), floats: false, output);
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
