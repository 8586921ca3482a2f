using System.IO.Hashing;
using System.Text;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Calibration;

/// <summary>
/// Runs a calibration text through a model one decoder block at a time (what GPTQModel and llm-compressor call
/// sequential onloading): the residual stream of every calibration token at the current block's input is kept
/// ([tokens, dim] floats, not the model's activations), <see cref="Collect"/> gathers the statistics of that block's
/// linear inputs, and <see cref="Advance"/> runs the block — with the model's own weights or with a replacement (the
/// block already compressed) — to give the next block its input. Memory is the residual stream and one block's
/// statistics (and, while a group after the first is collected, its running sum and one shard's,
/// <see cref="CalibrationShards"/>), whatever the depth. Chunks are cut as <see cref="Calibrator"/> cuts them and every
/// number is computed as whole forward passes of each shard's chunks compute it, summed over the same tree of shards and
/// groups, so the statistics are bit-identical to <see cref="Calibrator.Run(Model, string, CalibrationOptions, IProgress{CalibrationProgress}, CancellationToken)"/>'s.
/// </summary>
public sealed class LayerwiseCalibrator : IDisposable
{
    private readonly Model model;
    private readonly CalibrationOptions options;
    private readonly CancellationToken cancellationToken;
    private readonly Transformer runtime;
    private readonly int contextLength;
    private float[][] hidden;   // [chunk][contextLength × dim]: the residual stream at block Layer's input
    private float[][]? output;  // the same after block Layer with the model's own weights, when Collect computed it

    /// <summary>Tokenizes <paramref name="text"/>, cuts it into chunks and embeds them: the input of block 0.</summary>
    /// <exception cref="ArgumentException">The text is empty, not valid Unicode, or shorter than one chunk.</exception>
    public LayerwiseCalibrator(Model model, string text, CalibrationOptions? options = null, CancellationToken cancellationToken = default)
        : this(model, Chunk(model, text, options ?? new CalibrationOptions()), options, cancellationToken)
    {
    }

    /// <summary>Embeds chunks cut before (<see cref="Chunk"/>): the input of block 0.</summary>
    internal LayerwiseCalibrator(Model model, CalibrationChunks chunks, CalibrationOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(chunks);
        this.model = model;
        this.options = options ?? new CalibrationOptions();
        this.cancellationToken = cancellationToken;
        contextLength = chunks.ContextLength;
        TextHash = chunks.TextHash;
        TokenCount = chunks.TokenCount;
        runtime = Open(model);
        int dim = model.Config.Dim;
        hidden = new float[chunks.Tokens.Length][];
        for (int c = 0; c < chunks.Tokens.Length; c++)
        {
            hidden[c] = new float[contextLength * dim];
            runtime.Embed(chunks.Tokens[c], hidden[c]);
        }
    }

    /// <summary>The block whose input the residual stream is: 0 after construction, the layer count after the last block.</summary>
    public int Layer { get; private set; }

    /// <summary>Tokens run (whole chunks).</summary>
    public long TokenCount { get; }

    /// <summary>Tokens per chunk.</summary>
    public int ContextLength => contextLength;

    /// <summary>Number of chunks.</summary>
    public int Chunks => hidden.Length;

    /// <summary>XxHash64 of the text's UTF-8 bytes.</summary>
    public ulong TextHash { get; }

    /// <summary>
    /// The statistics of block <see cref="Layer"/>'s linear inputs (attention, attention output, feed-forward,
    /// feed-forward down) when it runs with the model's own weights on the current residual stream; after the last block,
    /// the classifier's input (layer −1). Collected group by group (<see cref="CalibrationShards"/>: each group's shards
    /// added in shard order) by <see cref="CalibrationOptions.Workers"/>, the groups added in group order; progress counts
    /// chunks, a group at a time. The block's output is kept for <see cref="Advance"/>.
    /// </summary>
    /// <exception cref="OperationCanceledException">Cancelled (checked before each chunk).</exception>
    public IReadOnlyList<ActivationStatistics> Collect(IProgress<CalibrationProgress>? progress = null)
    {
        bool classifier = Layer == model.Config.LayerCount;
        var total = new SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics>();
        var next = classifier ? null : new float[hidden.Length][];
        int done = 0;
        string what = classifier ? "classifier" : $"layer {Layer}";
        var block = new CalibrationBlock(model, Layer, hidden, contextLength, options.CollectGram, Math.Max(1, options.Threads), keepOutput: !classifier, runtime);
        options.Workers.Run(block, (group, result) =>
        {
            var (first, count) = CalibrationShards.GroupChunks(group, hidden.Length);
            if (next is not null)
            {
                if (result.Output is not { } after || after.Length != count)
                    throw new InvalidOperationException($"{what}: group {group} came back without its {count} chunks' output");
                after.CopyTo(next, first);
            }
            CalibrationShards.Add(total, result.Entries);
            done += count;
            progress?.Report(new CalibrationProgress(done, hidden.Length, $"{what}, chunk {done}/{hidden.Length}"));
        }, cancellationToken);
        if (done != hidden.Length)
            throw new InvalidOperationException($"{what}: {done} of {hidden.Length} chunks were calibrated");
        output = next;
        return [.. total.Values];
    }

    /// <summary>
    /// Every block's statistics in turn, from block <see cref="Layer"/> on, then the classifier's input (layer −1): each
    /// is collected when enumerated, and the stream runs past its block when the next is asked for, so a consumer that
    /// encodes one block at a time holds one block's statistics. <paramref name="progress"/> gets each block's chunks.
    /// </summary>
    public IEnumerable<BlockStatistics> Blocks(IProgress<CalibrationProgress>? progress = null)
    {
        while (true)
        {
            bool classifier = Layer == model.Config.LayerCount;
            var entries = Collect(progress);
            yield return new BlockStatistics(classifier ? -1 : Layer, entries);
            if (classifier)
                yield break;
            Advance();
        }
    }

    /// <summary>Runs block <see cref="Layer"/> on the residual stream and moves to the next block: with the model's own
    /// weights when <paramref name="replacement"/> is null (reusing what <see cref="Collect"/> computed), else with
    /// <paramref name="replacement"/>'s (a model of the same shape whose block <see cref="Layer"/> is compressed).</summary>
    /// <exception cref="InvalidOperationException">Every block has run.</exception>
    public void Advance(Model? replacement = null, IProgress<CalibrationProgress>? progress = null)
    {
        if (Layer >= model.Config.LayerCount)
            throw new InvalidOperationException($"all {model.Config.LayerCount} blocks have run");
        if (replacement is null)
        {
            hidden = output ?? Run(runtime, progress, "");
        }
        else
        {
            if (replacement.Config.Dim != model.Config.Dim || replacement.Config.LayerCount != model.Config.LayerCount)
                throw new ArgumentException($"{replacement.Source} is not of the calibrated model's shape", nameof(replacement));
            using var replaced = Open(replacement);
            hidden = Run(replaced, progress, "compressed ");
        }
        output = null;
        Layer++;
    }

    // Block Layer of `transformer` on a copy of every chunk's residual stream.
    private float[][] Run(Transformer transformer, IProgress<CalibrationProgress>? progress, string what)
    {
        var result = new float[hidden.Length][];
        for (int c = 0; c < hidden.Length; c++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            result[c] = (float[])hidden[c].Clone();
            transformer.ForwardBlock(Layer, result[c]);
            progress?.Report(new CalibrationProgress(c + 1, hidden.Length, $"{what}layer {Layer}, chunk {c + 1}/{hidden.Length}"));
        }
        return result;
    }

    // One chunk per batch, as Calibrator runs them: the same products, so the same bits.
    private Transformer Open(Model weights) => CalibrationShards.OpenRuntime(weights, contextLength, options.Threads, cancellationToken);

    /// <summary>
    /// The text tokenized once with a leading BOS and cut into whole chunks of the context length (0: 256 or the
    /// model's, whichever is smaller), at most <see cref="CalibrationOptions.MaxTokens"/> tokens; each chunk's first
    /// token is BOS.
    /// </summary>
    /// <exception cref="ArgumentException">The text is empty, not valid Unicode, or shorter than one chunk.</exception>
    internal static CalibrationChunks Chunk(Model model, string text, CalibrationOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
            throw new ArgumentException("the calibration text is empty", nameof(text));
        byte[] utf8;
        try
        {
            utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true).GetBytes(text);
        }
        catch (EncoderFallbackException e)
        {
            throw new ArgumentException($"the calibration text is not valid Unicode (unpaired surrogate at character {e.Index})", nameof(text), e);
        }
        int ctx = options.ContextLength > 0 ? options.ContextLength : Math.Min(256, model.Config.ContextLength);
        if (ctx < 2)
            throw new ArgumentException($"context length {ctx} is too small: at least 2 tokens per chunk", nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxTokens, nameof(options));
        int[] tokens = model.Tokenizer.Encode(text, model.Vocabulary.AddBos);
        long usable = options.MaxTokens > 0 ? Math.Min(tokens.Length, options.MaxTokens) : tokens.Length;
        int count = (int)(usable / ctx);
        if (count == 0)
            throw new ArgumentException($"the calibration text has {tokens.Length} tokens{(options.MaxTokens > 0 ? $" (at most {options.MaxTokens} used)" : "")}, fewer than one chunk of {ctx}", nameof(text));
        var chunks = new int[count][];
        for (int c = 0; c < count; c++)
        {
            chunks[c] = tokens.AsSpan(c * ctx, ctx).ToArray();
            if (model.Vocabulary.AddBos)
                chunks[c][0] = model.Vocabulary.BosId;
        }
        return new CalibrationChunks(chunks, ctx, XxHash64.HashToUInt64(utf8));
    }

    /// <summary>The residual stream at block <see cref="Layer"/>'s input, [chunk][contextLength × dim] (what a resumable
    /// job saves).</summary>
    internal float[][] Stream => hidden;

    /// <summary>Continues at block <paramref name="layer"/> with the residual stream <paramref name="load"/> fills in
    /// (one saved at that block's input by a run with the same model, text and options).</summary>
    internal void Resume(int layer, Action<float[][]> load)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(layer, model.Config.LayerCount);
        load(hidden);
        Layer = layer;
        output = null;
    }

    /// <summary>Stops the runtime's worker threads.</summary>
    public void Dispose() => runtime.Dispose();
}

/// <summary>A calibration text cut into chunks (<see cref="LayerwiseCalibrator.Chunk"/>): the token ids of each chunk,
/// the chunk length and the text's hash.</summary>
internal sealed record CalibrationChunks(int[][] Tokens, int ContextLength, ulong TextHash)
{
    /// <summary>Tokens in all chunks.</summary>
    public long TokenCount => (long)Tokens.Length * ContextLength;
}

/// <summary>The statistics of one block's linear inputs (<see cref="LayerwiseCalibrator.Blocks"/>), or of the
/// classifier's input (layer −1).</summary>
/// <param name="Layer">The block, or −1 for the classifier's input.</param>
/// <param name="Entries">Its entries, ordered by kind (empty when none were collected).</param>
public sealed record BlockStatistics(int Layer, IReadOnlyList<ActivationStatistics> Entries)
{
    /// <summary>Statistics collected earlier as the same stream of blocks: layers 0 … <paramref name="layerCount"/> − 1,
    /// then −1 (each with its entries, empty where there are none).</summary>
    public static IEnumerable<BlockStatistics> Of(CalibrationStatistics statistics, int layerCount)
    {
        ArgumentNullException.ThrowIfNull(statistics);
        var byLayer = statistics.Entries.ToLookup(e => e.Layer);
        for (int layer = 0; layer <= layerCount; layer++)
        {
            int l = layer < layerCount ? layer : -1;
            yield return new BlockStatistics(l, [.. byLayer[l]]);
        }
    }
}
