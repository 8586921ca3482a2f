namespace Squeeze.Prompts;

/// <summary>Selective Context (Li et al., 2023): the self-information of a lexical unit is the sum of its tokens'
/// surprisal given everything before it; the most informative words are kept until the budget is full.</summary>
internal static class SelectiveContext
{
    public static void Choose(TokenScorer scorer, PromptSpans spans, int budget, IProgress<StageProgress>? progress, bool[] keep)
    {
        progress?.Report(new StageProgress("self-information", 1, 1, 0, 1, $"{spans.Tokens.Length} tokens"));
        float[] surprisal = scorer.Surprisal([], spans.Tokens);
        PromptSpans.KeepBest(spans.Words, PromptSpans.Sum(spans.Words, surprisal), budget, keep);
        progress?.Report(new StageProgress("self-information", 1, 1, 1, 1, $"{spans.Words.Length - 1} words"));
    }
}
