namespace Squeeze.Prompts;

/// <summary>How a prompt is shortened.</summary>
public enum PromptCompressionMethod
{
    /// <summary>LLMLingua: a budget controller shares the budget between the prompt's first sentence, its middle and its
    /// last words (kept whole) and keeps the middle's sentences the model finds least predictable (with a question,
    /// LongLLMLingua's: the sentences that make the question most likely), then iterative token-level pruning, segment by
    /// segment, each scored conditioned on what was kept before it (with a question, LongLLMLingua's contrastive score).</summary>
    LlmLingua,

    /// <summary>Selective Context: words ranked by their self-information under the model (the sum of their tokens'
    /// surprisal given the whole prompt before them); the most informative kept. Ignores the question.</summary>
    SelectiveContext,

    /// <summary>Extractive sentence selection (RECOMP's extractive mode, scored by the model instead of a trained encoder):
    /// the sentences that make the query most likely are kept whole; the query is the question, or without one the prompt's
    /// last sentence (kept first).</summary>
    Extractive,

    /// <summary>Baseline: the first tokens.</summary>
    KeepFirst,

    /// <summary>Baseline: the last tokens.</summary>
    KeepLast,

    /// <summary>Baseline: tokens kept at random (seeded), in their order.</summary>
    Random,
}

/// <summary>What <see cref="PromptCompressor.Compress"/> is asked to do.</summary>
public sealed record PromptCompressionOptions
{
    /// <summary>Original tokens per kept token (at least 1).</summary>
    public double Ratio { get; init; } = 2;

    /// <summary>The method.</summary>
    public PromptCompressionMethod Method { get; init; } = PromptCompressionMethod.LlmLingua;

    /// <summary>A question the compressed prompt must still answer (LLMLingua and extractive selection use it); null for none.</summary>
    public string? Question { get; init; }

    /// <summary>Seed of <see cref="PromptCompressionMethod.Random"/>.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>LLMLingua: tokens per segment of the iterative token-level pruning (each segment is scored given the kept
    /// tokens of the segments before it).</summary>
    public int SegmentTokens { get; init; } = 32;

    /// <summary>LLMLingua: the budget controller keeps sentences for this many times the final budget (LLMLingua's granular
    /// control coefficient); the token-level pruning then cuts to the budget.</summary>
    public double CoarseFactor { get; init; } = 1;

    /// <summary>LLMLingua: the shares of the budget the prompt's last words may keep uncompressed, the slot LLMLingua's budget
    /// controller leaves whole for the question at the end of a prompt (here the text an answer continues; 1: the whole
    /// budget, 0: none). With more than one, each prompt takes the share under which its own last
    /// <see cref="ProbeShare"/> is most likely after the rest of it compressed at the same ratio with that share (the
    /// small model's conditional perplexity choosing the split); with one, that share.
    /// The default is one share, 0.7: the per-prompt choice (e.g. 0.5, 0.7, 0.85, 1), best on the tuning stories sampled
    /// from stories15M (bench <c>prompts --seed 250000</c>), kept no more on the held-out stories docs/BENCHMARKS.md
    /// reports on, at four to five times the model tokens.</summary>
    public IReadOnlyList<double> TailShares { get; init; } = [0.7];

    /// <summary>LLMLingua with several <see cref="TailShares"/>: the share of the prompt (its last words) held out to
    /// choose among them.</summary>
    public double ProbeShare { get; init; } = 0.4;

    /// <summary>LLMLingua: the largest share of the budget the prompt's first sentence keeps (pruned to it when longer), the
    /// slot LLMLingua's budget controller gives the instruction at the start of a prompt; 0: none.</summary>
    public double InstructionShare { get; init; } = 0.3;

    /// <summary>The name the command line uses for <paramref name="method"/> (<c>llmlingua</c>, <c>selective-context</c> …).</summary>
    public static string Name(PromptCompressionMethod method) => method switch
    {
        PromptCompressionMethod.LlmLingua => "llmlingua",
        PromptCompressionMethod.SelectiveContext => "selective-context",
        PromptCompressionMethod.Extractive => "extractive",
        PromptCompressionMethod.KeepFirst => "keep-first",
        PromptCompressionMethod.KeepLast => "keep-last",
        PromptCompressionMethod.Random => "random",
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "unknown method"),
    };

    /// <summary>The method named <paramref name="name"/> (see <see cref="Name"/>); an <see cref="ArgumentException"/> listing
    /// the names otherwise.</summary>
    public static PromptCompressionMethod Parse(string name)
    {
        foreach (var method in Enum.GetValues<PromptCompressionMethod>())
        {
            if (string.Equals(Name(method), name, StringComparison.OrdinalIgnoreCase))
                return method;
        }
        throw new ArgumentException($"unknown prompt compression method '{name}' (one of {string.Join(", ", Enum.GetValues<PromptCompressionMethod>().Select(Name))})", nameof(name));
    }
}

/// <summary>A compressed prompt: its text, and its length in the model's tokens against the original's.</summary>
/// <param name="Text">The kept tokens decoded, in their order.</param>
/// <param name="Method">The method that chose them.</param>
/// <param name="OriginalTokens">Tokens of the prompt (without BOS).</param>
/// <param name="Tokens">Tokens of <paramref name="Text"/> encoded again (without BOS): what the model will read.</param>
/// <param name="ScoredTokens">Tokens the model ran over to choose them (the compression's cost; 0 for the baselines).</param>
public sealed record PromptCompressionResult(string Text, PromptCompressionMethod Method, int OriginalTokens, int Tokens, long ScoredTokens)
{
    /// <summary>Original tokens per token of the compressed prompt.</summary>
    public double Ratio => Tokens == 0 ? double.PositiveInfinity : (double)OriginalTokens / Tokens;
}
