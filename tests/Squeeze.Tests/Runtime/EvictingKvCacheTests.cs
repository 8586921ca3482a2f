using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Tests.Runtime;

public unsafe class EvictingKvCacheTests
{
    private static ModelConfig Config(int heads, int kvHeads, int headDim) => new()
    {
        Architecture = "llama", Dim = heads * headDim, HiddenDim = 8, LayerCount = 1, HeadCount = heads, KvHeadCount = kvHeads,
        HeadDim = headDim, VocabSize = 8, ContextLength = 128,
    };

    private static float[] Random(Random rng, int length)
    {
        var x = new float[length];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(rng.NextDouble() * 2 - 1) * 2;
        return x;
    }

    /// <summary>One key/value head of the policy, written plainly: a list of slots, scores in double.</summary>
    private sealed class ReferenceHead(int budget, int sinks, int window, bool merge, int queryHeads)
    {
        private sealed record Slot(int Position, float[] Key, float[] Value)
        {
            public double Count { get; set; } = 1;
            public double[] Attention { get; } = new double[8];
        }

        private readonly List<Slot> slots = [];

        public IEnumerable<int> Positions => slots.Select(s => s.Position);

        public void Append(int position, float[] key, float[] value)
        {
            if (slots.Count == budget)
            {
                bool Evictable(Slot s) => s.Position >= sinks && s.Position <= position - window;
                var victim = slots.Where(Evictable).MinBy(s => s.Attention.Sum() / (position - s.Position))!;
                int i = slots.IndexOf(victim);
                var neighbours = new[] { i - 1, i + 1 }.Where(n => n >= 0 && n < slots.Count && Evictable(slots[n])).ToArray();
                if (merge && neighbours.Length > 0)
                {
                    var target = slots[neighbours.MaxBy(n => Cosine(victim.Key, slots[n].Key))];
                    double mv = victim.Attention.Sum() / (position - victim.Position), mt = target.Attention.Sum() / (position - target.Position);
                    for (int d = 0; d < value.Length; d++)
                        target.Value[d] = (float)((mt * target.Value[d] + mv * victim.Value[d]) / (mt + mv));
                    target.Count *= (mt + mv) / mt;
                    for (int q = 0; q < queryHeads; q++)
                        target.Attention[q] += victim.Attention[q];
                }
                slots.RemoveAt(i);
            }
            slots.Add(new Slot(position, (float[])key.Clone(), (float[])value.Clone()));
        }

        public float[] Attend(int queryHead, float[] query)
        {
            var scores = slots.Select(s => query.Zip(s.Key, (a, b) => (double)a * b).Sum() / Math.Sqrt(query.Length) + Math.Log(s.Count)).ToArray();
            double max = scores.Max();
            var weights = scores.Select(x => Math.Exp(x - max)).ToArray();
            double total = weights.Sum();
            var output = new float[query.Length];
            for (int i = 0; i < slots.Count; i++)
            {
                slots[i].Attention[queryHead] += weights[i] / total;
                for (int d = 0; d < output.Length; d++)
                    output[d] += (float)(weights[i] / total * slots[i].Value[d]);
            }
            return output;
        }

        private static double Cosine(float[] a, float[] b)
            => a.Zip(b, (x, y) => (double)x * y).Sum() / Math.Sqrt(a.Sum(x => (double)x * x) * b.Sum(x => (double)x * x));
    }

    [Theory]
    [InlineData("evict:keep=0.25:sinks=2:window=4", 2, 1, 16)]
    [InlineData("evict:keep=0.4:sinks=0:window=0", 1, 1, 8)]
    [InlineData("evict:keep=0.3:sinks=3:window=5:merge=0", 4, 2, 12)]
    public void Matches_a_plain_reference_of_eviction_and_merging(string spec, int heads, int kvHeads, int headDim)
    {
        var config = Config(heads, kvHeads, headDim);
        int context = 60, kvDim = config.KvDim, group = heads / kvHeads;
        var policy = KvCachePolicy.Parse(spec);
        var cache = (EvictingKvCache)policy.CreateCache(config, context);
        var references = Enumerable.Range(0, kvHeads).Select(_ => new ReferenceHead(cache.Budget, policy.Sinks, policy.Window, policy.Merge, group)).ToArray();
        var rng = new Random(headDim);
        var scratch = new float[cache.ScratchLength];
        var output = new float[headDim];
        for (int p = 0; p < context; p++)
        {
            float[] keys = Random(rng, kvDim), values = Random(rng, kvDim);
            cache.Append(0, p, keys, values);
            for (int h = 0; h < kvHeads; h++)
            {
                references[h].Append(p, keys[(h * headDim)..((h + 1) * headDim)], values[(h * headDim)..((h + 1) * headDim)]);
                Assert.Equal(references[h].Positions, cache.HeldPositions(0, h));
            }
            for (int head = 0; head < heads; head++)
            {
                var query = Random(rng, headDim);
                fixed (float* q = query, s = scratch, o = output)
                    cache.Attend(0, head, q, p, 1 / MathF.Sqrt(headDim), s, o);
                var expected = references[head / group].Attend(head % group, query);
                for (int d = 0; d < headDim; d++)
                    Assert.True(MathF.Abs(expected[d] - output[d]) < 1e-4f * (1 + MathF.Abs(expected[d])), $"position {p} head {head} d {d}: {expected[d]} vs {output[d]}");
            }
        }
    }

    [Fact]
    public void Never_drops_the_sinks_or_the_recent_window_and_stays_within_budget()
    {
        var config = Config(heads: 4, kvHeads: 2, headDim: 8);
        int context = 200, sinks = 4, window = 16;
        var cache = (EvictingKvCache)KvCachePolicy.Parse($"evict:keep=0.05:sinks={sinks}:window={window}").CreateCache(config, context);
        Assert.Equal(sinks + window + 1, cache.Budget); // round(0.05 · 200) = 10 is too few to keep sinks and window and evict one
        var rng = new Random(2);
        var scratch = new float[cache.ScratchLength];
        var output = new float[8];
        for (int p = 0; p < context; p++)
        {
            var row = Random(rng, config.KvDim);
            if (p % 3 == 0)
                Array.Fill(row, 0.5f); // repeated tokens: merging candidates
            cache.Append(0, p, row, row);
            for (int head = 0; head < 4; head++)
            {
                var query = Random(rng, 8);
                fixed (float* q = query, s = scratch, o = output)
                    cache.Attend(0, head, q, p, 0.35f, s, o);
            }
            for (int h = 0; h < 2; h++)
            {
                var held = cache.HeldPositions(0, h);
                Assert.True(held.Count <= cache.Budget);
                for (int s = 0; s < Math.Min(sinks, p + 1); s++)
                    Assert.Contains(s, held);
                for (int w = Math.Max(0, p - window + 1); w <= p; w++)
                    Assert.Contains(w, held);
            }
        }
    }

    [Fact]
    public void Merging_equal_positions_changes_no_attention_output()
    {
        // every position has the same key and value: whatever is merged, the output is that value
        var config = Config(heads: 1, kvHeads: 1, headDim: 8);
        var cache = KvCachePolicy.Parse("evict:keep=0.2:sinks=1:window=2").CreateCache(config, 50);
        var row = new float[] { 0.3f, -1, 2, 0.5f, 0, 1, -0.25f, 4 };
        var scratch = new float[cache.ScratchLength];
        var output = new float[8];
        var query = new float[] { 1, 0.5f, -0.5f, 2, 1, 0, 0, 0.25f };
        for (int p = 0; p < 50; p++)
        {
            cache.Append(0, p, row, row);
            fixed (float* q = query, s = scratch, o = output)
                cache.Attend(0, 0, q, p, 0.35f, s, o);
            for (int d = 0; d < 8; d++)
                Assert.Equal(row[d], output[d], 1e-5f);
        }
    }
}
