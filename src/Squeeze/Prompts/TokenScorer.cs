using Squeeze.Evaluation;
using Squeeze.Runtime;

namespace Squeeze.Prompts;

/// <summary>Surprisal of tokens under a model, −ln p(token | BOS, context, the tokens before it), in windows that fit the
/// runtime's context: a sequence longer than the context is scored window by window, each window seeing at least half a
/// context of what came before it.</summary>
internal sealed class TokenScorer(Transformer runtime, CancellationToken cancellation)
{
    private const int Chunk = 64; // tokens per forward call whose logits are kept: [Chunk, vocab] floats at a time

    private readonly int bos = runtime.Model.Tokenizer.BosId;
    private readonly float[] logProbabilities = new float[runtime.Model.Config.VocabSize]; // [vocab]

    /// <summary>Tokens run through the model so far (the scoring's cost).</summary>
    public long TokensRun { get; private set; }

    /// <summary><c>result[i] = −ln p(tokens[i] | BOS, context, tokens[..i])</c> in nats. A token with nothing before it
    /// (no BOS in the vocabulary, no context) gets ln(vocab), what a uniform guess costs.</summary>
    public float[] Surprisal(ReadOnlySpan<int> context, ReadOnlySpan<int> tokens)
    {
        var result = new float[tokens.Length];
        int lead = bos >= 0 ? 1 : 0;
        int room = runtime.Cache.ContextLength - lead;
        int done = 0;
        while (done < tokens.Length)
        {
            cancellation.ThrowIfCancellationRequested();
            int rest = tokens.Length - done;
            int history = Math.Min(context.Length + done, Math.Max(room / 2, room - rest));
            int count = Math.Min(rest, room - history);
            // sequence: [BOS] + the last `history` tokens of (context ++ tokens[..done]) + tokens[done .. done + count]
            var sequence = new int[lead + history + count];
            if (lead == 1)
                sequence[0] = bos;
            for (int i = 0; i < history; i++)
            {
                int k = context.Length + done - history + i; // index into context ++ tokens
                sequence[lead + i] = k < context.Length ? context[k] : tokens[k - context.Length];
            }
            tokens.Slice(done, count).CopyTo(sequence.AsSpan(lead + history));
            int prefix = lead + history; // positions before the first scored token
            if (prefix == 0)
            {
                result[done] = MathF.Log(logProbabilities.Length);
                prefix = 1;
            }
            Score(sequence, prefix, result.AsSpan(done + prefix - lead - history, count - (prefix - lead - history)));
            done += count;
        }
        return result;
    }

    // Scores sequence[prefix..] into destination: row r of a forward call predicts the token after its input.
    private void Score(int[] sequence, int prefix, Span<float> destination)
    {
        runtime.Reset();
        int a = prefix - 1;
        if (a > 0)
            runtime.Forward(sequence.AsSpan(0, a), logitCount: 0);
        int vocab = logProbabilities.Length;
        while (a < sequence.Length - 1)
        {
            int b = Math.Min(sequence.Length - 1, a + Chunk);
            var logits = runtime.Forward(sequence.AsSpan(a, b - a), b - a);
            for (int r = 0; r < b - a; r++)
            {
                LogSoftmax.Compute(logits.Slice(r * vocab, vocab), logProbabilities);
                destination[a + r + 1 - prefix] = -logProbabilities[sequence[a + r + 1]];
            }
            a = b;
        }
        TokensRun += sequence.Length - 1;
    }
}
