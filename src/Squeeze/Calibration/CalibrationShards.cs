using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Calibration;

/// <summary>
/// The shards of a calibration: its chunks cut into consecutive groups of <see cref="ChunksPerShard"/> (the last one
/// shorter), whatever runs them. A block's statistics are collected on each shard alone (<see cref="Run"/>, a fresh
/// <see cref="ActivationCollector"/>: sums over the shard's tokens in order, its Gram matrix the chunks' products added in
/// chunk order) and the shards' statistics added in shard order (<see cref="ActivationStatistics.Add"/>), on one machine
/// as on a cluster, so the statistics are the same bits however many workers ran the shards. A calibration of one
/// shard is that shard's statistics exactly.
/// </summary>
public static class CalibrationShards
{
    /// <summary>Chunks per shard: 2,048 tokens of 256-token chunks, so a calibration of the usual 128 chunks has 16 shards
    /// for the workers to share.</summary>
    public const int ChunksPerShard = 8;

    /// <summary>How many shards <paramref name="chunks"/> chunks make.</summary>
    public static int Count(int chunks)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(chunks);
        return (chunks + ChunksPerShard - 1) / ChunksPerShard;
    }

    /// <summary>The first chunk of shard <paramref name="shard"/> of <paramref name="chunks"/> and how many it has.</summary>
    public static (int First, int Count) Chunks(int shard, int chunks)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(shard);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(shard, Count(chunks));
        int first = shard * ChunksPerShard;
        return (first, Math.Min(ChunksPerShard, chunks - first));
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
    /// One shard of one block: the statistics of block <paramref name="layer"/>'s linear inputs on the shard's
    /// <paramref name="chunks"/> (each the residual stream at the block's input, [contextLength × dim]), or of the
    /// classifier's input when <paramref name="layer"/> is the model's layer count; with <paramref name="keepOutput"/>,
    /// each chunk after the block too (the chunks given are not changed). <paramref name="runtime"/> comes from
    /// <see cref="OpenRuntime"/>; its observer is set for the run and cleared after.
    /// </summary>
    /// <exception cref="OperationCanceledException">Cancelled (checked before each chunk).</exception>
    public static ShardResult Run(Transformer runtime, int layer, IReadOnlyList<float[]> chunks, bool collectGram, int threads, bool keepOutput,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(chunks);
        bool classifier = layer == runtime.Model.Config.LayerCount;
        var collector = new ActivationCollector(collectGram, null, threads);
        var output = keepOutput && !classifier ? new float[chunks.Count][] : null;
        runtime.Observer = collector;
        try
        {
            for (int c = 0; c < chunks.Count; c++)
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
        }
        finally
        {
            runtime.Observer = null;
        }
        return new ShardResult(collector.Entries, output);
    }

    /// <summary>Adds a shard's statistics to the running total of the shards before it (<paramref name="total"/>, by layer
    /// and kind): an input the total has not seen yet takes the shard's own statistics, as adding them to zero would.</summary>
    public static void Add(SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics> total, IReadOnlyList<ActivationStatistics> shard)
    {
        ArgumentNullException.ThrowIfNull(total);
        ArgumentNullException.ThrowIfNull(shard);
        foreach (var entry in shard)
        {
            if (total.TryGetValue((entry.Layer, entry.Kind), out var sum))
                sum.Add(entry);
            else
                total.Add((entry.Layer, entry.Kind), entry);
        }
    }
}

/// <summary>What one shard of one block gives (<see cref="CalibrationShards.Run"/>).</summary>
/// <param name="Entries">The statistics of the block's inputs on the shard's tokens, ordered by kind.</param>
/// <param name="Output">Each of the shard's chunks after the block, or null (the classifier, or not asked for).</param>
public sealed record ShardResult(IReadOnlyList<ActivationStatistics> Entries, float[][]? Output);

/// <summary>The shards of one block to calibrate (<see cref="ICalibrationWorkers"/>): the model, which block, the residual
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

    /// <summary>True when each shard's chunks after the block are wanted back.</summary>
    public bool KeepOutput { get; }

    /// <summary>How many shards the block has.</summary>
    public int Shards => CalibrationShards.Count(stream.Length);

    /// <summary>Shard <paramref name="shard"/>'s chunks, each the residual stream at the block's input ([contextLength × dim]).</summary>
    public ArraySegment<float[]> Shard(int shard)
    {
        var (first, count) = CalibrationShards.Chunks(shard, stream.Length);
        return new ArraySegment<float[]>(stream, first, count);
    }

    // The calibrator's own runtime, for the shards run in this process.
    internal Transformer Runtime { get; }
}

/// <summary>
/// Where the shards of a block's calibration run (<see cref="CalibrationOptions.Workers"/>): <see cref="CalibrationWorkers.InProcess"/>
/// runs them here one after another; another implementation may hand each shard to another machine. A shard's result
/// depends on nothing but its chunks, the block and the model, and the results are added in shard order, so the
/// statistics are the same bits wherever the shards ran.
/// </summary>
public interface ICalibrationWorkers
{
    /// <summary>Runs every shard of <paramref name="block"/> (<see cref="CalibrationShards.Run"/>), calling
    /// <paramref name="done"/> with each shard's index and result in shard order, one call at a time.</summary>
    void Run(CalibrationBlock block, Action<int, ShardResult> done, CancellationToken cancellationToken);
}

/// <summary>The shard runners that ship with the library.</summary>
public static class CalibrationWorkers
{
    /// <summary>Every shard run in this process, in order, on the calibrator's runtime.</summary>
    public static ICalibrationWorkers InProcess { get; } = new InProcessWorkers();

    private sealed class InProcessWorkers : ICalibrationWorkers
    {
        public void Run(CalibrationBlock block, Action<int, ShardResult> done, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(block);
            ArgumentNullException.ThrowIfNull(done);
            for (int s = 0; s < block.Shards; s++)
                done(s, CalibrationShards.Run(block.Runtime, block.Layer, block.Shard(s), block.CollectGram, block.Threads, block.KeepOutput, cancellationToken));
        }
    }
}
