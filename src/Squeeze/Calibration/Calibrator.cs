using Squeeze.Models;

namespace Squeeze.Calibration;

/// <summary>Settings of a calibration run.</summary>
public sealed record CalibrationOptions
{
    /// <summary>Tokens per chunk; 0 means 256 or the model's context length, whichever is smaller.</summary>
    public int ContextLength { get; init; }

    /// <summary>Use at most this many tokens (whole chunks only); 0 means every whole chunk of the text.</summary>
    public long MaxTokens { get; init; }

    /// <summary>Collect the Gram matrix XᵀX of every input (GPTQ, AWQ); width² doubles per entry.</summary>
    public bool CollectGram { get; init; }

    /// <summary>Collect only these layers (−1 is the output classifier); null means all. Lets a large model's Gram
    /// matrices be collected a few layers per pass.</summary>
    public IReadOnlySet<int>? Layers { get; init; }

    /// <summary>Threads for the forward pass and the Gram products; the statistics do not depend on it.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>Where each block's groups of shards of chunks are calibrated (<see cref="CalibrationShards"/>): in this process (the
    /// default), or as independent work items elsewhere (a cluster); the statistics are the same bits.</summary>
    public ICalibrationWorkers Workers { get; init; } = CalibrationWorkers.InProcess;
}

/// <summary>Progress of a calibration: block runs done out of the total (one per chunk and layer), and what runs now.</summary>
public readonly record struct CalibrationProgress(int Done, int Total, string Note);

/// <summary>
/// Runs a model over a calibration text and collects the statistics of every linear layer's input, as llama.cpp's
/// imatrix tool does: the text is tokenized once with a leading BOS and cut into whole chunks of
/// <see cref="CalibrationOptions.ContextLength"/> tokens; each chunk's first token is replaced by BOS and runs from an
/// empty cache. The model runs one block at a time (<see cref="LayerwiseCalibrator"/>), so the only activations held
/// are the residual stream of the calibration tokens; it stops after the last layer asked for. Each block's statistics
/// are collected on fixed shards of the chunks, added in shard order within fixed groups and the groups in group order
/// (<see cref="CalibrationShards"/>): deterministic for a given text and options, whatever the thread count and wherever
/// the groups run.
/// </summary>
public static class Calibrator
{
    /// <summary>Collects <see cref="CalibrationStatistics"/> of <paramref name="model"/> on <paramref name="text"/>.</summary>
    /// <exception cref="ArgumentException">The text is empty, not valid Unicode (a lone surrogate), or shorter than one chunk.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each chunk).</exception>
    public static CalibrationStatistics Run(Model model, string text, CalibrationOptions? options = null, IProgress<CalibrationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var entries = new List<ActivationStatistics>();
        var summary = Run(model, text, options, entries.AddRange, progress, cancellationToken);
        entries.Sort((a, b) => a.Layer != b.Layer ? a.Layer.CompareTo(b.Layer) : a.Kind.CompareTo(b.Kind));
        return new CalibrationStatistics(summary.Model, summary.TextHash, summary.TokenCount, summary.ContextLength, entries);
    }

    /// <summary>
    /// Collects the statistics of <paramref name="model"/> on <paramref name="text"/> without keeping them: each block's
    /// entries (ordered by kind) go to <paramref name="sink"/> as soon as the block is done, in layer order, the
    /// classifier's last, so a caller that writes them out holds one block's statistics at a time. Returns the
    /// statistics' shared facts, with no entries.
    /// </summary>
    /// <exception cref="ArgumentException">The text is empty, not valid Unicode (a lone surrogate), or shorter than one chunk.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each chunk).</exception>
    public static CalibrationStatistics Run(Model model, string text, CalibrationOptions? options, Action<IReadOnlyList<ActivationStatistics>> sink,
        IProgress<CalibrationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(sink);
        options ??= new CalibrationOptions();
        using var runner = new LayerwiseCalibrator(model, text, options, cancellationToken);
        int layers = model.Config.LayerCount;
        var wanted = options.Layers;
        bool Wants(int layer) => wanted is null || wanted.Contains(layer);
        // Blocks to run: up to the last one wanted, or all of them for the classifier's input.
        int blocks = Wants(-1) ? layers : wanted!.Where(l => l >= 0 && l < layers).Select(l => l + 1).DefaultIfEmpty(0).Max();
        int chunks = runner.Chunks;
        int total = (blocks + (Wants(-1) ? 1 : 0)) * chunks;
        int done = 0;
        IProgress<CalibrationProgress>? Step() => progress is null ? null
            : new SynchronousProgress<CalibrationProgress>(p => progress.Report(new CalibrationProgress(done + p.Done, total, p.Note)));
        for (int l = 0; l < blocks; l++)
        {
            if (Wants(l))
                sink(runner.Collect(Step()));
            // After Collect, Advance reuses the block's output; otherwise it runs the block now.
            if (l + 1 < blocks || Wants(-1))
                runner.Advance(progress: Wants(l) ? null : Step());
            done += chunks;
        }
        if (Wants(-1))
            sink(runner.Collect(Step()));
        return new CalibrationStatistics(ModelIdentity.Of(model), runner.TextHash, runner.TokenCount, runner.ContextLength, []);
    }
}
