using Squeeze.Kernels;
using Squeeze.Models;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Runtime;

/// <summary>Keys (after RoPE) and values of every past position in f16, read by the attention a tile of
/// <see cref="Tile"/> positions at a time (on a sliding-window layer, only the window's), or converted in registers as
/// the attention reads them (<see cref="Attention.HeadHalf"/>) where the head size allows.</summary>
public sealed unsafe class Float16KvCache : KvCache
{
    private const int Tile = 32;
    private readonly Half[][] keys;   // [layers][contextLength * kvDim]
    private readonly Half[][] values; // [layers][contextLength * kvDim]
    private readonly int[] held;      // [layers]

    /// <summary>An empty cache for <paramref name="contextLength"/> positions of <paramref name="config"/>'s attention, in f16.</summary>
    public Float16KvCache(ModelConfig config, int contextLength)
        : base(config, contextLength)
    {
        keys = new Half[LayerCount][];
        values = new Half[LayerCount][];
        held = new int[LayerCount];
        for (int l = 0; l < LayerCount; l++)
        {
            keys[l] = new Half[(long)contextLength * KvDim];
            values[l] = new Half[(long)contextLength * KvDim];
        }
    }

    /// <inheritdoc/>
    public override KvCachePolicy Policy { get; } = KvCachePolicy.Parse("f16");

    /// <summary>Scores for every position (of as many heads as one pass of <see cref="Attention.HeadsHalf"/> takes), then
    /// one tile of decoded rows.</summary>
    public override int ScratchLength => Math.Min(Attention.HeadsPerPass, HeadCount / KvHeadCount) * ContextLength + Tile * HeadDim;

    /// <inheritdoc/>
    public override void Append(int layer, int start, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        CheckAppend(layer, start, held[layer], keys, values);
        TensorPrimitives.ConvertToHalf(keys, this.keys[layer].AsSpan(start * KvDim, keys.Length));
        TensorPrimitives.ConvertToHalf(values, this.values[layer].AsSpan(start * KvDim, values.Length));
        held[layer] = start + keys.Length / KvDim;
    }

    /// <inheritdoc/>
    public override void Attend(int layer, int head, float* query, int position, float scale, float* scratch, float* output)
    {
        int first = WindowStart(layer, position), positions = position + 1 - first, headDim = HeadDim;
        int kvOffset = head / (HeadCount / KvHeadCount) * headDim;
        if (Attention.RunsHalf(headDim))
        {
            fixed (Half* k = keys[layer])
            fixed (Half* v = values[layer])
            {
                long offset = (long)first * KvDim + kvOffset;
                Attention.HeadHalf(query, (ushort*)k + offset, (ushort*)v + offset, KvDim, positions, headDim, scale, SoftCap, scratch, output);
            }
            return;
        }
        AttendByTiles(layer, first, positions, kvOffset, query, scale, scratch, output);
    }

    /// <inheritdoc/>
    /// <remarks>Where the head size allows, each f16 row is converted once for several heads (<see cref="Attention.HeadsHalf"/>).</remarks>
    public override void AttendGroup(int layer, int firstHead, int count, float* queries, int position, float scale, float* scratch, float* outputs)
    {
        if (!Attention.RunsHalf(HeadDim))
        {
            base.AttendGroup(layer, firstHead, count, queries, position, scale, scratch, outputs);
            return;
        }
        CheckGroup(firstHead, count);
        int group = HeadCount / KvHeadCount;
        int first = WindowStart(layer, position), positions = position + 1 - first;
        fixed (Half* k = keys[layer])
        fixed (Half* v = values[layer])
        {
            long offset = (long)first * KvDim + firstHead / group * HeadDim;
            Attention.HeadsHalf(queries, count, (ushort*)k + offset, (ushort*)v + offset, KvDim, positions, HeadDim, scale, SoftCap, scratch, outputs);
        }
    }

    /// <summary>What <see cref="Attention.HeadHalf"/> computes, bit for bit, for any head size: the rows converted to f32
    /// a tile at a time, then scored, softmaxed and summed.</summary>
    internal void AttendByTiles(int layer, int first, int positions, int kvOffset, float* query, float scale, float* scratch, float* output)
    {
        int headDim = HeadDim;
        float* scores = scratch, tile = scratch + ContextLength;
        for (int p0 = 0; p0 < positions; p0 += Tile)
        {
            int count = Math.Min(Tile, positions - p0);
            Decode(keys[layer], first + p0, count, kvOffset, tile);
            CacheAttention.Score(query, tile, headDim, count, headDim, scale, scores + p0);
        }
        if (SoftCap > 0)
            CacheAttention.Cap(scores, positions, SoftCap);
        CacheAttention.Softmax(scores, positions);
        new Span<float>(output, headDim).Clear();
        for (int p0 = 0; p0 < positions; p0 += Tile)
        {
            int count = Math.Min(Tile, positions - p0);
            Decode(values[layer], first + p0, count, kvOffset, tile);
            CacheAttention.Accumulate(scores + p0, tile, headDim, count, headDim, output);
        }
    }

    /// <summary>tile[i, :] = rows[first + i, kvOffset … kvOffset + headDim) as f32.</summary>
    private void Decode(Half[] rows, int first, int count, int kvOffset, float* tile)
    {
        for (int i = 0; i < count; i++)
            TensorPrimitives.ConvertToSingle(rows.AsSpan((first + i) * KvDim + kvOffset, HeadDim), new Span<float>(tile + i * HeadDim, HeadDim));
    }

    /// <inheritdoc/>
    public override long HeldBytes => held.Sum(h => (long)h * KvDim * 2 * sizeof(ushort));

    /// <inheritdoc/>
    public override long BytesAfter(int positions) => (long)LayerCount * positions * KvDim * 2 * sizeof(ushort);
}
