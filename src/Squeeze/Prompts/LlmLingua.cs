namespace Squeeze.Prompts;

/// <summary>
/// LLMLingua (Jiang et al., 2023), and LongLLMLingua's question-aware scores when a question is given.
/// Stage 1, the budget controller: sentences are kept whole, highest score first, until they hold
/// <see cref="PromptCompressionOptions.CoarseFactor"/> times the budget; a sentence's score is its perplexity under the
/// model given the prompt before it (the least predictable sentences carry the most), or with a question
/// LongLLMLingua's −mean ln p(question | sentence) (the sentences that make the question likely).
/// Stage 2, iterative token-level pruning: the kept tokens are cut into segments; each segment is scored given the
/// tokens kept from the segments before it (so what was dropped no longer explains what follows), and keeps its share
/// of the remaining budget, the tokens of highest surprisal first, or with a question LongLLMLingua's contrastive score
/// (surprisal without the question − surprisal with it in front).
/// </summary>
internal static class LlmLingua
{
    public static void Choose(TokenScorer scorer, PromptSpans spans, int[]? question, int budget, PromptCompressionOptions options,
        IProgress<StageProgress>? progress, bool[] keep)
    {
        int[] tokens = spans.Tokens;
        // the tail: the last words, up to TailShare of the budget, kept whole (the slot LLMLingua leaves uncompressed for
        // the question at the end of a prompt); the head before it gets the rest of the budget
        int head = tokens.Length;
        foreach (int w in spans.Words)
        {
            if (tokens.Length - w <= options.TailShare * budget)
            {
                head = w;
                break;
            }
        }
        for (int t = head; t < tokens.Length; t++)
            keep[t] = true;
        budget -= tokens.Length - head;
        if (budget <= 0 || head == 0)
            return;
        bool[] coarse = BudgetController(scorer, spans, head, question, budget, options.CoarseFactor, progress);
        var characterStart = new bool[head];
        foreach (int b in spans.Words.AsSpan(0, spans.Words.Length - 1))
        {
            if (b < head)
                characterStart[b] = true;
        }

        // segments of about SegmentTokens kept positions, never splitting a character
        var positions = Enumerable.Range(0, head).Where(i => coarse[i]).ToArray();
        var segments = new List<(int Start, int End)>();
        for (int s = 0; s < positions.Length;)
        {
            int e = Math.Min(positions.Length, s + options.SegmentTokens);
            while (e < positions.Length && !characterStart[positions[e]])
                e++;
            segments.Add((s, e));
            s = e;
        }

        var history = new List<int>(budget + (question?.Length ?? 0));
        if (question is not null)
            history.AddRange(question);
        int questionLength = question?.Length ?? 0;
        int remainingBudget = budget;
        int remainingTokens = positions.Length;
        for (int g = 0; g < segments.Count; g++)
        {
            progress?.Report(new StageProgress("token pruning", 2, 2, g, segments.Count, $"segment {g + 1} of {segments.Count}"));
            var (start, end) = segments[g];
            int length = end - start;
            int[] segment = [.. positions.AsSpan(start, length).ToArray().Select(i => tokens[i])];
            float[] surprisal = scorer.Surprisal(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history), segment);
            if (question is not null)
            {
                float[] without = scorer.Surprisal(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history)[questionLength..], segment);
                for (int i = 0; i < length; i++)
                    surprisal[i] = without[i] - surprisal[i];
            }
            // the segment's characters as pieces
            var bounds = new List<int>();
            for (int i = 0; i < length; i++)
            {
                if (i == 0 || characterStart[positions[start + i]])
                    bounds.Add(i);
            }
            bounds.Add(length);
            int[] local = [.. bounds];
            int share = (int)Math.Round((double)remainingBudget * length / remainingTokens);
            var segmentKeep = new bool[length];
            int kept = PromptSpans.KeepBest(local, PromptSpans.Sum(local, surprisal), Math.Min(share, length), segmentKeep);
            for (int i = 0; i < length; i++)
            {
                if (segmentKeep[i])
                {
                    keep[positions[start + i]] = true;
                    history.Add(segment[i]);
                }
            }
            remainingBudget -= kept;
            remainingTokens -= length;
        }
        progress?.Report(new StageProgress("token pruning", 2, 2, segments.Count, segments.Count, ""));
    }

    // Stage 1: which tokens of the head [0, head) the token-level pruning sees (whole sentences, the last one cut at the head's end).
    private static bool[] BudgetController(TokenScorer scorer, PromptSpans spans, int head, int[]? question, int budget, double factor, IProgress<StageProgress>? progress)
    {
        int[] tokens = spans.Tokens.AsSpan(0, head).ToArray();
        int[] sentences = [.. spans.Sentences.Where(b => b < head), head];
        int count = sentences.Length - 1;
        var coarse = new bool[head];
        int coarseBudget = (int)Math.Min(head, Math.Ceiling(factor * budget));
        if (coarseBudget >= head || count <= 1)
        {
            Array.Fill(coarse, true);
            return coarse;
        }
        var scores = new double[count];
        if (question is null)
        {
            progress?.Report(new StageProgress("budget controller", 1, 2, 0, 1, $"{count} sentences"));
            float[] surprisal = scorer.Surprisal([], tokens);
            double[] sums = PromptSpans.Sum(sentences, surprisal);
            for (int p = 0; p < count; p++)
                scores[p] = sums[p] / (sentences[p + 1] - sentences[p]);
        }
        else
        {
            for (int p = 0; p < count; p++)
            {
                progress?.Report(new StageProgress("budget controller", 1, 2, p, count, $"sentence {p + 1} of {count}"));
                float[] q = scorer.Surprisal(tokens.AsSpan(sentences[p], sentences[p + 1] - sentences[p]), question);
                scores[p] = -q.Average();
            }
        }
        var order = Enumerable.Range(0, count).OrderByDescending(p => scores[p]).ThenBy(p => p);
        int kept = 0;
        foreach (int p in order)
        {
            if (kept >= coarseBudget)
                break;
            for (int t = sentences[p]; t < sentences[p + 1]; t++)
                coarse[t] = true;
            kept += sentences[p + 1] - sentences[p];
        }
        progress?.Report(new StageProgress("budget controller", 1, 2, 1, 1, $"{kept} of {head} tokens"));
        return coarse;
    }
}
