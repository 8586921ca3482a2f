using Squeeze.Runtime;
using Squeeze.Tokenizers;

namespace Squeeze.Prompts;

/// <summary>
/// Prompt compression: a small model reads the prompt and the tokens it predicts best are dropped, so a larger model
/// (or the same one) reads fewer tokens for nearly the same effect. The methods and baselines of
/// <see cref="PromptCompressionMethod"/> all keep tokens of the prompt in their order (nothing is rewritten) and all
/// aim at the same budget: round(prompt tokens / ratio), in the model's tokens.
/// </summary>
public static class PromptCompressor
{
    /// <summary>
    /// Compresses <paramref name="prompt"/> as <paramref name="options"/> say, scoring it with <paramref name="runtime"/>'s
    /// model (its KV cache is used and left reset). Progress reports each stage of the method; the work stops with an
    /// <see cref="OperationCanceledException"/> when <paramref name="cancellationToken"/> is cancelled.
    /// An <see cref="ArgumentException"/> for an empty or binary prompt (<see cref="Validate"/>) or a ratio below 1.
    /// </summary>
    public static PromptCompressionResult Compress(Transformer runtime, string prompt, PromptCompressionOptions options,
        IProgress<StageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(options);
        Validate(prompt);
        if (!(options.Ratio >= 1) || double.IsInfinity(options.Ratio))
            throw new ArgumentException($"the ratio must be a number of at least 1, not {options.Ratio}", nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.SegmentTokens, 1, nameof(options));
        if (options.TailShares.Count == 0 || options.TailShares.Any(s => !(s >= 0 && s <= 1)))
            throw new ArgumentException($"the tail shares must be one or more numbers from 0 to 1, not [{string.Join(", ", options.TailShares)}]", nameof(options));
        if (!(options.ProbeShare > 0 && options.ProbeShare < 1))
            throw new ArgumentException($"the probe share must be a number between 0 and 1, not {options.ProbeShare}", nameof(options));
        var tokenizer = runtime.Model.Tokenizer;
        int[] tokens = tokenizer.Encode(prompt, addBos: false);
        int[]? question = string.IsNullOrWhiteSpace(options.Question) ? null : tokenizer.Encode(options.Question, addBos: false);
        var spans = new PromptSpans(tokenizer, tokens);
        int budget = Math.Clamp((int)Math.Round(tokens.Length / options.Ratio), 1, tokens.Length);
        var keep = new bool[tokens.Length];
        var scorer = new TokenScorer(runtime, cancellationToken);
        var saved = runtime.Cancellation;
        runtime.Cancellation = cancellationToken;
        try
        {
            if (budget == tokens.Length)
                Array.Fill(keep, true);
            else
                Choose(scorer, spans, question, budget, options, progress, keep);
        }
        finally
        {
            runtime.Cancellation = saved;
            runtime.Reset();
        }
        string text = KeptText(tokenizer, tokens, keep);
        return new PromptCompressionResult(text, options.Method, tokens.Length, tokenizer.Encode(text, addBos: false).Length, scorer.TokensRun);
    }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the problem when <paramref name="prompt"/> is empty (or only
    /// white space) or is not text (a control character other than tab, line feed, form feed and carriage return).</summary>
    public static void Validate(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        if (string.IsNullOrWhiteSpace(prompt))
            throw new ArgumentException("the prompt is empty", nameof(prompt));
        for (int i = 0; i < prompt.Length; i++)
        {
            char c = prompt[i];
            if (char.IsControl(c) && c is not ('\t' or '\n' or '\f' or '\r'))
                throw new ArgumentException($"the prompt is not text: control character U+{(int)c:X4} at character {i}", nameof(prompt));
        }
    }

    // The kept tokens' bytes in order, with a space where a gap would otherwise join two words (a dropped line break, a
    // sentence cut short); SentencePiece's added space prefix taken off the front, as decoding does.
    private static string KeptText(Tokenizer tokenizer, int[] tokens, bool[] keep)
    {
        var bytes = new List<byte>();
        bool gap = false;
        for (int i = 0; i < tokens.Length; i++)
        {
            if (!keep[i])
            {
                gap = bytes.Count > 0;
                continue;
            }
            byte[] piece = tokenizer.TokenBytes(tokens[i]);
            if (gap && piece.Length > 0 && !IsSpace(piece[0]) && !IsSpace(bytes[^1]))
                bytes.Add((byte)' ');
            bytes.AddRange(piece);
            gap = false;
        }
        int start = tokenizer.Vocabulary.AddSpacePrefix && bytes.Count > 0 && bytes[0] == (byte)' ' ? 1 : 0;
        return System.Text.Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes)[start..]);
    }

    private static bool IsSpace(byte b) => b is (byte)' ' or (byte)'\n' or (byte)'\t' or (byte)'\r';

    private static void Choose(TokenScorer scorer, PromptSpans spans, int[]? question, int budget, PromptCompressionOptions options,
        IProgress<StageProgress>? progress, bool[] keep)
    {
        int[] characters = spans.Characters;
        int pieces = characters.Length - 1;
        switch (options.Method)
        {
            case PromptCompressionMethod.KeepFirst:
                PromptSpans.KeepBest(characters, [.. Enumerable.Range(0, pieces).Select(p => -(double)p)], budget, keep, contiguous: true);
                break;
            case PromptCompressionMethod.KeepLast:
                PromptSpans.KeepBest(characters, [.. Enumerable.Range(0, pieces).Select(p => (double)p)], budget, keep, contiguous: true);
                break;
            case PromptCompressionMethod.Random:
                var random = new Random(options.Seed);
                PromptSpans.KeepBest(characters, [.. Enumerable.Range(0, pieces).Select(_ => random.NextDouble())], budget, keep);
                break;
            case PromptCompressionMethod.SelectiveContext:
                SelectiveContext.Choose(scorer, spans, budget, progress, keep);
                break;
            case PromptCompressionMethod.LlmLingua:
                LlmLingua.Choose(scorer, spans, question, budget, options, progress, keep);
                break;
            case PromptCompressionMethod.Extractive:
                ExtractiveSelection.Choose(scorer, spans, question, budget, progress, keep);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(options), options.Method, "unknown method");
        }
    }
}
