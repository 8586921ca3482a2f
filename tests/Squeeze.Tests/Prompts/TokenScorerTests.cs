using Squeeze.Prompts;
using Squeeze.Runtime;

namespace Squeeze.Tests.Prompts;

/// <summary>The scorer's two shortcuts give what scoring each sequence alone from an empty cache gives: reusing the keys and
/// values a call shares with the one before it (the iterative pruning's kept history), and running independent sequences
/// side by side.</summary>
public sealed class TokenScorerTests(PromptFixture fixture) : IClassFixture<PromptFixture>
{
    private int[] Tokens => fixture.Model.Tokenizer.Encode(fixture.Prompt, addBos: false);

    // Each call alone: a new scorer on a reset runtime, so nothing is reused.
    private float[] Alone(int[] context, int[] tokens)
    {
        fixture.Runtime.Reset();
        return new TokenScorer(fixture.Runtime, default).Surprisal(context, tokens);
    }

    [Fact]
    public void A_call_sharing_its_beginning_with_the_last_reuses_it_and_scores_the_same()
    {
        int[] t = Tokens;
        int[] history = t[..60], segment = t[60..90];
        int[] kept = [.. history, .. segment.Where((_, i) => i % 3 == 0)]; // segment[0] kept, segment[1] not
        int[] next = t[90..120];
        var scorer = new TokenScorer(fixture.Runtime, default);
        fixture.Runtime.Reset();
        scorer.Surprisal(history, segment);
        long before = scorer.TokensRun;
        float[] reused = scorer.Surprisal(kept, next);
        long run = scorer.TokensRun - before;

        // BOS, the history and any kept tokens the segment starts with are shared; only the rest runs
        int bos = fixture.Model.Tokenizer.BosId;
        int[] last = [bos, .. history, .. segment], now = [bos, .. kept, .. next];
        int shared = 0;
        while (shared < kept.Length && last[shared] == now[shared])
            shared++;
        Assert.True(shared > history.Length);
        Assert.Equal(now.Length - 1 - shared, run);
        float[] fresh = Alone(kept, next);
        for (int i = 0; i < next.Length; i++)
            Assert.Equal(fresh[i], reused[i], 2e-3f);
        fixture.Runtime.Reset();
    }

    [Fact]
    public void Rewinding_an_f32_cache_forgets_what_follows()
    {
        var cache = new Float32KvCache(fixture.Model.Config, 16);
        var keys = new float[3 * cache.KvDim];
        for (int l = 0; l < cache.LayerCount; l++)
            cache.Append(l, 0, keys, keys);
        cache.Truncate(1);
        Assert.All(Enumerable.Range(0, cache.LayerCount), l => Assert.Equal(1, cache.Held(l)));
        Assert.Throws<InvalidOperationException>(() => cache.Append(0, 3, keys, keys));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Truncate(2));
    }

    [Fact]
    public void Sequences_side_by_side_score_as_each_alone()
    {
        int[] t = Tokens;
        // short items side by side, one longer than the context (windows), one with nothing to score
        (int[] Context, int[] Tokens)[] items = [(t[..12], t[12..30]), (t[40..45], t[45..60]), ([], t[100..110]), (t[..10], []), (t[..200], t[200..300])];
        var scorer = new TokenScorer(fixture.Runtime, default);
        float[][] together = scorer.Surprisal(items);
        for (int k = 0; k < items.Length; k++)
        {
            float[] alone = Alone(items[k].Context, items[k].Tokens);
            Assert.Equal(alone.Length, together[k].Length);
            for (int i = 0; i < alone.Length; i++)
                Assert.Equal(alone[i], together[k][i], 2e-3f);
        }
        fixture.Runtime.Reset();
    }
}
