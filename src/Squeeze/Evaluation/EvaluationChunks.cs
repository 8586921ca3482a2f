using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Evaluation;

/// <summary>
/// The chunks an evaluation scores, by llama.cpp's method: the text tokenized once with a leading BOS (by the first
/// model's tokenizer), chunk i is tokens [c·i, c·i + c) (whole chunks only), its first token replaced by BOS; the
/// positions c/2 … c−2 are scored against the next token. Each chunk is scored on its own (<see cref="ChunkScorer"/>),
/// so chunks are independent work items; <see cref="Evaluator.Combine"/> merges their scores in chunk order.
/// </summary>
public sealed class EvaluationChunks
{
    private readonly int[] tokens;
    private readonly int bos; // -1: the vocabulary adds no BOS (llama.cpp's add_bos), the chunks keep their first token
    private readonly int[] tokenByteCounts;

    private EvaluationChunks(int[] tokens, int count, int contextLength, int bos, int[] tokenByteCounts)
    {
        this.tokens = tokens;
        Count = count;
        ContextLength = contextLength;
        this.bos = bos;
        this.tokenByteCounts = tokenByteCounts;
    }

    /// <summary>The chunks of <paramref name="text"/> for scoring <paramref name="model"/> (against <paramref name="baseModel"/>
    /// when given) with <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentException">A context length under 4, models of different vocabulary sizes, or a text
    /// shorter than one chunk.</exception>
    public static EvaluationChunks Of(Model model, string text, EvaluationOptions? options = null, Model? baseModel = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new EvaluationOptions();
        return Of([(model, options.KvCache)], text, options, baseModel);
    }

    internal static EvaluationChunks Of(IReadOnlyList<(Model Model, KvCachePolicy Cache)> subjects, string text, EvaluationOptions options, Model? baseModel)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (subjects.Count == 0)
            throw new ArgumentException("no model to evaluate", nameof(subjects));
        int ctx = options.ContextLength;
        if (ctx < 4)
            throw new ArgumentException($"context length {ctx} is too small: at least 4 tokens are needed to score any", nameof(options));
        var first = subjects[0].Model;
        int vocab = first.Config.VocabSize;
        foreach (var m in subjects.Select(s => s.Model).Append(baseModel))
        {
            if (m is not null && m.Config.VocabSize != vocab)
                throw new ArgumentException($"{m.Source} has a vocabulary of {m.Config.VocabSize} tokens; {first.Source} has {vocab}", nameof(subjects));
        }
        int[] tokens = first.Tokenizer.Encode(text, first.Vocabulary.AddBos);
        int chunks = tokens.Length / ctx;
        if (options.MaxChunks > 0)
            chunks = Math.Min(chunks, options.MaxChunks);
        if (chunks == 0)
            throw new ArgumentException($"the text has {tokens.Length} tokens, fewer than one chunk of {ctx}", nameof(text));
        var tokenByteCounts = new int[vocab];
        for (int id = 0; id < vocab; id++)
            tokenByteCounts[id] = first.Tokenizer.TokenBytes(id).Length;
        return new EvaluationChunks(tokens, chunks, ctx, first.Vocabulary.AddBos ? first.Vocabulary.BosId : -1, tokenByteCounts);
    }

    /// <summary>Chunks to score.</summary>
    public int Count { get; }

    /// <summary>Tokens per chunk.</summary>
    public int ContextLength { get; }

    /// <summary>The first scored position of a chunk (c/2).</summary>
    public int FirstScored => ContextLength / 2;

    /// <summary>Positions scored per chunk: c/2 … c−2.</summary>
    public int ScoredPerChunk => ContextLength - 1 - FirstScored;

    /// <summary>Chunk <paramref name="index"/>'s tokens, its first one replaced by BOS when the vocabulary adds BOS.</summary>
    public int[] Chunk(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        var chunk = tokens.AsSpan(index * ContextLength, ContextLength).ToArray();
        if (bos >= 0)
            chunk[0] = bos;
        return chunk;
    }

    /// <summary>Bytes of the tokens chunk <paramref name="index"/>'s scored positions predict (what bits per byte divides by).</summary>
    public long Bytes(int index)
    {
        var chunk = Chunk(index);
        long bytes = 0;
        for (int j = 0; j < ScoredPerChunk; j++)
            bytes += tokenByteCounts[chunk[FirstScored + j + 1]];
        return bytes;
    }
}
