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
    private static IReadOnlyList<EvaluationResult> Run(IReadOnlyList<(Model Model, KvCachePolicy Cache)> subjects, string text, EvaluationOptions options, Model? baseModel, IProgress<EvaluationProgress>? progress,
        CancellationToken cancellationToken)
    {
        var chunks = EvaluationChunks.Of(subjects, text, options, baseModel);
        using var scorer = new ChunkScorer(subjects, baseModel, options, cancellationToken);
        var scores = new List<ChunkScores>(chunks.Count);
        var nlls = new List<double>();
        for (int c = 0; c < chunks.Count; c++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            scores.Add(scorer.Score(chunks.Chunk(c)));
            nlls.AddRange(scores[^1].Subjects[0].Nlls);
            progress?.Report(new EvaluationProgress(c + 1, chunks.Count, Math.Exp(Mean(nlls))));
        }
        return Combine(chunks, subjects.Select(s => s.Cache).ToArray(), baseModel is not null, scores);
    }

    /// <summary>
    /// The results of an evaluation from its chunks' scores, given in chunk order (however they were computed: in this
    /// process, or as independent work items elsewhere): every per-token value is taken in chunk order and position
    /// order, so the figures are the same bits as one run over the chunks in turn. <paramref name="caches"/> are the
    /// subjects' cache policies, in the scorer's subject order.
    /// </summary>
    /// <exception cref="ArgumentException">Not one score per chunk, or scores of another number of subjects.</exception>
    public static IReadOnlyList<EvaluationResult> Combine(EvaluationChunks chunks, IReadOnlyList<KvCachePolicy> caches, bool compared, IReadOnlyList<ChunkScores> scores)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        ArgumentNullException.ThrowIfNull(caches);
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.Count != chunks.Count || scores.Any(s => s.Subjects.Count != caches.Count))
            throw new ArgumentException($"{chunks.Count} chunk scores of {caches.Count} subjects expected, got {scores.Count}", nameof(scores));
        int ctx = chunks.ContextLength;
        int scored = chunks.Count * chunks.ScoredPerChunk;
        long bytes = 0;
        for (int c = 0; c < chunks.Count; c++)
            bytes += chunks.Bytes(c);
        var baseNlls = new List<double>(compared ? scored : 0);
        foreach (var s in scores)
            baseNlls.AddRange(s.BaseNlls);
        var results = new EvaluationResult[caches.Count];
        for (int i = 0; i < caches.Count; i++)
        {
            var total = new Scores(scored, compared);
            double seconds = 0;
            foreach (var s in scores)
            {
                var subject = s.Subjects[i];
                total.Add(subject);
                seconds += subject.Seconds;
            }
            results[i] = total.Result(chunks.Count, ctx, bytes, baseNlls, seconds) with
            {
                KvCache = caches[i].ToString(),
                KvCacheBytesPerToken = scores[0].Subjects[i].CacheBytesPerToken,
            };
        }
        return results;
    }

    /// <summary>What one model accumulates over the scored positions, in chunk and position order.</summary>
    private sealed class Scores(int capacity, bool compared)
    {
        private readonly List<double> klds = new(compared ? capacity : 0);
        private readonly List<double> nlls = new(capacity);
        private long sameTop;
        private double sumDeltaP2;

        public void Add(SubjectChunkScores chunk)
        {
            nlls.AddRange(chunk.Nlls);
            if (!compared)
                return;
            klds.AddRange(chunk.Klds);
            sameTop += chunk.SameTop;
            foreach (double d in chunk.DeltaP2)
                sumDeltaP2 += d;
        }

        public EvaluationResult Result(int chunks, int ctx, long bytes, List<double> baseNlls, double seconds)
        {
            double meanNll = Mean(nlls);
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
                PerplexityError = perplexity * StandardError(nlls, meanNll),
                MeanNll = meanNll,
                BitsPerByte = nlls.Sum() / Math.Log(2) / Math.Max(1, bytes),
                Chunks = chunks,
                ContextLength = ctx,
                ScoredTokens = nlls.Count,
                TokensPerSecond = chunks * (double)ctx / Math.Max(seconds, 1e-9),
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
