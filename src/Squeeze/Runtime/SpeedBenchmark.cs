using System.Diagnostics;
using Squeeze.Models;

namespace Squeeze.Runtime;

/// <summary>Throughput of one run: prompt evaluation (one batch of tokens) and decoding (one token at a time).</summary>
public sealed record SpeedResult(int Threads, int PromptTokens, double PromptTokensPerSecond, int DecodeTokens, double DecodeTokensPerSecond);

/// <summary>
/// Measures prompt-evaluation and decode speed as llama-bench does: a prompt of <c>promptTokens</c> random tokens
/// processed as one batch, and <c>decodeTokens</c> single-token steps, each from a cache holding <c>depth</c> tokens
/// (llama-bench's <c>-d</c>; 0: an empty cache), filled untimed before each of the two. Reports the median over
/// <c>repetitions</c> runs after one warm-up.
/// </summary>
public static class SpeedBenchmark
{
    /// <summary>Runs the warm-up and <paramref name="repetitions"/> measured runs on <paramref name="threads"/> threads with a seeded random prompt
    /// and returns the median prompt and decode rates (tokens per second).</summary>
    public static SpeedResult Run(Model model, int threads, int promptTokens, int decodeTokens, int repetitions, int seed = 42, KvCachePolicy? kvCache = null, int depth = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(depth);
        int context = depth + Math.Max(1, Math.Max(promptTokens, decodeTokens));
        var random = new Random(seed);
        var prompt = new int[promptTokens];
        for (int i = 0; i < prompt.Length; i++)
            prompt[i] = random.Next(model.Config.VocabSize);
        var prefill = new int[depth];
        for (int i = 0; i < prefill.Length; i++)
            prefill[i] = random.Next(model.Config.VocabSize);
        int batch = Math.Max(1, promptTokens);
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = threads, ContextLength = context, BatchSize = batch, KvCache = kvCache ?? KvCachePolicy.Float32 });
        void Fill()
        {
            runtime.Reset();
            for (int at = 0; at < prefill.Length; at += batch)
                runtime.Forward(prefill.AsSpan(at, Math.Min(batch, prefill.Length - at)));
        }

        var promptRates = new List<double>();
        var decodeRates = new List<double>();
        var single = new int[1];
        for (int r = 0; r <= repetitions; r++)
        {
            Fill();
            long start = Stopwatch.GetTimestamp();
            if (promptTokens > 0)
                runtime.Forward(prompt);
            double promptSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;

            Fill();
            start = Stopwatch.GetTimestamp();
            for (int i = 0; i < decodeTokens; i++)
            {
                single[0] = prompt.Length > 0 ? prompt[i % prompt.Length] : i % model.Config.VocabSize;
                runtime.Forward(single);
            }
            double decodeSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (r == 0)
                continue; // warm-up: JIT tiers, page faults of the mapped weights
            promptRates.Add(promptTokens / Math.Max(promptSeconds, 1e-9));
            decodeRates.Add(decodeTokens / Math.Max(decodeSeconds, 1e-9));
        }
        return new SpeedResult(threads, promptTokens, Median(promptRates), decodeTokens, Median(decodeRates));
    }

    /// <summary>The median of <paramref name="values"/> (the mean of the middle two for an even count).</summary>
    internal static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
