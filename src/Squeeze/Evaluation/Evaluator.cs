using System.Diagnostics;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Evaluation;

/// <summary>Settings of an evaluation.</summary>
public sealed record EvaluationOptions
{
    /// <summary>Tokens per chunk (llama.cpp's <c>-c</c>).</summary>
    public int ContextLength { get; init; } = 256;

    /// <summary>Evaluate at most this many chunks; 0 means every whole chunk.</summary>
    public int MaxChunks { get; init; }

    /// <summary>Threads each model runs on.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>KV-cache policy of the evaluated models; a base model always runs with the exact f32 cache.</summary>
    public KvCachePolicy KvCache { get; init; } = KvCachePolicy.Float32;
}

/// <summary>Progress of an evaluation: chunks done out of the total, and the running perplexity.</summary>
public readonly record struct EvaluationProgress(int Chunk, int Chunks, double Perplexity);

/// <summary>
/// Perplexity, bits per byte and KL divergence by llama.cpp's method: the text is tokenized once with a leading
/// BOS; chunk i is tokens [c·i, c·i + c) (whole chunks only); its first token is replaced by BOS; the logits at
/// positions c/2 … c−2 are scored against the next token. Against a base model, both run side by side on the same
/// chunk, so no logits file is needed. As in llama.cpp, the chunk length may exceed the context length the file
/// declares (stories15M's GGUF says 128; the model was trained on 256).
/// </summary>
public static class Evaluator
{
    /// <summary>Scores <paramref name="model"/> on <paramref name="text"/>, and against <paramref name="baseModel"/> when given.</summary>
    public static EvaluationResult Evaluate(Model model, string text, EvaluationOptions? options = null, Model? baseModel = null, IProgress<EvaluationProgress>? progress = null,
        CancellationToken cancellationToken = default)
        => EvaluateMany([model], text, options, baseModel, progress, cancellationToken)[0];

    /// <summary>Scores several models on the same chunks of <paramref name="text"/>; the base model runs once per chunk
    /// for all of them. The text is tokenized with the first model's tokenizer; every model must share its vocabulary size.</summary>
    public static IReadOnlyList<EvaluationResult> EvaluateMany(IReadOnlyList<Model> models, string text, EvaluationOptions? options = null, Model? baseModel = null, IProgress<EvaluationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(models);
        options ??= new EvaluationOptions();
        return Run(models.Select(m => (m, options.KvCache)).ToArray(), text, options, baseModel, progress, cancellationToken);
    }

    /// <summary>Scores <paramref name="model"/> with each KV-cache policy against the same model with the exact f32
    /// cache (the base), all side by side on the same chunks: the KL divergence is what the cache costs.</summary>
    public static IReadOnlyList<EvaluationResult> EvaluateKvCaches(Model model, IReadOnlyList<KvCachePolicy> policies, string text, EvaluationOptions? options = null, IProgress<EvaluationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(policies);
        return Run(policies.Select(p => (model, p)).ToArray(), text, options ?? new EvaluationOptions(), model, progress, cancellationToken);
    }

    /// <summary>Each subject is a model and the cache policy it runs with; a subject that is the base model with the f32
    /// cache takes the base's results instead of running twice.</summary>
    private static EvaluationResult[] Run(IReadOnlyList<(Model Model, KvCachePolicy Cache)> subjects, string text, EvaluationOptions options, Model? baseModel, IProgress<EvaluationProgress>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (subjects.Count == 0)
            throw new ArgumentException("no model to evaluate", nameof(subjects));
        var models = subjects.Select(s => s.Model).ToArray();
        int ctx = options.ContextLength;
        if (ctx < 4)
            throw new ArgumentException($"context length {ctx} is too small: at least 4 tokens are needed to score any", nameof(options));
        var first = models[0];
        int vocab = first.Config.VocabSize;
        foreach (var m in models.Append(baseModel))
        {
            if (m is not null && m.Config.VocabSize != vocab)
                throw new ArgumentException($"{m.Source} has a vocabulary of {m.Config.VocabSize} tokens; {first.Source} has {vocab}", nameof(subjects));
        }

        int[] tokens = first.Tokenizer.Encode(text, first.Vocabulary.AddBos);
        int chunks = tokens.Length / ctx;
        if (options.MaxChunks > 0)
            chunks = Math.Min(chunks, options.MaxChunks);
        if (chunks == 0)
            throw new ArgumentException($"the text has {tokens.Length} tokens, fewer than one chunk of {ctx}", nameof(text));

        var runtimeOptions = new RuntimeOptions { Threads = options.Threads, ContextLength = ctx, BatchSize = ctx };
        bool[] isBase = subjects.Select(s => ReferenceEquals(s.Model, baseModel) && s.Cache.Kind == KvCacheKind.Float32).ToArray();
        var runtimes = subjects.Select((s, i) => isBase[i] ? null : new Transformer(s.Model, runtimeOptions with { KvCache = s.Cache }) { Cancellation = cancellationToken }).ToArray();
        using var baseRuntime = baseModel is null ? null : new Transformer(baseModel, runtimeOptions) { Cancellation = cancellationToken };
        try
        {
            int firstScored = ctx / 2;
            int scoredPerChunk = ctx - 1 - firstScored;
            var tokenByteCounts = new int[vocab];
            for (int id = 0; id < vocab; id++)
                tokenByteCounts[id] = first.Tokenizer.TokenBytes(id).Length;

            var logProbs = new float[vocab];
            var baseLogProbs = new float[scoredPerChunk * vocab];
            var baseClock = new Stopwatch();
            // A model that is the base is not run twice: it takes the base's log-probabilities and the base's clock.
            var scores = subjects.Select((s, i) => new Scores(chunks * scoredPerChunk, baseModel is not null, isBase[i] ? baseClock : new Stopwatch())).ToArray();
            var baseNlls = new List<double>(chunks * scoredPerChunk);
            long bytes = 0;
            var chunk = new int[ctx];

            for (int c = 0; c < chunks; c++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Array.Copy(tokens, c * ctx, chunk, 0, ctx);
                if (first.Vocabulary.AddBos)
                    chunk[0] = first.Vocabulary.BosId;
                for (int j = 0; j < scoredPerChunk; j++)
                    bytes += tokenByteCounts[chunk[firstScored + j + 1]];

                if (baseRuntime is not null)
                {
                    baseClock.Start();
                    baseRuntime.Reset();
                    var baseLogits = baseRuntime.Forward(chunk, logitCount: ctx - firstScored);
                    baseClock.Stop();
                    for (int j = 0; j < scoredPerChunk; j++)
                    {
                        var row = baseLogProbs.AsSpan(j * vocab, vocab);
                        LogSoftmax.Compute(baseLogits.Slice(j * vocab, vocab), row);
                        baseNlls.Add(-row[chunk[firstScored + j + 1]]);
                    }
                }

                for (int m = 0; m < runtimes.Length; m++)
                {
                    var s = scores[m];
                    if (isBase[m])
                    {
                        for (int j = 0; j < scoredPerChunk; j++)
                        {
                            var row = baseLogProbs.AsSpan(j * vocab, vocab);
                            int next = chunk[firstScored + j + 1];
                            s.Nlls.Add(-row[next]);
                            s.AddComparison(row, row, next);
                        }
                        continue;
                    }
                    s.Clock.Start();
                    runtimes[m]!.Reset();
                    var logits = runtimes[m]!.Forward(chunk, logitCount: ctx - firstScored);
                    s.Clock.Stop();
                    for (int j = 0; j < scoredPerChunk; j++)
                    {
                        int next = chunk[firstScored + j + 1];
                        LogSoftmax.Compute(logits.Slice(j * vocab, vocab), logProbs);
                        s.Nlls.Add(-logProbs[next]);
                        if (baseRuntime is not null)
                            s.AddComparison(baseLogProbs.AsSpan(j * vocab, vocab), logProbs, next);
                    }
                }
                progress?.Report(new EvaluationProgress(c + 1, chunks, Math.Exp(Mean(scores[0].Nlls))));
            }

            return scores.Select((s, i) => s.Result(chunks, ctx, bytes, baseNlls) with
            {
                KvCache = subjects[i].Cache.ToString(),
                KvCacheBytesPerToken = (double)(runtimes[i] ?? baseRuntime)!.Cache.BytesAfter(ctx) / ctx,
            }).ToArray();
        }
        finally
        {
            foreach (var r in runtimes)
                r?.Dispose();
        }
    }

    /// <summary>What one model accumulates over the scored positions.</summary>
    private sealed class Scores(int capacity, bool compared, Stopwatch clock)
    {
        private readonly List<double> klds = new(compared ? capacity : 0);
        private long sameTop;
        private double sumDeltaP2;

        public List<double> Nlls { get; } = new(capacity);

        public Stopwatch Clock { get; } = clock;

        public void AddComparison(ReadOnlySpan<float> baseRow, ReadOnlySpan<float> row, int next)
        {
            klds.Add(KlDivergence(baseRow, row));
            if (ArgMax(baseRow) == ArgMax(row))
                sameTop++;
            double deltaP = Math.Exp(row[next]) - Math.Exp(baseRow[next]);
            sumDeltaP2 += deltaP * deltaP;
        }

        public EvaluationResult Result(int chunks, int ctx, long bytes, List<double> baseNlls)
        {
            double meanNll = Mean(Nlls);
            double perplexity = Math.Exp(meanNll);
            KlDivergenceStats? kl = null;
            if (compared)
            {
                double meanKl = Mean(klds);
                var sorted = klds.ToArray();
                Array.Sort(sorted);
                kl = new KlDivergenceStats
                {
                    Mean = meanKl,
                    MeanError = StandardError(klds, meanKl),
                    Median = Percentile(sorted, 0.5),
                    Percentile99 = Percentile(sorted, 0.99),
                    Maximum = sorted[^1],
                    SameTopTokenPercent = 100.0 * sameTop / klds.Count,
                    RmsDeltaPPercent = 100.0 * Math.Sqrt(sumDeltaP2 / klds.Count),
                    BasePerplexity = Math.Exp(Mean(baseNlls)),
                };
            }
            return new EvaluationResult
            {
                Perplexity = perplexity,
                PerplexityError = perplexity * StandardError(Nlls, meanNll),
                MeanNll = meanNll,
                BitsPerByte = Nlls.Sum() / Math.Log(2) / Math.Max(1, bytes),
                Chunks = chunks,
                ContextLength = ctx,
                ScoredTokens = Nlls.Count,
                TokensPerSecond = chunks * (double)ctx / Math.Max(Clock.Elapsed.TotalSeconds, 1e-9),
                KlDivergence = kl,
            };
        }
    }

    /// <summary>KL(p ‖ q) = Σ p_i (log p_i − log q_i) from the log-probabilities of p (base) and q (model).</summary>
    public static double KlDivergence(ReadOnlySpan<float> baseLogProbs, ReadOnlySpan<float> logProbs)
    {
        float[] rented = System.Buffers.ArrayPool<float>.Shared.Rent(2 * baseLogProbs.Length);
        try
        {
            var p = rented.AsSpan(0, baseLogProbs.Length);
            var difference = rented.AsSpan(baseLogProbs.Length, baseLogProbs.Length);
            System.Numerics.Tensors.TensorPrimitives.Exp(baseLogProbs, p);
            System.Numerics.Tensors.TensorPrimitives.Subtract(baseLogProbs, logProbs, difference);
            return Math.Max(0, System.Numerics.Tensors.TensorPrimitives.Dot(p, difference));
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    private static int ArgMax(ReadOnlySpan<float> values) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(values);

    private static double Mean(List<double> values) => values.Count == 0 ? 0 : values.Sum() / values.Count;

    private static double StandardError(List<double> values, double mean)
    {
        if (values.Count < 2)
            return 0;
        double ss = 0;
        foreach (double v in values)
            ss += (v - mean) * (v - mean);
        return Math.Sqrt(ss / (values.Count - 1) / values.Count);
    }

    /// <summary>Linear interpolation between the closest ranks of an ascending array.</summary>
    private static double Percentile(double[] sorted, double fraction)
    {
        double rank = fraction * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }
}
