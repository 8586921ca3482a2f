using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>
/// KV-cache policies at full context: for stories15M (ctx 256) and stories260K (ctx 512), KL divergence against the
/// same model with the f32 cache and cache bytes per token for every standard policy, on tinystories-eval; then decode
/// tokens/s of stories15M filling its whole 256-token context one token at a time, per policy.
/// </summary>
internal static class KvSuite
{
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int chunks = Program.Option(args, "--chunks", 0);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int repetitions = Program.Option(args, "--repetitions", 5);
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- kv --chunks {chunks} --threads {threads} --repetitions {repetitions}`");
        Console.WriteLine();
        Console.WriteLine("| model | ctx | KV cache | full-precision positions | bytes/token | of f32 | mean KLD | 99% KLD | same top % | PPL (f32 cache) |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        var models = new (string Name, string Path, string? Tokenizer, int Context)[]
        {
            ("stories15M", Path.Combine(shared, "golden", "stories15M-f32.gguf"), null, 256),
            ("stories260K", Path.Combine(shared, "models", "stories260K", "stories260K.bin"), Path.Combine(shared, "models", "stories260K", "tok512.bin"), 512),
        };
        foreach (var (name, path, tokenizer, context) in models)
        {
            using var model = ModelLoader.Load(path, tokenizer);
            var options = new EvaluationOptions { ContextLength = context, MaxChunks = chunks, Threads = threads };
            var results = Evaluator.EvaluateKvCaches(model, KvCachePolicy.Standard, text, options);
            double f32 = results[0].KvCacheBytesPerToken;
            for (int i = 0; i < results.Count; i++)
            {
                var (r, policy, kl) = (results[i], KvCachePolicy.Standard[i], results[i].KlDivergence!);
                Console.WriteLine($"| {name} | {context} | `{r.KvCache}` | {Window(policy, context)} | {r.KvCacheBytesPerToken:0} | {r.KvCacheBytesPerToken / f32:0.0%} | " +
                    $"{kl.Mean:0.000000} ± {kl.MeanError:0.000000} | {kl.Percentile99:0.00000} | {kl.SameTopTokenPercent:0.00} | {r.Perplexity:0.0000} ({kl.BasePerplexity:0.0000}) |");
            }
        }

        Console.WriteLine();
        Console.WriteLine($"Decode of stories15M from an empty cache to 256 positions, one token at a time, {threads} threads; the policies take turns, one run each per round (after its own warm-up), median of {repetitions} rounds:");
        Console.WriteLine();
        Console.WriteLine("| KV cache | decode tok/s | of f32 | slowest round | fastest round |");
        Console.WriteLine("|---|---|---|---|---|");
        using var stories15M = ModelLoader.Load(models[0].Path);
        var rates = KvCachePolicy.Standard.Select(_ => new List<double>()).ToArray();
        for (int round = 0; round < repetitions; round++)
        {
            for (int i = 0; i < rates.Length; i++)
                rates[i].Add(SpeedBenchmark.Run(stories15M, threads, promptTokens: 0, decodeTokens: 256, repetitions: 1, kvCache: KvCachePolicy.Standard[i]).DecodeTokensPerSecond);
        }
        double baseline = Median(rates[0]);
        for (int i = 0; i < rates.Length; i++)
            Console.WriteLine($"| `{KvCachePolicy.Standard[i]}` | {Median(rates[i]):0} | {Median(rates[i]) / baseline:0.00} | {rates[i].Min():0} | {rates[i].Max():0} |");
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    /// <summary>Positions kept in full precision (f32, or f16 with fp=f16) at the end of a full context: the window plus the part of a group not yet quantized, and the sinks.</summary>
    private static string Window(KvCachePolicy policy, int context) => policy.Kind switch
    {
        KvCacheKind.Quantized => $"{policy.Window} (+{context - policy.Sinks - policy.Window - (context - policy.Sinks - policy.Window) / policy.Group * policy.Group} partial group), {policy.Sinks} sinks",
        KvCacheKind.Evicting => $"{policy.Window}, {policy.Sinks} sinks, keeps {Math.Round(policy.Keep * context)} of {context}",
        _ => "all",
    };
}
