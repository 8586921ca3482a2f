using Squeeze.Evaluation;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Cluster;

/// <summary>
/// Evaluation over chunks of a text: an item is one chunk's tokens (with the chunk length and the evaluated model's
/// KV-cache policy); the worker scores it with <see cref="ChunkScorer"/> on the evaluated model and the base, and sends
/// back every scored position's values, which the client merges in chunk order with <see cref="Evaluator.Combine"/>:
/// the figures are the same bits as one machine's run.
/// </summary>
internal sealed class EvaluationKind : IWorkKind
{
    public const string KindName = "eval-chunk";

    // Base: none, the evaluated model itself (with the f32 cache), or the job's second model.
    private enum BaseModel : byte { None, Same, Second }

    private readonly Lock gate = new();
    private (string Key, ChunkScorer Scorer)? cached;

    public string Name => KindName;

    public static Action<BinaryWriter> Request(int[] chunk, string cache, bool sameBase, bool separateBase) => w =>
    {
        w.Write(chunk.Length);
        w.Write(cache);
        w.Write((byte)(separateBase ? BaseModel.Second : sameBase ? BaseModel.Same : BaseModel.None));
        w.Ints(chunk);
    };

    public Payload Run(IReadOnlyList<Model> models, Payload payload, int partBytes, int threads, CancellationToken cancellationToken)
    {
        var (ctx, cache, baseKind, chunk) = payload.Read(r => (r.ReadInt32(), r.ReadString(), (BaseModel)r.ReadByte(), r.Ints()));
        var model = models[0];
        var baseModel = baseKind switch
        {
            BaseModel.None => null,
            BaseModel.Same => model,
            BaseModel.Second => models[1],
            _ => throw new InvalidDataException($"base kind {(int)baseKind} is not known"),
        };
        string key = $"{model.Source}|{baseModel?.Source}|{baseKind}|{cache}|{ctx}|{threads}";
        lock (gate)
        {
            if (cached?.Key != key)
            {
                cached?.Scorer.Dispose();
                cached = (key, new ChunkScorer([(model, KvCachePolicy.Parse(cache))], baseModel, new EvaluationOptions { ContextLength = ctx, Threads = threads }, cancellationToken));
            }
            var scores = cached.Value.Scorer.Score(chunk);
            return Payload.Write(partBytes, w => Response(w, scores));
        }
    }

    private static void Response(BinaryWriter w, ChunkScores scores)
    {
        w.Doubles(scores.BaseNlls);
        w.Write(scores.Subjects.Count);
        foreach (var s in scores.Subjects)
        {
            w.Doubles(s.Nlls);
            w.Doubles(s.Klds);
            w.Doubles(s.DeltaP2);
            w.Write(s.SameTop);
            w.Write(s.Seconds);
            w.Write(s.CacheBytesPerToken);
        }
    }

    public static ChunkScores ReadResponse(Payload payload) => payload.Read(r =>
    {
        var baseNlls = r.Doubles();
        int n = r.ReadInt32();
        var subjects = new SubjectChunkScores[n];
        for (int i = 0; i < n; i++)
            subjects[i] = new SubjectChunkScores(r.Doubles(), r.Doubles(), r.Doubles(), r.ReadInt32(), r.ReadDouble(), r.ReadDouble());
        return new ChunkScores(baseNlls, subjects);
    });
}

/// <summary><c>squeeze eval … --cluster</c>: the text's chunks scored as work items on the cluster.</summary>
public static class ClusterEvaluator
{
    /// <summary>
    /// Scores <paramref name="model"/> (read from <paramref name="modelRef"/>'s path on every worker) on
    /// <paramref name="text"/>, against <paramref name="baseModel"/> when given, else — when the options' KV cache is not
    /// f32 — against the model's own f32 cache, as <see cref="Evaluator.Evaluate"/> and
    /// <see cref="Evaluator.EvaluateKvCaches"/> do: the same figures, bit for bit, except the speed.
    /// </summary>
    public static async Task<EvaluationResult> EvaluateAsync(ClusterJob job, Model model, ModelRef modelRef, string text, EvaluationOptions options,
        Model? baseModel = null, ModelRef? baseRef = null, IProgress<ClusterProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(options);
        if ((baseModel is null) != (baseRef is null))
            throw new ArgumentException("a base model needs its reference, and a reference its model", nameof(baseRef));
        bool sameBase = baseModel is null && options.KvCache.Kind != KvCacheKind.Float32;
        var chunks = EvaluationChunks.Of(model, text, options, sameBase ? model : baseModel);
        var models = baseRef is null ? new[] { modelRef } : [modelRef, baseRef];
        var results = await job.RunAsync(EvaluationKind.KindName, models, chunks.Count, c => EvaluationKind.Request(chunks.Chunk(c), options.KvCache.ToString(), sameBase, baseModel is not null),
            progress, cancellationToken).ConfigureAwait(false);
        return Evaluator.Combine(chunks, [options.KvCache], compared: sameBase || baseModel is not null, [.. results.Select(EvaluationKind.ReadResponse)])[0];
    }
}
