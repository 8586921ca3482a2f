namespace Squeeze.Prompts;

/// <summary>
/// Extractive sentence selection, RECOMP's extractive mode (Xu et al., 2023) with the model as the scorer instead of a
/// trained encoder: a sentence's score is ln p(query | sentence), how much it helps the model expect the query. The
/// query is the question, or without one the prompt's last sentence (what the answer continues), which is then kept
/// first. Sentences are kept whole, best first, each one that fits; the first that does not fit is cut to the words that
/// do, and selection stops there.
/// </summary>
internal static class ExtractiveSelection
{
    public static void Choose(TokenScorer scorer, PromptSpans spans, int[]? question, int budget, IProgress<StageProgress>? progress, bool[] keep)
    {
        int[] tokens = spans.Tokens;
        int[] sentences = spans.Sentences;
        int count = sentences.Length - 1;
        int last = count - 1;
        ReadOnlySpan<int> query = question ?? tokens.AsSpan(sentences[last], sentences[last + 1] - sentences[last]);
        int candidates = question is null ? last : count;
        var scores = new double[count];
        progress?.Report(new StageProgress("sentences", 1, 1, 0, 1, $"{candidates} sentences"));
        int[] queryTokens = query.ToArray();
        float[][] surprisal = scorer.Surprisal([.. Enumerable.Range(0, candidates).Select(p => (tokens[sentences[p]..sentences[p + 1]], queryTokens))]);
        for (int p = 0; p < candidates; p++)
            scores[p] = -surprisal[p].Sum(s => (double)s);
        if (question is null)
            scores[last] = double.PositiveInfinity;
        progress?.Report(new StageProgress("sentences", 1, 1, 1, 1, ""));

        int kept = 0;
        foreach (int p in Enumerable.Range(0, count).OrderByDescending(p => scores[p]).ThenBy(p => p))
        {
            int start = sentences[p], end = sentences[p + 1];
            if (kept + end - start > budget)
            {
                // the leading words of this sentence that fit
                int cut = start;
                foreach (int w in spans.Words)
                {
                    if (w > start && w <= end && kept + w - start <= budget)
                        cut = w;
                }
                for (int t = start; t < cut; t++)
                    keep[t] = true;
                break;
            }
            for (int t = start; t < end; t++)
                keep[t] = true;
            kept += end - start;
            if (kept == budget)
                break;
        }
    }
}
