namespace Squeeze.Prompts;

/// <summary>
/// LLMLingua (Jiang et al., 2023), and LongLLMLingua's question-aware scores when a question is given.
/// The budget controller first splits the budget as LLMLingua does between an instruction, demonstrations and a
/// question: the prompt's last words (a share of the budget, what an answer continues) are kept whole; its first
/// sentence gets at most <see cref="PromptCompressionOptions.InstructionShare"/>;
/// the middle the rest. In the middle, sentences are kept whole, highest score first, until they hold
/// <see cref="PromptCompressionOptions.CoarseFactor"/> times its budget; a sentence's score is its perplexity given the
/// prompt before it (the least predictable sentences carry the most), or with a question LongLLMLingua's
/// −mean ln p(question | sentence) (the sentences that make the question likely).
/// Then iterative token-level pruning of the first sentence and of the kept middle: they are cut into segments; each
/// segment is scored given the question (if any) and the tokens kept from the segments before it (so what was dropped no
/// longer explains what follows) and keeps its share of its part's remaining budget, the words of highest surprisal
/// first, or with a question LongLLMLingua's contrastive score (surprisal without the question − surprisal with it in front).
/// The tail's share is chosen per prompt among <see cref="PromptCompressionOptions.TailShares"/> by the model: the share
/// under which the prompt's own last words, held out, are most likely after the rest compressed with it.
/// </summary>
internal static class LlmLingua
{
    public static void Choose(TokenScorer scorer, PromptSpans spans, int[]? question, int budget, PromptCompressionOptions options,
        IProgress<StageProgress>? progress, bool[] keep)
    {
        double tailShare = options.TailShares[0];
        if (options.TailShares.Count > 1)
            tailShare = ProbeTailShare(scorer, spans, question, (double)spans.Tokens.Length / budget, options, progress);
        progress?.Report(new StageProgress("tail share", 1, 3, 1, 1, $"{tailShare} of the budget"));
        Compress(scorer, spans, question, budget, tailShare, options, progress, keep);
    }

    // The tail share (of options.TailShares) under which the prompt's own last ProbeShare, read after its compressed
    // beginning (the rest of the prompt compressed at the same ratio), is most likely: the slot an answer's
    // continuation needs, measured on the continuation the prompt itself holds. Ties go to the earlier share.
    private static double ProbeTailShare(TokenScorer scorer, PromptSpans spans, int[]? question, double ratio, PromptCompressionOptions options,
        IProgress<StageProgress>? progress)
    {
        int[] tokens = spans.Tokens;
        int split = tokens.Length;
        foreach (int w in spans.Words)
        {
            if (w > 0 && tokens.Length - w <= options.ProbeShare * tokens.Length)
            {
                split = w;
                break;
            }
        }
        var prefix = spans.Prefix(split);
        int budget = (int)Math.Round(split / ratio);
        if (split == tokens.Length || budget < 1 || budget >= split)
            return options.TailShares[0];
        int[] probe = tokens[split..];
        double best = double.PositiveInfinity, bestShare = options.TailShares[0];
        for (int k = 0; k < options.TailShares.Count; k++)
        {
            double share = options.TailShares[k];
            progress?.Report(new StageProgress("tail share", 1, 3, k, options.TailShares.Count, $"probing {share}"));
            var kept = new bool[split];
            Compress(scorer, prefix, question, budget, share, options, null, kept);
            int[] context = [.. Enumerable.Range(0, split).Where(i => kept[i]).Select(i => tokens[i])];
            double nll = scorer.Surprisal(context, probe).Sum(x => (double)x);
            if (nll < best)
            {
                best = nll;
                bestShare = share;
            }
        }
        return bestShare;
    }

    private static void Compress(TokenScorer scorer, PromptSpans spans, int[]? question, int budget, double tailShare, PromptCompressionOptions options,
        IProgress<StageProgress>? progress, bool[] keep)
    {
        int[] tokens = spans.Tokens;
        // LLMLingua's budget controller gives the instruction (the prompt's start) and the question (its end) gentle ratios
        // and compresses the demonstrations between them hardest. Here the question slot is the last words up to tailShare
        // of the budget (what the answer continues), kept whole; the instruction slot the first sentence, pruned like the
        // rest to at most InstructionShare of the budget (and what the tail left); the middle gets what is left, through both stages.
        int head = tokens.Length;
        foreach (int w in spans.Words)
        {
            if (tokens.Length - w <= tailShare * budget)
            {
                head = w;
                break;
            }
        }
        for (int t = head; t < tokens.Length; t++)
            keep[t] = true;
        budget -= tokens.Length - head;
        int first = Math.Min(spans.Sentences[1], head);
        int instructionBudget = Math.Clamp((int)(options.InstructionShare * (budget + tokens.Length - head)), 0, Math.Min(first, Math.Max(budget, 0)));
        int middleBudget = budget - instructionBudget;
        if (budget <= 0 || head == 0)
        {
            progress?.Report(new StageProgress("budget controller", 2, 3, 1, 1, "the tail holds the budget"));
            progress?.Report(new StageProgress("token pruning", 3, 3, 1, 1, "the tail holds the budget"));
            return;
        }
        bool[] coarse;
        if (middleBudget > 0 && head > first)
        {
            coarse = BudgetController(scorer, spans, first, head, question, middleBudget, options.CoarseFactor, progress);
        }
        else
        {
            coarse = new bool[head];
            progress?.Report(new StageProgress("budget controller", 2, 3, 1, 1, "no budget for the middle"));
        }
        var wordStart = new bool[head];
        foreach (int w in spans.Words)
        {
            if (w < head)
                wordStart[w] = true;
        }

        var history = new List<int>(budget + (question?.Length ?? 0));
        if (question is not null)
            history.AddRange(question);
        int[] instruction = [.. Enumerable.Range(0, first)];
        int[] middle = [.. Enumerable.Range(first, head - first).Where(i => coarse[i])];
        var segments = Segments(instruction, wordStart, options.SegmentTokens).Select(g => (Positions: instruction, g.Start, g.End, Group: 0))
            .Concat(Segments(middle, wordStart, options.SegmentTokens).Select(g => (Positions: middle, g.Start, g.End, Group: 1))).ToList();
        int[] remainingBudget = [instructionBudget, middleBudget];
        int[] remainingTokens = [instruction.Length, middle.Length];
        for (int g = 0; g < segments.Count; g++)
        {
            progress?.Report(new StageProgress("token pruning", 3, 3, g, segments.Count, $"segment {g + 1} of {segments.Count}"));
            var (positions, start, end, group) = segments[g];
            int length = end - start;
            int share = Math.Min(length, (int)Math.Round((double)remainingBudget[group] * length / remainingTokens[group]));
            int[] segment = [.. positions.AsSpan(start, length).ToArray().Select(i => tokens[i])];
            var segmentKeep = new bool[length];
            int kept;
            if (share == length)
            {
                Array.Fill(segmentKeep, true);
                kept = length;
            }
            else
            {
                var context = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history);
                float[] surprisal = scorer.Surprisal(context, segment);
                if (question is not null)
                {
                    float[] without = scorer.Surprisal(context[question.Length..], segment);
                    for (int i = 0; i < length; i++)
                        surprisal[i] = without[i] - surprisal[i];
                }
                // the segment's words as pieces
                int[] local = [.. Enumerable.Range(0, length).Where(i => i == 0 || wordStart[positions[start + i]]), length];
                kept = PromptSpans.KeepBest(local, PromptSpans.Sum(local, surprisal), share, segmentKeep);
            }
            for (int i = 0; i < length; i++)
            {
                if (segmentKeep[i])
                {
                    keep[positions[start + i]] = true;
                    history.Add(segment[i]);
                }
            }
            remainingBudget[group] -= kept;
            remainingTokens[group] -= length;
        }
        progress?.Report(new StageProgress("token pruning", 3, 3, segments.Count, segments.Count, ""));
    }

    // Segments of about `size` of the positions, never splitting a word.
    private static IEnumerable<(int Start, int End)> Segments(int[] positions, bool[] wordStart, int size)
    {
        for (int s = 0; s < positions.Length;)
        {
            int e = Math.Min(positions.Length, s + size);
            while (e < positions.Length && !wordStart[positions[e]])
                e++;
            yield return (s, e);
            s = e;
        }
    }

    // Stage 1: which tokens of the middle [first, head) the token-level pruning sees (whole sentences, cut at the middle's ends).
    private static bool[] BudgetController(TokenScorer scorer, PromptSpans spans, int first, int head, int[]? question, int budget, double factor, IProgress<StageProgress>? progress)
    {
        int[] tokens = spans.Tokens;
        int[] sentences = [first, .. spans.Sentences.Where(b => b > first && b < head), head];
        int count = sentences.Length - 1;
        var coarse = new bool[head];
        int coarseBudget = (int)Math.Min(head - first, Math.Ceiling(factor * budget));
        if (coarseBudget >= head - first || count <= 1)
        {
            progress?.Report(new StageProgress("budget controller", 2, 3, 1, 1, "the whole middle fits"));
            coarse.AsSpan(first).Fill(true);
            return coarse;
        }
        var scores = new double[count];
        if (question is null)
        {
            progress?.Report(new StageProgress("budget controller", 2, 3, 0, 1, $"{count} sentences"));
            float[] surprisal = scorer.Surprisal(tokens.AsSpan(0, first), tokens.AsSpan(first, head - first));
            for (int p = 0; p < count; p++)
            {
                double sum = 0;
                for (int t = sentences[p]; t < sentences[p + 1]; t++)
                    sum += surprisal[t - first];
                scores[p] = sum / (sentences[p + 1] - sentences[p]);
            }
        }
        else
        {
            progress?.Report(new StageProgress("budget controller", 2, 3, 0, 1, $"{count} sentences"));
            float[][] q = scorer.Surprisal([.. Enumerable.Range(0, count).Select(p => (tokens[sentences[p]..sentences[p + 1]], question))]);
            for (int p = 0; p < count; p++)
                scores[p] = -q[p].Average();
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
        progress?.Report(new StageProgress("budget controller", 2, 3, 1, 1, $"{kept} of {head - first} tokens"));
        return coarse;
    }
}
