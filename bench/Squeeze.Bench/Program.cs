using System.Globalization;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>
/// The benchmark harness. Each suite prints a Markdown table for docs/BENCHMARKS.md, preceded by the command that
/// reproduces it. Suites: <c>speed</c> (prompt and decode tokens/s of stories15M per weight type against llama.cpp's
/// golden figures), <c>runtime-speed</c> (prompt and decode tokens/s of Squeeze and llama.cpp side by side in one run on
/// the same llama.cpp-quantized files of a real model's shape, per type, with decode's share of the copy bandwidth),
/// <c>decode-kernels</c> (the one-token product alone per type on 512 MB of weights: GB/s and share of the copy bandwidth), <c>golden</c> (perplexity and KLD of llama.cpp's files against the golden README), <c>mixes</c>
/// (stories15M converted by Squeeze to each named mix, against llama.cpp's same-named files), <c>calibrated</c>
/// (rtn, imatrix, GPTQ and AWQ+GPTQ files against llama.cpp's imatrix files), <c>temperature</c> (what perplexity on the
/// evaluation text rewards: the f32 model with scaled logits), <c>kv</c> (KV-cache policies: KLD, cache bytes per token,
/// decode tokens/s), <c>saved-cache</c> (saved KV caches: file bytes per token against llama.cpp's state file, KLD after loading),
/// <c>embedding-stores</c> (int8, binary, PQ and PCA stores of real MiniLM embeddings: recall@10 against bytes per vector), <c>allocation</c> (knapsack and
/// evolutionary search to byte budgets against llama.cpp's mixes), <c>zip</c> (squeeze zip against
/// gzip, xz, zstd and brotli; round trips, bits per byte, throughput, determinism), <c>embedding-rows</c> (the tied
/// embedding's rows quantized by how often their token is used: KLD), <c>codebooks</c> (uniform codes,
/// non-uniform codebooks and dense-and-sparse outliers in the runtime: KLD, perplexity, bits per weight), <c>pruning</c> (magnitude, Wanda and
/// SparseGPT at 25 %, 50 % and 2:4 against dense, structured heads and units, and the sparse products' speed), <c>lowrank</c> (activation-aware
/// against plain SVD at equal bytes, EoRA corrections of low-bit bases, low-rank layer speed), <c>lossless</c> (DFloat11, entropy-coded
/// uniform codes, rotated against unrotated uniform quantization), <c>tuning</c> (end-to-end tuning of a compressed native
/// model: norms against norms and weights, calibration text against sampled text), <c>shapes</c> (randomly initialised
/// checkpoints of TinyLlama-1.1B's, Llama-3.2-1B's and Llama-3.1-8B's shapes in a cache directory, for measuring at scale), <c>convert-speed</c> (squeeze convert against
/// llama.cpp's quantizer on such a checkpoint, per named mix), <c>quantize-speed</c> (the quantizers alone, one thread, against
/// llama.cpp's on rows of such a checkpoint, per type), <c>gptq-speed</c> (GPTQ's seconds per weight matrix at
/// TinyLlama-1.1B's shapes, per grid type and refinement passes), <c>prompts</c> (prompt compression on held-out
/// stories: the answer's NLL given the prompt compressed by each method at 2×, 3×, 5×), <c>summary</c> (today's headline figures, measured afresh by the
/// other suites' code, rewritten as the table at the top of docs/BENCHMARKS.md), <c>serve</c> (a load test of squeeze serve on loopback: requests/s,
/// tokens/s, latency percentiles, the server's overhead against the runtime's decode, memory back to idle), <c>cluster</c>
/// (one against two <c>squeeze worker</c> processes on localhost on eval and a <c>--target-bpw</c> job: speed-up, the
/// cluster's overhead and bytes per work item, the same result as one machine), <c>moe-memory</c> (GPTQ's memory on a
/// mixture of experts: the estimate at Qwen3-30B-A3B's shape, and estimate against measured peak on a smaller one),
/// <c>native-memory</c> (a native size target's estimate at the 1.1B and 8B shapes, and against a measured stories15M job),
/// <c>llama-agreement</c> (llama.cpp's logits against Squeeze's on a GGUF file too large to write in a test).
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        string suite = args.Length > 0 ? args[0] : "";
        var rest = args.Skip(1).ToArray();
        switch (suite)
        {
            case "speed":
                SpeedSuite.Run(rest);
                return 0;
            case "runtime-speed":
                RuntimeSpeedSuite.Run(rest);
                return 0;
            case "decode-kernels":
                DecodeKernelsSuite.Run(rest);
                return 0;
            case "profile":
                ProfileSuite.Run(rest);
                return 0;
            case "golden":
                GoldenSuite.Run(rest);
                return 0;
            case "mixes":
                MixesSuite.Run(rest);
                return 0;
            case "calibrated":
                CalibratedSuite.Run(rest);
                return 0;
            case "temperature":
                TemperatureSuite.Run(rest);
                return 0;
            case "kv":
                KvSuite.Run(rest);
                return 0;
            case "saved-cache":
                SavedCacheSuite.Run(rest);
                return 0;
            case "embedding-stores":
                EmbeddingStoresSuite.Run(rest);
                return 0;
            case "allocation":
                AllocationSuite.Run(rest);
                return 0;
            case "zip":
                ZipSuite.Run(rest);
                return 0;
            case "embedding-rows":
                EmbeddingRowsSuite.Run(rest);
                return 0;
            case "tuning":
                TuningSuite.Run(rest);
                return 0;
            case "native":
                NativeSuite.Run(rest);
                return 0;
            case "codebooks":
                CodebooksSuite.Run(rest);
                return 0;
            case "pruning":
                PruningSuite.Run(rest);
                return 0;
            case "lowrank":
                LowRankSuite.Run(rest);
                return 0;
            case "lossless":
                LosslessSuite.Run(rest);
                return 0;
            case "shapes":
                ShapesSuite.Run(rest);
                return 0;
            case "convert-speed":
                ConvertSpeedSuite.Run(rest);
                return 0;
            case "quantize-speed":
                QuantizeSpeedSuite.Run(rest);
                return 0;
            case "gptq-speed":
                GptqSpeedSuite.Run(rest);
                return 0;
            case "prompts":
                PromptsSuite.Run(rest);
                return 0;
            case "summary":
                SummarySuite.Run(rest);
                return 0;
            case "serve":
                ServeSuite.Run(rest);
                return 0;
            case "cluster":
                ClusterSuite.Run(rest);
                return 0;
            case "moe-memory":
                MoeMemorySuite.Run(rest);
                return 0;
            case "gguf-memory":
                GgufMemorySuite.Run(rest);
                return 0;
            case "native-memory":
                NativeMemorySuite.Run(rest);
                return 0;
            case "load-memory":
                LoadMemorySuite.Run(rest);
                return 0;
            case "llama-agreement":
                LlamaAgreementSuite.Run(rest);
                return 0;
            default:
                Console.Error.WriteLine("usage: dotnet run -c Release --project bench/Squeeze.Bench -- speed|profile|golden|mixes|calibrated|temperature|kv|saved-cache|embedding-stores|allocation|zip|native|tuning|embedding-rows|codebooks|pruning|lowrank|lossless|shapes|convert-speed|quantize-speed|gptq-speed|prompts|summary|serve|cluster|moe-memory|gguf-memory|native-memory|load-memory|llama-agreement [--shared DIR] [--repetitions N]");
                return 2;
        }
    }

    internal static string Shared(string[] args)
    {
        if (Value(args, "--shared") is { } given)
            return given;
        string? env = Environment.GetEnvironmentVariable("SQUEEZE_SHARED");
        if (!string.IsNullOrEmpty(env))
            return env;
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Squeeze.slnx")))
                return Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared"));
        }
        throw new DirectoryNotFoundException("shared data not found: pass --shared DIR or set SQUEEZE_SHARED");
    }

    internal static int Option(string[] args, string name, int fallback)
        => Value(args, name) is { } value ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;

    /// <summary>The word after option <paramref name="name"/>, or null when it is not given.</summary>
    internal static string? Value(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
