using Squeeze.Kernels;
using Squeeze.Models;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Runtime;

/// <summary>
/// A budget of positions per key/value head, in f32 (H2O-style eviction by accumulated attention, with merging). Each
/// slot holds a key, a value, the position it came from, how many positions it stands for, and the attention every
/// query head of the group has given it. Appending to a full head evicts the slot with the lowest mean attention per
/// query since it entered, never one of the first <c>sinks</c> positions nor of the last <c>window</c>; with merging, the
/// evicted value is averaged (weighted by attention mass) into the neighbouring slot whose key is more similar, when
/// that neighbour may itself be evicted, and the neighbour's count grows with the mass it absorbed: attention adds
/// ln(count) to a slot's score, so a merged slot weighs about as the positions it stands for.
/// </summary>
public sealed unsafe class EvictingKvCache : KvCache
{
    private readonly int sinks, window, budget, groupSize;
    private readonly bool merge;
    private readonly HeadStore[] heads; // [layers * kvHeads]
    private readonly int[] held;        // [layers]

    /// <summary>An empty cache for <paramref name="contextLength"/> positions holding at most <see cref="KvCachePolicy.Keep"/> of them, as
    /// <paramref name="policy"/> (an <c>evict:</c> policy) says.</summary>
    public EvictingKvCache(ModelConfig config, int contextLength, KvCachePolicy policy)
        : base(config, contextLength)
    {
        ArgumentNullException.ThrowIfNull(policy);
        if (policy.Kind != KvCacheKind.Evicting)
            throw new ArgumentException($"'{policy}' is not an evicting cache policy", nameof(policy));
        Policy = policy;
        sinks = policy.Sinks;
        window = policy.Window;
        merge = policy.Merge;
        groupSize = HeadCount / KvHeadCount;
        budget = Math.Min(contextLength, Math.Max(sinks + window + 1, (int)Math.Round(policy.Keep * contextLength)));
        heads = new HeadStore[LayerCount * KvHeadCount];
        for (int i = 0; i < heads.Length; i++)
            heads[i] = new HeadStore(budget, HeadDim, groupSize);
        held = new int[LayerCount];
    }

    /// <inheritdoc/>
    public override KvCachePolicy Policy { get; }

    /// <summary>Positions a key/value head holds at most.</summary>
    public int Budget => budget;

    /// <inheritdoc/>
    public override bool AttendsInOrder => true;

    /// <summary>Per slot: key and value, position, count, and the attention of each query head of the group.</summary>
    private long SlotBytes => 2L * HeadDim * sizeof(float) + sizeof(int) + sizeof(float) + groupSize * sizeof(float);

    /// <inheritdoc/>
    public override long HeldBytes => heads.Sum(h => h.Slots * SlotBytes);

    /// <inheritdoc/>
    public override long BytesAfter(int positions) => (long)LayerCount * KvHeadCount * Math.Min(positions, budget) * SlotBytes;

    /// <summary>Positions held by key/value head <paramref name="kvHead"/> of <paramref name="layer"/>, ascending.</summary>
    public IReadOnlyList<int> HeldPositions(int layer, int kvHead)
    {
        var h = heads[layer * KvHeadCount + kvHead];
        return h.Positions.AsSpan(0, h.Slots).ToArray();
    }

    /// <inheritdoc/>
    public override void Append(int layer, int start, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        bool fresh = CheckAppend(layer, start, held[layer], keys, values);
        int kvDim = KvDim, headDim = HeadDim;
        for (int kvHead = 0; kvHead < KvHeadCount; kvHead++)
        {
            var h = heads[layer * KvHeadCount + kvHead];
            if (fresh)
                h.Slots = 0;
            for (int i = 0; i < keys.Length / kvDim; i++)
            {
                int position = start + i;
                if (h.Slots == budget)
                    Evict(h, position);
                int slot = h.Slots++;
                keys.Slice(i * kvDim + kvHead * headDim, headDim).CopyTo(h.Keys.AsSpan(slot * headDim));
                values.Slice(i * kvDim + kvHead * headDim, headDim).CopyTo(h.Values.AsSpan(slot * headDim));
                h.Positions[slot] = position;
                h.Counts[slot] = 1;
                for (int q = 0; q < groupSize; q++)
                    h.Attention[q * budget + slot] = 0;
            }
        }
        held[layer] = start + keys.Length / kvDim;
    }

    /// <summary>Makes room for <paramref name="incoming"/>: removes the evictable slot with the lowest mean attention,
    /// merging it into a neighbour when allowed.</summary>
    private void Evict(HeadStore h, int incoming)
    {
        int victim = -1;
        double lowest = double.PositiveInfinity;
        for (int s = 0; s < h.Slots; s++)
        {
            if (!Evictable(h, s, incoming))
                continue;
            double mean = h.TotalAttention(s) / (incoming - h.Positions[s]); // queries at positions[s] … incoming − 1 saw it
            if (mean < lowest)
            {
                lowest = mean;
                victim = s;
            }
        }
        if (victim < 0)
            throw new InvalidOperationException($"no position can be evicted from a budget of {budget} with {sinks} sinks and a window of {window}");

        if (merge)
        {
            int target = -1;
            float best = float.NegativeInfinity;
            foreach (int n in (ReadOnlySpan<int>)[victim - 1, victim + 1])
            {
                if (n < 0 || n >= h.Slots || !Evictable(h, n, incoming))
                    continue;
                float similarity = TensorPrimitives.CosineSimilarity(h.Key(victim), h.Key(n));
                if (similarity > best)
                {
                    best = similarity;
                    target = n;
                }
            }
            if (target >= 0)
                MergeInto(h, victim, target, incoming);
        }
        h.Remove(victim);
    }

    /// <summary>Neither a sink nor in the window that ends at <paramref name="incoming"/>.</summary>
    private bool Evictable(HeadStore h, int slot, int incoming) => h.Positions[slot] >= sinks && h.Positions[slot] <= incoming - window;

    /// <summary>
    /// Merges the victim into the target by attention mass (m = mean attention received per query since the slot
    /// entered): value ← (m_t · target + m_v · victim) / (m_t + m_v); the target's count grows by the factor
    /// (m_t + m_v) / m_t, so that its ln(count) bias gives it about the attention both had; the target keeps its key
    /// (keys are stored after RoPE: an average of two would mix their positions). Attention sums add.
    /// </summary>
    private void MergeInto(HeadStore h, int victim, int target, int incoming)
    {
        double mv = h.TotalAttention(victim) / (incoming - h.Positions[victim]);
        double mt = h.TotalAttention(target) / (incoming - h.Positions[target]);
        if (!(mt > 0))
            (mv, mt) = (h.Counts[victim], h.Counts[target]); // nothing seen yet: by counts
        float wv = (float)(mv / (mv + mt)), wt = 1 - wv;
        var from = h.Value(victim);
        var to = h.Value(target);
        for (int d = 0; d < to.Length; d++)
            to[d] = wt * to[d] + wv * from[d];
        h.Counts[target] = (float)(h.Counts[target] * (mt + mv) / mt);
        for (int q = 0; q < groupSize; q++)
            h.Attention[q * budget + target] += h.Attention[q * budget + victim];
    }

    /// <inheritdoc/>
    public override void Attend(int layer, int head, float* query, int position, float scale, float* scratch, float* output)
    {
        int kvHead = head / groupSize, headDim = HeadDim;
        var h = heads[layer * KvHeadCount + kvHead];
        int slots = h.Slots;
        while (slots > 0 && h.Positions[slots - 1] > position)
            slots--; // positions appended after this query's (a batch appended whole)
        fixed (float* keys = h.Keys, values = h.Values, counts = h.Counts, attention = h.Attention)
        {
            CacheAttention.Score(query, keys, headDim, slots, headDim, scale, scratch);
            for (int s = 0; s < slots; s++)
                scratch[s] += MathF.Log(counts[s]);
            CacheAttention.Softmax(scratch, slots);
            new Span<float>(output, headDim).Clear();
            CacheAttention.Accumulate(scratch, values, headDim, slots, headDim, output);
            float* mine = attention + (head % groupSize) * budget; // only this query head writes here
            for (int s = 0; s < slots; s++)
                mine[s] += scratch[s];
        }
    }

    /// <summary>The slots of one key/value head of one layer, in order of position.</summary>
    private sealed class HeadStore(int budget, int headDim, int groupSize)
    {
        public float[] Keys { get; } = new float[budget * headDim];   // [budget, headDim]
        public float[] Values { get; } = new float[budget * headDim]; // [budget, headDim]
        public int[] Positions { get; } = new int[budget];            // [budget] ascending
        public float[] Counts { get; } = new float[budget];           // [budget] positions each slot stands for
        public float[] Attention { get; } = new float[groupSize * budget]; // [groupSize, budget] accumulated weights

        public int Slots { get; set; }

        public Span<float> Key(int slot) => Keys.AsSpan(slot * headDim, headDim);

        public Span<float> Value(int slot) => Values.AsSpan(slot * headDim, headDim);

        public double TotalAttention(int slot)
        {
            double sum = 0;
            for (int q = 0; q < groupSize; q++)
                sum += Attention[q * budget + slot];
            return sum;
        }

        /// <summary>Removes a slot, shifting the later ones down.</summary>
        public void Remove(int slot)
        {
            int after = Slots - slot - 1;
            Keys.AsSpan((slot + 1) * headDim, after * headDim).CopyTo(Keys.AsSpan(slot * headDim));
            Values.AsSpan((slot + 1) * headDim, after * headDim).CopyTo(Values.AsSpan(slot * headDim));
            Positions.AsSpan(slot + 1, after).CopyTo(Positions.AsSpan(slot));
            Counts.AsSpan(slot + 1, after).CopyTo(Counts.AsSpan(slot));
            for (int q = 0; q < groupSize; q++)
                Attention.AsSpan(q * budget + slot + 1, after).CopyTo(Attention.AsSpan(q * budget + slot));
            Slots--;
        }
    }
}
