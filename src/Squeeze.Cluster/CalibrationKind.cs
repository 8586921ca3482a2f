using Squeeze.Calibration;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Cluster;

/// <summary>
/// Calibration over groups of shards of the calibration text: an item is one group of one block
/// (<see cref="CalibrationShards"/>): the block, the chunk length, whether to collect the Gram matrices and to send the
/// block's output back, and the residual stream of each of the group's chunks at the block's input. The worker runs the
/// block on them with <see cref="CalibrationShards.Run"/> — each shard alone, added in shard order into the group's sum —
/// and sends back the group's statistics (one sum, the size of one shard's) and, but for the classifier's input, the
/// chunks after the block; the client adds the groups' statistics in group order, as one machine does.
/// </summary>
internal sealed class CalibrationKind : IWorkKind
{
    public const string KindName = "calibrate-group";

    private readonly Lock gate = new();
    private (string Key, Transformer Runtime)? cached;

    public string Name => KindName;

    public static Action<BinaryWriter> Request(CalibrationBlock block, int group) => w =>
    {
        w.Write(block.Layer);
        w.Write(block.ContextLength);
        w.Write(block.CollectGram);
        w.Write(block.KeepOutput);
        var chunks = block.Group(group);
        w.Write(chunks.Count);
        foreach (var chunk in chunks)
            w.Floats(chunk);
    };

    public Payload Run(IReadOnlyList<Model> models, Payload payload, int partBytes, int threads, CancellationToken cancellationToken)
    {
        var model = models[0];
        var (layer, ctx, gram, keepOutput, chunks) = payload.Read(r =>
        {
            var (layer, ctx, gram, keepOutput) = (r.ReadInt32(), r.ReadInt32(), r.ReadBoolean(), r.ReadBoolean());
            int count = r.ReadInt32();
            if (count < 1 || count > CalibrationShards.ChunksPerGroup)
                throw new InvalidDataException($"a group of {count} chunks (1 to {CalibrationShards.ChunksPerGroup})");
            var chunks = new float[count][];
            for (int c = 0; c < count; c++)
                chunks[c] = r.Floats();
            return (layer, ctx, gram, keepOutput, chunks);
        });
        if (layer < 0 || layer > model.Config.LayerCount)
            throw new InvalidDataException($"block {layer} of a model of {model.Config.LayerCount}");
        if (ctx < 1 || chunks.Any(c => c.Length != (long)ctx * model.Config.Dim))
            throw new InvalidDataException($"a chunk is not {ctx} rows of {model.Config.Dim}");
        string key = $"{model.Source}|{ctx}|{threads}";
        lock (gate)
        {
            if (cached?.Key != key)
            {
                cached?.Runtime.Dispose();
                cached = (key, CalibrationShards.OpenRuntime(model, ctx, threads, CancellationToken.None));
            }
            var result = CalibrationShards.Run(cached.Value.Runtime, layer, chunks, gram, threads, keepOutput, cancellationToken);
            return Payload.Write(partBytes, w => Response(w, result));
        }
    }

    private static void Response(BinaryWriter w, GroupResult result)
    {
        w.Write(result.Entries.Count);
        foreach (var e in result.Entries)
            w.Statistics(e);
        w.Write(result.Output?.Length ?? -1);
        foreach (var chunk in result.Output ?? [])
            w.Floats(chunk);
    }

    public static GroupResult ReadResponse(Payload payload) => payload.Read(r =>
    {
        var entries = new ActivationStatistics[r.ReadInt32()];
        for (int e = 0; e < entries.Length; e++)
            entries[e] = r.Statistics();
        int count = r.ReadInt32();
        float[][]? output = count < 0 ? null : new float[count][];
        for (int c = 0; c < count; c++)
            output![c] = r.Floats();
        return new GroupResult(entries, output);
    });
}

/// <summary>
/// <c>squeeze calibrate … --cluster</c> and the calibration inside <c>squeeze compress … --cluster</c>
/// (<see cref="CalibrationOptions.Workers"/>): each group of shards of each block is a work item on the cluster — its
/// chunks' residual stream out, the sum of its shards' statistics and the chunks after the block back — and the client
/// adds the groups' statistics in group order as they come (<see cref="ClusterJob.RunInOrderAsync"/>), holding one
/// group's result beside the running total; the statistics are the one-machine bits whatever the number of workers.
/// </summary>
public sealed class ClusterCalibrationWorkers(ClusterJob job, ModelRef model, IProgress<ClusterProgress>? progress = null) : ICalibrationWorkers
{
    /// <inheritdoc/>
    public void Run(CalibrationBlock block, Action<int, GroupResult> done, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(block);
        ArgumentNullException.ThrowIfNull(done);
        job.RunInOrderAsync(CalibrationKind.KindName, [model], block.Groups, g => CalibrationKind.Request(block, g),
            (g, result) => done(g, CalibrationKind.ReadResponse(result)), progress, cancellationToken).GetAwaiter().GetResult();
    }
}
