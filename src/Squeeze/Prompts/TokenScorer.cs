using Squeeze.Evaluation;
using Squeeze.Runtime;

namespace Squeeze.Prompts;

/// <summary>Surprisal of tokens under a model, −ln p(token | BOS, context, the tokens before it), in windows that fit the
/// runtime's context: a sequence longer than the context is scored window by window, each window seeing at least half a
/// context of what came before it. Calls that share a beginning with the previous call (the iterative pruning's kept
/// history) reuse its keys and values when the runtime's cache is f32 (rewound to the shared part); independent short
/// sequences scored together run side by side, each with a cache of its own.</summary>
internal sealed class TokenScorer(Transformer runtime, CancellationToken cancellation)
{
    private const int Chunk = 64;                 // tokens per forward call whose logits are kept: [Chunk, vocab] floats at a time
    private const int SideBySideRows = 256;       // rows of one forward call over independent sequences
    private const long SideBySideLogits = 1 << 23; // logit floats of one such call (32 MB)

    private readonly int bos = runtime.Model.Tokenizer.BosId;
    private readonly float[] logProbabilities = new float[runtime.Model.Config.VocabSize]; // [vocab]
    private int[] cached = [];                    // the tokens at positions [0, runtime.Position) of runtime.Cache after the last Score

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

    /// <summary>The surprisal of each item's tokens given its context, as <see cref="Surprisal(ReadOnlySpan{int}, ReadOnlySpan{int})"/>
    /// of each alone; the items that fit the context run side by side, many rows to a forward call.</summary>
    public float[][] Surprisal(IReadOnlyList<(int[] Context, int[] Tokens)> items)
    {
        var results = new float[items.Count][];
        int lead = bos >= 0 ? 1 : 0;
        int vocab = logProbabilities.Length;
        long logitRowLimit = Math.Max(1, SideBySideLogits / vocab);
        var rowTokens = new List<int>();
        var rowCaches = new List<KvCache>();
        var rowPositions = new List<int>();
        var logitRows = new List<int>();
        var targets = new List<(int Item, int Index, int Token)>(); // what each logit row predicts
        for (int i = 0; i < items.Count; i++)
        {
            var (context, tokens) = items[i];
            int length = lead + context.Length + tokens.Length;
            results[i] = new float[tokens.Length];
            if (tokens.Length == 0)
                continue;
            if (lead + context.Length == 0 || length > runtime.Cache.ContextLength || length - 1 > SideBySideRows || tokens.Length > logitRowLimit)
            {
                results[i] = Surprisal(context, tokens);
                continue;
            }
            if (rowTokens.Count + length - 1 > SideBySideRows || logitRows.Count + tokens.Length > logitRowLimit)
                RunSideBySide(rowTokens, rowCaches, rowPositions, logitRows, targets, results);
            int[] sequence = lead == 1 ? [bos, .. context, .. tokens] : [.. context, .. tokens];
            var cache = runtime.NewCache(length);
            for (int p = 0; p < length - 1; p++)
            {
                if (p >= length - 1 - tokens.Length)
                {
                    logitRows.Add(rowTokens.Count);
                    targets.Add((i, p + 1 - (length - tokens.Length), sequence[p + 1]));
                }
                rowTokens.Add(sequence[p]);
                rowCaches.Add(cache);
                rowPositions.Add(p);
            }
        }
        RunSideBySide(rowTokens, rowCaches, rowPositions, logitRows, targets, results);
        return results;
    }

    private void RunSideBySide(List<int> tokens, List<KvCache> caches, List<int> positions, List<int> logitRows,
        List<(int Item, int Index, int Token)> targets, float[][] results)
    {
        if (tokens.Count == 0)
            return;
        cancellation.ThrowIfCancellationRequested();
        int vocab = logProbabilities.Length;
        var logits = runtime.ForwardSequences([.. tokens], [.. caches], [.. positions], [.. logitRows]);
        for (int r = 0; r < targets.Count; r++)
        {
            LogSoftmax.Compute(logits.Slice(r * vocab, vocab), logProbabilities);
            results[targets[r].Item][targets[r].Index] = -logProbabilities[targets[r].Token];
        }
        TokensRun += tokens.Count;
        tokens.Clear();
        caches.Clear();
        positions.Clear();
        logitRows.Clear();
        targets.Clear();
    }

    // Scores sequence[prefix..] into destination: row r of a forward call predicts the token after its input. The
    // positions the sequence shares with the previous call's (up to prefix − 1) are kept when the cache can be rewound.
    private void Score(int[] sequence, int prefix, Span<float> destination)
    {
        int a = prefix - 1;
        int reuse = 0;
        if (runtime.Cache is Float32KvCache rewindable && runtime.Position == cached.Length)
        {
            int limit = Math.Min(a, cached.Length);
            while (reuse < limit && cached[reuse] == sequence[reuse])
                reuse++;
            rewindable.Truncate(reuse);
            runtime.Resume(reuse);
        }
        else
        {
            runtime.Reset();
        }
        cached = [];
        if (a > reuse)
            runtime.Forward(sequence.AsSpan(reuse, a - reuse), logitCount: 0);
        int vocab = logProbabilities.Length;
        int from = a;
        while (from < sequence.Length - 1)
        {
            int b = Math.Min(sequence.Length - 1, from + Chunk);
            var logits = runtime.Forward(sequence.AsSpan(from, b - from), b - from);
            for (int r = 0; r < b - from; r++)
            {
                LogSoftmax.Compute(logits.Slice(r * vocab, vocab), logProbabilities);
                destination[from + r + 1 - prefix] = -logProbabilities[sequence[from + r + 1]];
            }
            from = b;
        }
        TokensRun += sequence.Length - 1 - reuse;
        cached = sequence[..(sequence.Length - 1)];
    }
}
