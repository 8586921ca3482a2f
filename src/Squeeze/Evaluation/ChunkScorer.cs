using System.Diagnostics;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Evaluation;

/// <summary>One subject's values at one chunk's scored positions, in position order.</summary>
/// <param name="Nlls">Negative log-likelihood of each next token, in nats.</param>
/// <param name="Klds">KL(base ‖ model) at each position (empty without a base).</param>
/// <param name="DeltaP2">(p_model(next) − p_base(next))² at each position (empty without a base).</param>
/// <param name="SameTop">Positions where the model and the base rank the same token first.</param>
/// <param name="Seconds">Time the subject's forward pass took (the base's, for a subject that is the base).</param>
/// <param name="CacheBytesPerToken">Bytes per position the subject's KV cache holds after a whole chunk.</param>
public sealed record SubjectChunkScores(double[] Nlls, double[] Klds, double[] DeltaP2, int SameTop, double Seconds, double CacheBytesPerToken);

/// <summary>What scoring one chunk gives: the base's negative log-likelihoods (empty without a base) and each subject's
/// values, in the scorer's subject order.</summary>
public sealed record ChunkScores(double[] BaseNlls, IReadOnlyList<SubjectChunkScores> Subjects);

/// <summary>
/// Scores chunks of <see cref="EvaluationChunks"/> one at a time: each subject (a model and the KV-cache policy it runs
/// with) and the base model run on the chunk side by side; a subject that is the base with the f32 cache takes the
/// base's results instead of running twice. A chunk's scores depend on that chunk alone, so chunks may be scored in any
/// order, in any process holding the same models.
/// </summary>
public sealed class ChunkScorer : IDisposable
{
    private readonly Model[] models;
    private readonly bool[] isBase;
    private readonly Transformer?[] runtimes;
    private readonly Transformer? baseRuntime;
    private readonly int ctx;
    private readonly int vocab;

    /// <summary>A scorer of <paramref name="subjects"/> against <paramref name="baseModel"/> (or none), with the chunk
    /// length and threads of <paramref name="options"/>.</summary>
    public ChunkScorer(IReadOnlyList<(Model Model, KvCachePolicy Cache)> subjects, Model? baseModel, EvaluationOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(subjects);
        ArgumentNullException.ThrowIfNull(options);
        if (subjects.Count == 0)
            throw new ArgumentException("no model to evaluate", nameof(subjects));
        models = subjects.Select(s => s.Model).ToArray();
        ctx = options.ContextLength;
        vocab = models[0].Config.VocabSize;
        var runtimeOptions = new RuntimeOptions { Threads = options.Threads, ContextLength = ctx, BatchSize = ctx };
        isBase = subjects.Select(s => ReferenceEquals(s.Model, baseModel) && s.Cache.Kind == KvCacheKind.Float32).ToArray();
        runtimes = subjects.Select((s, i) => isBase[i] ? null : new Transformer(s.Model, runtimeOptions with { KvCache = s.Cache }) { Cancellation = cancellationToken }).ToArray();
        baseRuntime = baseModel is null ? null : new Transformer(baseModel, runtimeOptions) { Cancellation = cancellationToken };
    }

    /// <summary>Scores one chunk (<see cref="EvaluationChunks.Chunk"/>: <c>ctx</c> tokens, BOS first).</summary>
    public ChunkScores Score(int[] chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        if (chunk.Length != ctx)
            throw new ArgumentException($"a chunk of {ctx} tokens expected, got {chunk.Length}", nameof(chunk));
        int firstScored = ctx / 2;
        int scoredPerChunk = ctx - 1 - firstScored;
        bool compared = baseRuntime is not null;
        var logProbs = new float[vocab];
        var baseLogProbs = new float[compared ? scoredPerChunk * vocab : 0];
        var baseNlls = new double[compared ? scoredPerChunk : 0];
        double baseSeconds = 0;
        if (baseRuntime is not null)
        {
            long start = Stopwatch.GetTimestamp();
            baseRuntime.Reset();
            var baseLogits = baseRuntime.Forward(chunk, logitCount: ctx - firstScored);
            baseSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            for (int j = 0; j < scoredPerChunk; j++)
            {
                var row = baseLogProbs.AsSpan(j * vocab, vocab);
                LogSoftmax.Compute(baseLogits.Slice(j * vocab, vocab), row);
                baseNlls[j] = -row[chunk[firstScored + j + 1]];
            }
        }

        var subjects = new SubjectChunkScores[models.Length];
        for (int m = 0; m < models.Length; m++)
        {
            var nlls = new double[scoredPerChunk];
            var klds = new double[compared ? scoredPerChunk : 0];
            var deltaP2 = new double[compared ? scoredPerChunk : 0];
            int sameTop = 0;
            void Compare(int j, ReadOnlySpan<float> baseRow, ReadOnlySpan<float> row, int next)
            {
                klds[j] = Evaluator.KlDivergence(baseRow, row);
                if (ArgMax(baseRow) == ArgMax(row))
                    sameTop++;
                double deltaP = Math.Exp(row[next]) - Math.Exp(baseRow[next]);
                deltaP2[j] = deltaP * deltaP;
            }
            if (isBase[m])
            {
                for (int j = 0; j < scoredPerChunk; j++)
                {
                    var row = baseLogProbs.AsSpan(j * vocab, vocab);
                    int next = chunk[firstScored + j + 1];
                    nlls[j] = -row[next];
                    Compare(j, row, row, next);
                }
                subjects[m] = new SubjectChunkScores(nlls, klds, deltaP2, sameTop, baseSeconds, CacheBytesPerToken(baseRuntime!));
                continue;
            }
            var runtime = runtimes[m]!;
            long start = Stopwatch.GetTimestamp();
            runtime.Reset();
            var logits = runtime.Forward(chunk, logitCount: ctx - firstScored);
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            for (int j = 0; j < scoredPerChunk; j++)
            {
                int next = chunk[firstScored + j + 1];
                LogSoftmax.Compute(logits.Slice(j * vocab, vocab), logProbs);
                nlls[j] = -logProbs[next];
                if (compared)
                    Compare(j, baseLogProbs.AsSpan(j * vocab, vocab), logProbs, next);
            }
            subjects[m] = new SubjectChunkScores(nlls, klds, deltaP2, sameTop, seconds, CacheBytesPerToken(runtime));
        }
        return new ChunkScores(baseNlls, subjects);
    }

    private double CacheBytesPerToken(Transformer runtime) => (double)runtime.Cache.BytesAfter(ctx) / ctx;

    private static int ArgMax(ReadOnlySpan<float> values) => System.Numerics.Tensors.TensorPrimitives.IndexOfMax(values);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var r in runtimes)
            r?.Dispose();
        baseRuntime?.Dispose();
    }
}
