namespace Squeeze.Runtime;

/// <summary>
/// Keys and values of every past position, per layer, in f32: <c>keys[layer][pos, kvDim]</c>, <c>values[layer][pos, kvDim]</c>.
/// Keys are stored after RoPE, as the attention reads them.
/// </summary>
public sealed class KvCache
{
    private readonly float[][] keys;   // [layers][contextLength * kvDim]
    private readonly float[][] values; // [layers][contextLength * kvDim]

    public KvCache(int layers, int contextLength, int kvDim)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(layers, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(kvDim, 1);
        ContextLength = contextLength;
        KvDim = kvDim;
        keys = new float[layers][];
        values = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = new float[(long)contextLength * kvDim];
            values[l] = new float[(long)contextLength * kvDim];
        }
    }

    /// <summary>Positions the cache can hold.</summary>
    public int ContextLength { get; }

    public int KvDim { get; }

    /// <summary>Keys of <paramref name="layer"/> for positions [0, count): [count, kvDim].</summary>
    public Span<float> Keys(int layer, int start, int count) => keys[layer].AsSpan(start * KvDim, count * KvDim);

    /// <summary>Values of <paramref name="layer"/> for positions [start, start + count): [count, kvDim].</summary>
    public Span<float> Values(int layer, int start, int count) => values[layer].AsSpan(start * KvDim, count * KvDim);
}
