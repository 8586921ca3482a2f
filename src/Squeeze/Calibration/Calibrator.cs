using System.IO.Hashing;
using System.Text;
using Squeeze.Models;
using Squeeze.Runtime;

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
}

/// <summary>Progress of a calibration: chunks done out of the total.</summary>
public readonly record struct CalibrationProgress(int Chunk, int Chunks, long Tokens);

/// <summary>
/// Runs a model over a calibration text and collects the statistics of every linear layer's input, as llama.cpp's
/// imatrix tool does: the text is tokenized once with a leading BOS and cut into whole chunks of
/// <see cref="CalibrationOptions.ContextLength"/> tokens; each chunk's first token is replaced by BOS and runs from an
/// empty cache. Deterministic for a given text and options, whatever the thread count.
/// </summary>
public static class Calibrator
{
    /// <summary>Collects <see cref="CalibrationStatistics"/> of <paramref name="model"/> on <paramref name="text"/>.</summary>
    /// <exception cref="ArgumentException">The text is empty, not valid Unicode (a lone surrogate), or shorter than one chunk.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each chunk).</exception>
    public static CalibrationStatistics Run(Model model, string text, CalibrationOptions? options = null, IProgress<CalibrationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(text);
        options ??= new CalibrationOptions();
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

        int[] tokens = model.Tokenizer.Encode(text, addBos: true);
        long usable = options.MaxTokens > 0 ? Math.Min(tokens.Length, options.MaxTokens) : tokens.Length;
        int chunks = (int)(usable / ctx);
        if (chunks == 0)
            throw new ArgumentException($"the calibration text has {tokens.Length} tokens{(options.MaxTokens > 0 ? $" (at most {options.MaxTokens} used)" : "")}, fewer than one chunk of {ctx}", nameof(text));

        var collector = new ActivationCollector(options.CollectGram, options.Layers, options.Threads);
        bool wantsOutput = collector.Wants(-1);
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = Math.Max(1, options.Threads), ContextLength = ctx, BatchSize = ctx })
        {
            Observer = collector,
            Cancellation = cancellationToken,
        };
        var chunk = new int[ctx];
        for (int c = 0; c < chunks; c++)
        {
            Array.Copy(tokens, (long)c * ctx, chunk, 0, ctx);
            chunk[0] = model.Vocabulary.BosId;
            runtime.Reset();
            // The classifier's input is only observed for the rows whose logits are computed: all of them when wanted.
            runtime.Forward(chunk, logitCount: wantsOutput ? ctx : 1);
            progress?.Report(new CalibrationProgress(c + 1, chunks, (long)(c + 1) * ctx));
        }
        return new CalibrationStatistics(ModelIdentity.Of(model), XxHash64.HashToUInt64(utf8), (long)chunks * ctx, ctx, collector.Entries);
    }
}
