using Squeeze.Models;

namespace Squeeze.Runtime;

/// <summary>
/// The keys and values of one sequence's past positions, per layer, and the attention that reads them. The
/// <see cref="Transformer"/> appends each layer's new keys (after RoPE) and values, then asks the cache for the
/// attention of every (token, query head); how the cache stores what it holds (f32, f16, quantized groups, a subset of
/// the positions) is its own business, chosen by a <see cref="KvCachePolicy"/>.
/// </summary>
public abstract unsafe class KvCache
{
    /// <summary>Checks the shape of <paramref name="config"/>'s attention (query heads a multiple of the key/value heads) and keeps it, for
    /// <paramref name="contextLength"/> positions.</summary>
    protected KvCache(ModelConfig config, int contextLength)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(config.LayerCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(config.KvHeadCount, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(config.HeadDim, 1);
        if (config.HeadCount % config.KvHeadCount != 0)
            throw new ArgumentException($"{config.HeadCount} query heads do not share {config.KvHeadCount} key/value heads evenly", nameof(config));
        LayerCount = config.LayerCount;
        ContextLength = contextLength;
        HeadCount = config.HeadCount;
        KvHeadCount = config.KvHeadCount;
        HeadDim = config.HeadDim;
        windows = new int[LayerCount];
        for (int l = 0; l < LayerCount; l++)
            windows[l] = config.IsSlidingLayer(l) ? config.SlidingWindow : 0;
        SoftCap = config.AttentionSoftCap;
    }

    private readonly int[] windows; // [layers] positions a query sees (its own included), or 0 for all

    /// <summary>The first position a query at <paramref name="position"/> of <paramref name="layer"/> sees: 0, or on a
    /// sliding-window layer the first of the last <see cref="ModelConfig.SlidingWindow"/> positions.</summary>
    protected int WindowStart(int layer, int position) => windows[layer] > 0 ? Math.Max(0, position - windows[layer] + 1) : 0;

    /// <summary>The cap of the attention scores (<see cref="ModelConfig.AttentionSoftCap"/>), or 0.</summary>
    protected float SoftCap { get; }

    /// <summary>Positions the cache can hold.</summary>
    public int ContextLength { get; }

    /// <summary>Transformer blocks, each with its own keys and values.</summary>
    public int LayerCount { get; }

    /// <summary>Query heads; <see cref="HeadCount"/> / <see cref="KvHeadCount"/> of them share one key/value head.</summary>
    public int HeadCount { get; }

    /// <summary>Key/value heads per layer.</summary>
    public int KvHeadCount { get; }

    /// <summary>Values per head.</summary>
    public int HeadDim { get; }

    /// <summary>Values of one position's keys (and of its values) in one layer: <see cref="KvHeadCount"/> × <see cref="HeadDim"/>.</summary>
    public int KvDim => KvHeadCount * HeadDim;

    /// <summary>The policy this cache implements.</summary>
    public abstract KvCachePolicy Policy { get; }

    /// <summary>Floats of scratch one <see cref="Attend"/> call needs.</summary>
    public virtual int ScratchLength => ContextLength;

    /// <summary>
    /// True when attending changes what the cache keeps (eviction by accumulated attention): the positions of a batch
    /// must then be appended and attended one at a time, in order. Otherwise a whole batch is appended first and its
    /// (token, head) pairs attended in any order, each seeing exactly what it would have seen decoding one token at a time.
    /// </summary>
    public virtual bool AttendsInOrder => false;

    /// <summary>
    /// Stores the keys and values of positions [<paramref name="start"/>, <paramref name="start"/> + count) of one
    /// layer: <paramref name="keys"/> and <paramref name="values"/> are [count, kvDim]. <paramref name="start"/> is the
    /// number of positions the layer already holds, or 0 to forget them all and start a new sequence.
    /// </summary>
    public abstract void Append(int layer, int start, ReadOnlySpan<float> keys, ReadOnlySpan<float> values);

    /// <summary>
    /// <c>output = Σ_p softmax_p(scale · query · K[p]) · V[p]</c> for query head <paramref name="head"/> at
    /// <paramref name="position"/>, over the cached positions p ≤ <paramref name="position"/> as the cache holds them
    /// for a query there. <paramref name="query"/> and <paramref name="output"/> are [headDim];
    /// <paramref name="scratch"/> has <see cref="ScratchLength"/> floats. Calls for different (position, head) pairs may
    /// run at the same time.
    /// </summary>
    public abstract void Attend(int layer, int head, float* query, int position, float scale, float* scratch, float* output);

    /// <summary>
    /// <see cref="Attend"/> for the <paramref name="count"/> query heads from <paramref name="firstHead"/>, which share one
    /// key/value head (grouped-query attention): <paramref name="queries"/> and <paramref name="outputs"/> are
    /// [count, headDim], each head's result exactly what <see cref="Attend"/> gives it. A cache that can read each key and
    /// value once for the whole group overrides this; by default the heads attend one after another.
    /// </summary>
    public virtual void AttendGroup(int layer, int firstHead, int count, float* queries, int position, float scale, float* scratch, float* outputs)
    {
        CheckGroup(firstHead, count);
        for (int j = 0; j < count; j++)
            Attend(layer, firstHead + j, queries + j * HeadDim, position, scale, scratch, outputs + j * HeadDim);
    }

    /// <summary>Checks that query heads [<paramref name="firstHead"/>, + <paramref name="count"/>) share one key/value head.</summary>
    protected void CheckGroup(int firstHead, int count)
    {
        int group = HeadCount / KvHeadCount;
        if (count < 1 || firstHead / group != (firstHead + count - 1) / group)
            throw new ArgumentOutOfRangeException(nameof(count), $"query heads {firstHead}..{firstHead + count - 1} do not share one key/value head");
    }

    /// <summary>Bytes the cache holds now for its positions (every layer): what the stored keys, values and their
    /// scales, outliers, factors and bookkeeping take.</summary>
    public abstract long HeldBytes { get; }

    /// <summary>Bytes a cache of this policy holds (every layer) after <paramref name="positions"/> positions decoded
    /// one at a time.</summary>
    public abstract long BytesAfter(int positions);

    /// <summary>Checks <paramref name="start"/> against the positions a layer holds; returns true when it starts a new sequence.</summary>
    protected bool CheckAppend(int layer, int start, int held, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, LayerCount);
        if (keys.Length != values.Length || keys.Length % KvDim != 0)
            throw new ArgumentException($"keys ({keys.Length}) and values ({values.Length}) must both be whole rows of {KvDim}");
        if (start != 0 && start != held)
            throw new InvalidOperationException($"layer {layer} holds {held} positions; cannot append at position {start}");
        if (start + keys.Length / KvDim > ContextLength)
            throw new InvalidOperationException($"{keys.Length / KvDim} positions at {start} do not fit the context of {ContextLength}");
        return start == 0;
    }
}
