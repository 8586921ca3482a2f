using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Compression;

/// <summary>
/// How much a model uses each token of its vocabulary on a text: what ranks the rows of token-indexed matrices (the
/// embedding, the classifier) for <see cref="Representations.RowSplitRepresentation"/>.
/// </summary>
public static class TokenUsage
{
    /// <summary>How often <paramref name="text"/> (tokenized with BOS, its first <paramref name="maxTokens"/> tokens; 0:
    /// all) uses each token of <paramref name="model"/>'s vocabulary.</summary>
    public static long[] Count(Model model, string text, long maxTokens = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(text);
        return Count(Tokens(model, text, maxTokens), model.Config.VocabSize);
    }

    /// <summary>
    /// Per token id, the times <paramref name="text"/> (tokenized with BOS, its first <paramref name="maxTokens"/> tokens;
    /// 0: all) holds it plus the times <paramref name="model"/> expects it next: Σ over the text's positions of its
    /// next-token probability, the text run in chunks of <paramref name="contextLength"/> tokens, each from BOS. The
    /// counts say which rows the text reads; the expectations say which rows the classifier needs, including those of
    /// tokens the model would write but the text happens not to (a calibration text of 49k tokens of TinyStories leaves
    /// 2.4% of another such text's tokens outside its 4,096 most counted, 0.7% outside its 4,096 most used by this
    /// measure). Deterministic for a thread count.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The context is shorter than 2 tokens.</exception>
    public static double[] Measure(Model model, string text, long maxTokens, int contextLength, int threads, IProgress<(int Done, int Total)>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 2);
        int[] tokens = Tokens(model, text, maxTokens);
        int vocab = model.Config.VocabSize, ctx = Math.Min(contextLength, model.Config.ContextLength);
        double[] usage = [.. Count(tokens, vocab).Select(c => (double)c)];
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = Math.Max(1, threads), ContextLength = ctx, BatchSize = ctx });
        var probabilities = new float[vocab];
        int chunks = (tokens.Length + ctx - 1) / ctx;
        for (int c = 0; c < chunks; c++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var chunk = tokens.AsSpan(c * ctx, Math.Min(ctx, tokens.Length - c * ctx)).ToArray();
            if (model.Vocabulary.AddBos)
                chunk[0] = model.Vocabulary.BosId;
            runtime.Reset();
            var logits = runtime.Forward(chunk, logitCount: chunk.Length);
            for (int t = 0; t < chunk.Length; t++)
            {
                var row = logits.Slice(t * vocab, vocab);
                TensorPrimitives.Subtract(row, TensorPrimitives.Max(row), probabilities);
                TensorPrimitives.Exp(probabilities, probabilities);
                double scale = 1 / (double)TensorPrimitives.Sum(probabilities);
                for (int v = 0; v < vocab; v++)
                    usage[v] += probabilities[v] * scale;
            }
            progress?.Report((c + 1, chunks));
        }
        return usage;
    }

    private static long[] Count(int[] tokens, int vocab)
    {
        var counts = new long[vocab];
        foreach (int t in tokens)
        {
            if ((uint)t < (uint)vocab)
                counts[t]++;
        }
        return counts;
    }

    private static int[] Tokens(Model model, string text, long maxTokens)
    {
        int[] tokens = model.Tokenizer.Encode(text, model.Vocabulary.AddBos);
        return maxTokens > 0 && tokens.Length > maxTokens ? tokens[..(int)maxTokens] : tokens;
    }
}
