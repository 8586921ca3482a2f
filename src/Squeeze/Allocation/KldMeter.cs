using Squeeze.Evaluation;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Allocation;

/// <summary>
/// Fast end-to-end KL divergence of a model against a base model on a few fixed chunks of a text, for searches that
/// score many models: the base model's log-probabilities are computed once and kept. Chunks and scored positions
/// follow <see cref="Evaluator"/> (llama.cpp's method: chunk i is tokens [c·i, c·i + c) with its first token replaced
/// by BOS; positions c/2 … c−2 are scored), so the numbers are the mean KLD that <see cref="Evaluator"/> reports on
/// those chunks.
/// </summary>
public sealed class KldMeter
{
    private readonly int[][] chunks;
    private readonly float[][] baseLogProbs;   // per chunk [scored, vocab]
    private readonly int contextLength;
    private readonly int firstScored;
    private readonly int scored;
    private readonly int vocab;
    private readonly int threads;

    /// <summary>Tokenizes <paramref name="text"/>, takes its first <paramref name="chunkCount"/> whole chunks and runs the base model on them.</summary>
    /// <exception cref="ArgumentException">The text has fewer whole chunks than asked.</exception>
    public KldMeter(Model baseModel, string text, int contextLength, int chunkCount, int threads)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 4);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkCount, 1);
        int[] tokens = baseModel.Tokenizer.Encode(text, baseModel.Vocabulary.AddBos);
        if (tokens.Length / contextLength < chunkCount)
            throw new ArgumentException($"the text has {tokens.Length:N0} tokens: {tokens.Length / contextLength} whole chunks of {contextLength}, fewer than the {chunkCount} asked", nameof(text));
        this.contextLength = contextLength;
        this.threads = Math.Max(1, threads);
        firstScored = contextLength / 2;
        scored = Scored(contextLength);
        vocab = baseModel.Config.VocabSize;
        chunks = new int[chunkCount][];
        for (int c = 0; c < chunkCount; c++)
        {
            chunks[c] = tokens.AsSpan(c * contextLength, contextLength).ToArray();
            if (baseModel.Vocabulary.AddBos)
                chunks[c][0] = baseModel.Vocabulary.BosId;
        }
        baseLogProbs = new float[chunkCount][];
        using var runtime = new Transformer(baseModel, Options());
        for (int c = 0; c < chunkCount; c++)
        {
            runtime.Reset();
            var logits = runtime.Forward(chunks[c], logitCount: contextLength - firstScored);
            var rows = baseLogProbs[c] = new float[scored * vocab];
            for (int j = 0; j < scored; j++)
                LogSoftmax.Compute(logits.Slice(j * vocab, vocab), rows.AsSpan(j * vocab, vocab));
        }
    }

    /// <summary>Chunks held.</summary>
    public int ChunkCount => chunks.Length;

    /// <summary>Tokens scored per chunk.</summary>
    public int ScoredPerChunk => scored;

    /// <summary>Mean KLD of <paramref name="model"/> against the base over every chunk.</summary>
    public double Measure(Model model) => Measure(model, Enumerable.Range(0, chunks.Length).ToArray());

    /// <summary>Mean KLD of <paramref name="model"/> against the base over the chunks <paramref name="chunkIndices"/>.</summary>
    public double Measure(Model model, IReadOnlyList<int> chunkIndices)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(chunkIndices);
        if (chunkIndices.Count == 0)
            throw new ArgumentException("no chunk to measure on", nameof(chunkIndices));
        var logProbs = new float[vocab];
        double sum = 0;
        using var runtime = new Transformer(model, Options());
        foreach (int c in chunkIndices)
        {
            runtime.Reset();
            var logits = runtime.Forward(chunks[c], logitCount: contextLength - firstScored);
            var rows = baseLogProbs[c];
            for (int j = 0; j < scored; j++)
            {
                LogSoftmax.Compute(logits.Slice(j * vocab, vocab), logProbs);
                sum += Evaluator.KlDivergence(rows.AsSpan(j * vocab, vocab), logProbs);
            }
        }
        return sum / (chunkIndices.Count * (double)scored);
    }

    /// <summary>Bytes of the reference log-probabilities a meter of <paramref name="chunkCount"/> chunks of
    /// <paramref name="contextLength"/> tokens holds for a vocabulary of <paramref name="vocab"/>.</summary>
    public static long ReferenceBytes(long vocab, int contextLength, int chunkCount) => (long)chunkCount * Scored(contextLength) * vocab * sizeof(float);

    /// <summary>Bytes one measurement's forward pass over a chunk of <paramref name="contextLength"/> tokens allocates for a
    /// model of <paramref name="config"/>: its logits and log-probabilities, the batch's activations and the KV cache.</summary>
    public static long ForwardBytes(ModelConfig config, int contextLength)
    {
        ArgumentNullException.ThrowIfNull(config);
        var c = config;
        long logits = (contextLength - contextLength / 2 + 1L) * c.VocabSize;
        long activations = (long)contextLength * (5L * c.Dim + 2L * c.QDim + 2L * c.KvDim + 2L * Math.Max(c.HiddenDim, c.ExpertHiddenDim));
        long cache = 2L * c.LayerCount * contextLength * c.KvDim;
        return (logits + activations + cache) * sizeof(float);
    }

    // Tokens of a chunk whose next-token distributions are compared: the second half, less the last.
    private static int Scored(int contextLength) => contextLength - 1 - contextLength / 2;

    private RuntimeOptions Options() => new() { Threads = threads, ContextLength = contextLength, BatchSize = contextLength };
}
