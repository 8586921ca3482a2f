using Squeeze.Models;

namespace Squeeze.Runtime;

/// <summary>
/// Keys and values of every past position in f32: <c>keys[layer][pos, kvDim]</c>, <c>values[layer][pos, kvDim]</c>.
/// Keys are stored after RoPE, as the attention reads them. The runtime's default: exact.
/// </summary>
public sealed unsafe class Float32KvCache : KvCache
{
    private readonly float[][] keys;   // [layers][contextLength * kvDim]
    private readonly float[][] values; // [layers][contextLength * kvDim]
    private readonly int[] held;       // [layers] positions stored

    /// <summary>An empty cache for <paramref name="contextLength"/> positions of <paramref name="config"/>'s attention, in f32.</summary>
    public Float32KvCache(ModelConfig config, int contextLength)
        : base(config, contextLength)
    {
        keys = new float[LayerCount][];
        values = new float[LayerCount][];
        held = new int[LayerCount];
        for (int l = 0; l < LayerCount; l++)
        {
            keys[l] = new float[(long)contextLength * KvDim];
            values[l] = new float[(long)contextLength * KvDim];
        }
    }

    /// <inheritdoc/>
    public override KvCachePolicy Policy => KvCachePolicy.Float32;

    /// <summary>Attend with <see cref="Kernels.Attention.HeadDeterministic"/>: the same bits at every SIMD level (the
    /// runtime's deterministic mode, <see cref="RuntimeOptions.Deterministic"/>).</summary>
    public bool Deterministic { get; init; }

    /// <summary>Makes this cache hold the first <paramref name="positions"/> positions of <paramref name="source"/>, a
    /// cache of the same model and context length (a sequence forked at that point).</summary>
    public void CopyFrom(Float32KvCache source, int positions)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.LayerCount != LayerCount || source.KvDim != KvDim || source.ContextLength != ContextLength)
            throw new ArgumentException("the source cache has another shape", nameof(source));
        for (int l = 0; l < LayerCount; l++)
        {
            if (positions > source.held[l])
                throw new ArgumentOutOfRangeException(nameof(positions), $"layer {l} of the source holds {source.held[l]} positions, not {positions}");
            source.keys[l].AsSpan(0, positions * KvDim).CopyTo(keys[l]);
            source.values[l].AsSpan(0, positions * KvDim).CopyTo(values[l]);
            held[l] = positions;
        }
    }

    /// <summary>Forgets every position from <paramref name="positions"/> on in every layer (a sequence rewound to an earlier
    /// point, to continue it another way: <see cref="Transformer.Resume"/> at <paramref name="positions"/>).</summary>
    public void Truncate(int positions)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(positions);
        for (int l = 0; l < LayerCount; l++)
        {
            if (positions > held[l])
                throw new ArgumentOutOfRangeException(nameof(positions), $"layer {l} holds {held[l]} positions, not {positions}");
        }
        for (int l = 0; l < LayerCount; l++)
            held[l] = positions;
    }

    /// <summary>Positions layer <paramref name="layer"/> holds.</summary>
    public int Held(int layer) => held[layer];

    /// <summary>Copies positions [<paramref name="start"/>, start + count) of one layer into <paramref name="keys"/> and
    /// <paramref name="values"/>, [count, kvDim] each (what a saved cache stores).</summary>
    public void Read(int layer, int start, int count, Span<float> keys, Span<float> values)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        if (start + count > held[layer])
            throw new ArgumentOutOfRangeException(nameof(count), $"layer {layer} holds {held[layer]} positions, not {start + count}");
        this.keys[layer].AsSpan(start * KvDim, count * KvDim).CopyTo(keys);
        this.values[layer].AsSpan(start * KvDim, count * KvDim).CopyTo(values);
    }

    /// <inheritdoc/>
    public override void Append(int layer, int start, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        CheckAppend(layer, start, held[layer], keys, values);
        keys.CopyTo(this.keys[layer].AsSpan(start * KvDim));
        values.CopyTo(this.values[layer].AsSpan(start * KvDim));
        held[layer] = start + keys.Length / KvDim;
    }

    /// <inheritdoc/>
    public override void Attend(int layer, int head, float* query, int position, float scale, float* scratch, float* output)
    {
        int first = WindowStart(layer, position);
        long offset = (long)first * KvDim + head / (HeadCount / KvHeadCount) * HeadDim;
        int positions = position + 1 - first;
        fixed (float* k = keys[layer])
        fixed (float* v = values[layer])
        {
            if (SoftCap > 0)
                Kernels.Attention.HeadSoftCapped(query, k + offset, v + offset, KvDim, positions, HeadDim, scale, SoftCap, scratch, output);
            else if (Deterministic)
                Kernels.Attention.HeadDeterministic(query, k + offset, v + offset, KvDim, positions, HeadDim, scale, scratch, output);
            else
                Kernels.Attention.Head(query, k + offset, v + offset, KvDim, positions, HeadDim, scale, scratch, output);
        }
    }

    /// <inheritdoc/>
    public override long HeldBytes => held.Sum(h => (long)h * KvDim * 2 * sizeof(float));

    /// <inheritdoc/>
    public override long BytesAfter(int positions) => (long)LayerCount * positions * KvDim * 2 * sizeof(float);
}
