using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Calibration;

/// <summary>
/// The shards of a calibration and the fixed tree their statistics are summed in, whatever runs them: the chunks are cut
/// into consecutive shards of <see cref="ChunksPerShard"/> and the shards into consecutive groups of
/// <see cref="ShardsPerGroup"/> (the last of each shorter). A block's statistics are collected on each shard alone (a
/// fresh <see cref="ActivationCollector"/>: sums over the shard's tokens in order, its Gram matrix the chunks' products
/// added in chunk order), a group's shards added in shard order where the group runs (<see cref="Run"/>), and the
/// groups' sums added in group order (<see cref="Add"/>): on one machine as on a cluster, where a group is one work item
/// and only its sum comes back, so the statistics are the same bits however many workers ran the groups. A calibration
/// of one group is its shards added in shard order, and one of one shard that shard's statistics exactly.
/// </summary>
public static class CalibrationShards
{
    /// <summary>Chunks per shard: 2,048 tokens of 256-token chunks.</summary>
    public const int ChunksPerShard = 8;

    /// <summary>Shards per group: 32 chunks, 8,192 tokens of 256. A group's statistics are the same size whatever its
    /// tokens (at 8B, 2.1 GB of Gram matrices a block), so a cluster moves one such sum per group instead of per shard: the
    /// usual 128 chunks make 16 shards in 4 groups, a quarter of the bytes into the client, and still 4 items a block for
    /// the workers to share.</summary>
    public const int ShardsPerGroup = 4;

    /// <summary>Chunks per group (<see cref="ChunksPerShard"/> × <see cref="ShardsPerGroup"/>).</summary>
    public const int ChunksPerGroup = ChunksPerShard * ShardsPerGroup;

    /// <summary>How many shards <paramref name="chunks"/> chunks make.</summary>
    public static int Count(int chunks) => Parts(chunks, ChunksPerShard);

    /// <summary>The first chunk of shard <paramref name="shard"/> of <paramref name="chunks"/> and how many it has.</summary>
    public static (int First, int Count) Chunks(int shard, int chunks) => Part(shard, chunks, ChunksPerShard);

    /// <summary>How many groups <paramref name="chunks"/> chunks make.</summary>
    public static int Groups(int chunks) => Parts(chunks, ChunksPerGroup);

    /// <summary>The first chunk of group <paramref name="group"/> of <paramref name="chunks"/> and how many it has.</summary>
    public static (int First, int Count) GroupChunks(int group, int chunks) => Part(group, chunks, ChunksPerGroup);

    // Consecutive parts of `per` chunks each, the last one shorter: shards and groups alike.
    private static int Parts(int chunks, int per)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(chunks);
        return (chunks + per - 1) / per;
    }

    private static (int First, int Count) Part(int index, int chunks, int per)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Parts(chunks, per));
        int first = index * per;
        return (first, Math.Min(per, chunks - first));
    }

    /// <summary>The runtime a calibration runs blocks with: one chunk per batch, as whole forward passes run them, so the
    /// same products and the same bits on any machine and thread count.</summary>
    public static Transformer OpenRuntime(Model model, int contextLength, int threads, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new Transformer(model, new RuntimeOptions { Threads = Math.Max(1, threads), ContextLength = contextLength, BatchSize = contextLength })
        {
            Cancellation = cancellationToken,
        };
    }

    /// <summary>
    /// One group of one block: the statistics of block <paramref name="layer"/>'s linear inputs on the group's
    /// <paramref name="chunks"/> (at most <see cref="ChunksPerGroup"/>, each the residual stream at the block's input,
    /// [contextLength × dim]), or of the classifier's input when <paramref name="layer"/> is the model's layer count: each
    /// shard of <see cref="ChunksPerShard"/> collected alone and added in shard order, so what is held is the group's
    /// running sum beside one shard's statistics. With <paramref name="keepOutput"/>, each chunk after the block too (the
    /// chunks given are not changed). <paramref name="runtime"/> comes from <see cref="OpenRuntime"/>; its observer is set
    /// for the run and cleared after.
    /// </summary>
    /// <exception cref="ArgumentException">More than <see cref="ChunksPerGroup"/> chunks.</exception>
    /// <exception cref="OperationCanceledException">Cancelled (checked before each chunk).</exception>
    public static GroupResult Run(Transformer runtime, int layer, IReadOnlyList<float[]> chunks, bool collectGram, int threads, bool keepOutput,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(chunks);
        if (chunks.Count > ChunksPerGroup)
            throw new ArgumentException($"a group of {chunks.Count} chunks (at most {ChunksPerGroup})", nameof(chunks));
        bool classifier = layer == runtime.Model.Config.LayerCount;
        var sum = new SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics>();
        var output = keepOutput && !classifier ? new float[chunks.Count][] : null;
        try
        {
            for (int shard = 0; shard < Count(chunks.Count); shard++)
            {
                var collector = new ActivationCollector(collectGram, null, threads);
                runtime.Observer = collector;
                var (first, count) = Chunks(shard, chunks.Count);
                for (int c = first; c < first + count; c++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    if (classifier)
                    {
                        runtime.ObserveClassifierInput(chunks[c]);
                        continue;
                    }
                    var stream = (float[])chunks[c].Clone();
                    runtime.ForwardBlock(layer, stream);
                    if (output is not null)
                        output[c] = stream;
                }
                Add(sum, collector.Entries);
            }
        }
        finally
        {
            runtime.Observer = null;
        }
        return new GroupResult([.. sum.Values], output);
    }

    /// <summary>Adds a shard's statistics to the running sum of the shards before it in its group, or a group's sum to the
    /// running total of the groups before it (<paramref name="total"/>, by layer and kind): an input the total has not seen
    /// yet takes the added statistics themselves, as adding them to zero would.</summary>
    public static void Add(SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics> total, IReadOnlyList<ActivationStatistics> added)
    {
        ArgumentNullException.ThrowIfNull(total);
        ArgumentNullException.ThrowIfNull(added);
        foreach (var entry in added)
        {
            if (total.TryGetValue((entry.Layer, entry.Kind), out var sum))
                sum.Add(entry);
            else
                total.Add((entry.Layer, entry.Kind), entry);
        }
    }
}

/// <summary>What one group of one block gives (<see cref="CalibrationShards.Run"/>).</summary>
/// <param name="Entries">The statistics of the block's inputs on the group's tokens (its shards added in shard order),
/// ordered by kind.</param>
/// <param name="Output">Each of the group's chunks after the block, or null (the classifier, or not asked for).</param>
public sealed record GroupResult(IReadOnlyList<ActivationStatistics> Entries, float[][]? Output);

/// <summary>The groups of one block to calibrate (<see cref="ICalibrationWorkers"/>): the model, which block, the residual
/// stream of every chunk at its input, and what to collect.</summary>
public sealed class CalibrationBlock
{
    private readonly float[][] stream;

    internal CalibrationBlock(Model model, int layer, float[][] stream, int contextLength, bool collectGram, int threads, bool keepOutput, Transformer runtime)
    {
        Threads = threads;
        Model = model;
        Layer = layer;
        this.stream = stream;
        ContextLength = contextLength;
        CollectGram = collectGram;
        KeepOutput = keepOutput;
        Runtime = runtime;
    }

    /// <summary>The calibrated model.</summary>
    public Model Model { get; }

    /// <summary>The block, or the model's layer count for the classifier's input.</summary>
    public int Layer { get; }

    /// <summary>Tokens per chunk.</summary>
    public int ContextLength { get; }

    /// <summary>True when the Gram matrices are collected.</summary>
    public bool CollectGram { get; }

    /// <summary>Threads the client computes with (a worker uses its own count; the statistics do not depend on it).</summary>
    public int Threads { get; }

    /// <summary>True when each group's chunks after the block are wanted back.</summary>
    public bool KeepOutput { get; }

    /// <summary>How many groups the block has (<see cref="CalibrationShards.Groups"/>).</summary>
    public int Groups => CalibrationShards.Groups(stream.Length);

    /// <summary>Group <paramref name="group"/>'s chunks, each the residual stream at the block's input ([contextLength × dim]).</summary>
    public ArraySegment<float[]> Group(int group)
    {
        var (first, count) = CalibrationShards.GroupChunks(group, stream.Length);
        return new ArraySegment<float[]>(stream, first, count);
    }

    // The calibrator's own runtime, for the groups run in this process.
    internal Transformer Runtime { get; }
}

/// <summary>
/// Where the groups of a block's calibration run (<see cref="CalibrationOptions.Workers"/>): <see cref="CalibrationWorkers.InProcess"/>
/// runs them here one after another; another implementation may hand each group to another machine. A group's result
/// depends on nothing but its chunks, the block and the model, and the results are added in group order, so the
/// statistics are the same bits wherever the groups ran.
/// </summary>
public interface ICalibrationWorkers
{
    /// <summary>Runs every group of <paramref name="block"/> (<see cref="CalibrationShards.Run"/>), calling
    /// <paramref name="done"/> with each group's index and result in group order, one call at a time.</summary>
    void Run(CalibrationBlock block, Action<int, GroupResult> done, CancellationToken cancellationToken);
}

/// <summary>The group runners that ship with the library.</summary>
public static class CalibrationWorkers
{
    /// <summary>Every group run in this process, in order, on the calibrator's runtime.</summary>
    public static ICalibrationWorkers InProcess { get; } = new InProcessWorkers();

    private sealed class InProcessWorkers : ICalibrationWorkers
    {
        public void Run(CalibrationBlock block, Action<int, GroupResult> done, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(block);
            ArgumentNullException.ThrowIfNull(done);
            for (int g = 0; g < block.Groups; g++)
                done(g, CalibrationShards.Run(block.Runtime, block.Layer, block.Group(g), block.CollectGram, block.Threads, block.KeepOutput, cancellationToken));
        }
    }
}
