using Squeeze.Kernels;
using Squeeze.Models;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Runtime;

/// <summary>
/// KIVI-style quantized cache. Positions [0, sinks) stay in f32 (attention sinks). The rest enter a full-precision
/// tail; once a group of <c>group</c> tokens is older than the recent window, it is quantized with <c>bits</c> bits:
/// keys per channel over the group's tokens, values per token over a few channels of a head, each quantization group
/// with an f16 scale and minimum (asymmetric, round to nearest). Optionally the most extreme values of a group are kept
/// exactly in f16 beside their index (dense-and-sparse, KVQuant) and the group's residual is approximated by f16 factors
/// of rank R (GEAR). A query at position p reads exactly what token-by-token decoding to p would hold, so a prompt
/// batch sees the same cache as decoding: the tail keeps f32 copies until no query of the batch needs them.
/// </summary>
/// <remarks>A group is stored head-major so that the attention decodes one [group, headDim] tile of one head at a time:
/// codes <c>[groups][kvHeads][group][rowBytes]</c>, key scales <c>[groups][kvDim]</c>, value scales
/// <c>[groups][kvHeads][group][valueSplits]</c>; outlier indices count in the same [kvHeads][group][headDim] order.</remarks>
public sealed unsafe class QuantizedKvCache : KvCache
{
    private readonly int bits, levels, sinks, window, group, valueSplits, rank;
    private readonly int rowBytes;              // bytes of one head's codes for one token
    private readonly int keyOutliers;           // per group
    private readonly int valueOutliersPerToken; // per token (a group holds group × this)
    private readonly int maxGroups;
    private readonly LayerStore[] stores;

    // work buffers of Append (single-threaded)
    private readonly float[] block;      // [kvHeads, group, headDim] one group in head-major order
    private readonly float[] outlierScore; // [kvHeads * group * headDim]
    private readonly int[] order;        // [kvHeads * group * headDim]
    private readonly bool[] isOutlier;   // [kvHeads * group * headDim]
    private readonly byte[] codes;       // [kvHeads * group * headDim] unpacked codes
    private readonly float[] residual;   // [group, kvDim]
    private readonly float[] groupRows;  // [group, kvDim] the full-precision rows of the group being quantized

    /// <summary>An empty cache for <paramref name="contextLength"/> positions quantized as <paramref name="policy"/> (a <c>q8</c>/<c>q4</c>/<c>q2</c>
    /// policy) says.</summary>
    public QuantizedKvCache(ModelConfig config, int contextLength, KvCachePolicy policy)
        : base(config, contextLength)
    {
        ArgumentNullException.ThrowIfNull(policy);
        if (policy.Kind != KvCacheKind.Quantized || policy.Bits is not (2 or 4 or 8))
            throw new ArgumentException($"'{policy}' is not a quantized cache policy of 2, 4 or 8 bits", nameof(policy));
        Policy = policy;
        bits = policy.Bits;
        levels = (1 << bits) - 1;
        sinks = Math.Min(policy.Sinks, contextLength);
        window = policy.Window;
        group = policy.Group;
        rank = policy.LowRank;
        valueSplits = (HeadDim + policy.ValueGroup - 1) / policy.ValueGroup;
        rowBytes = PackedCodes.ByteCount(HeadDim, bits);
        keyOutliers = (int)Math.Round(policy.Outliers * group * KvDim);
        valueOutliersPerToken = (int)Math.Round(policy.Outliers * KvDim);
        maxGroups = Math.Max(0, (contextLength - sinks) / group);
        stores = new LayerStore[LayerCount];
        for (int l = 0; l < LayerCount; l++)
            stores[l] = new LayerStore(this);
        int blockLength = group * KvDim;
        block = new float[blockLength];
        outlierScore = new float[blockLength];
        order = new int[blockLength];
        isOutlier = new bool[blockLength];
        codes = new byte[blockLength];
        residual = new float[blockLength];
        groupRows = new float[blockLength];
    }

    /// <inheritdoc/>
    public override KvCachePolicy Policy { get; }

    /// <summary>Scores for every position; one decoded tile [group, headDim]; a head's key scales and minimums
    /// [2, headDim]; the low-rank factor rows of the head [rank, headDim].</summary>
    public override int ScratchLength => ContextLength + group * HeadDim + 2 * HeadDim + rank * HeadDim;

    /// <summary>End of the quantized positions when <paramref name="positions"/> positions are held: the groups older than the window.</summary>
    private int QuantizedEnd(int positions) => sinks + group * (Math.Max(0, positions - sinks - window) / group);

    private long GroupBytes =>
        2L * KvHeadCount * group * rowBytes                         // key and value codes
        + 2L * sizeof(ushort) * KvDim                               // key scale and minimum per channel
        + 2L * sizeof(ushort) * KvHeadCount * group * valueSplits   // value scale and minimum per token and split
        + (sizeof(int) + sizeof(ushort)) * (long)(keyOutliers + group * valueOutliersPerToken)
        + 2L * sizeof(ushort) * rank * (group + KvDim);             // key and value factors

    /// <summary>Key and value of one position kept in full precision (sink or tail).</summary>
    private long RowBytes => 2L * KvDim * (Policy.HalfFullRows ? sizeof(ushort) : sizeof(float));

    /// <inheritdoc/>
    public override long HeldBytes => stores.Sum(s => Math.Min(s.Held, sinks) * RowBytes + s.Groups * GroupBytes + Math.Max(0, s.Held - s.TailStart) * RowBytes);

    /// <inheritdoc/>
    public override long BytesAfter(int positions)
    {
        int end = QuantizedEnd(positions);
        return LayerCount * (Math.Min(positions, sinks) * RowBytes + (end - sinks) / group * GroupBytes + Math.Max(0, positions - end) * RowBytes);
    }

    /// <inheritdoc/>
    public override void Append(int layer, int start, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        var s = stores[layer];
        if (CheckAppend(layer, start, s.Held, keys, values))
        {
            s.TailStart = sinks;
            s.Groups = 0;
        }
        int kvDim = KvDim, end = start + keys.Length / kvDim;
        for (int p = start; p < end; p++)
        {
            var k = keys.Slice((p - start) * kvDim, kvDim);
            var v = values.Slice((p - start) * kvDim, kvDim);
            if (p < sinks)
            {
                s.SinkKeys.Write(p, k);
                s.SinkValues.Write(p, v);
            }
            else
            {
                s.TailKeys.EnsureRows(end - s.TailStart, window + group);
                s.TailValues.EnsureRows(end - s.TailStart, window + group);
                s.TailKeys.Write(p - s.TailStart, k);
                s.TailValues.Write(p - s.TailStart, v);
            }
        }
        for (int quantizedEnd = QuantizedEnd(end); sinks + (s.Groups + 1) * group <= quantizedEnd; s.Groups++)
        {
            int row = sinks + s.Groups * group - s.TailStart;
            s.TailKeys.Read(row, group, groupRows);
            QuantizeKeys(s, s.Groups, groupRows);
            s.TailValues.Read(row, group, groupRows);
            QuantizeValues(s, s.Groups, groupRows);
        }
        // the first query of this batch (position start) reads full-precision rows from QuantizedEnd(start + 1) on
        int keepFrom = QuantizedEnd(start + 1);
        if (keepFrom > s.TailStart)
        {
            int keep = Math.Max(0, end - keepFrom);
            s.TailKeys.Drop(keepFrom - s.TailStart, keep);
            s.TailValues.Drop(keepFrom - s.TailStart, keep);
            s.TailStart = keepFrom;
        }
        s.Held = end;
    }

    /// <inheritdoc/>
    public override void Attend(int layer, int head, float* query, int position, float scale, float* scratch, float* output)
    {
        var s = stores[layer];
        int positions = position + 1, headDim = HeadDim, kvDim = KvDim;
        int kvHead = head / (HeadCount / KvHeadCount), offset = kvHead * headDim;
        int sinkCount = Math.Min(positions, sinks);
        int tailFrom = QuantizedEnd(positions), groups = (tailFrom - sinks) / group;
        int tailCount = positions - tailFrom;
        float* scores = scratch, tile = scratch + ContextLength, work = tile + group * headDim;

        s.SinkKeys.Score(0, sinkCount, offset, query, scale, scores, tile, group);
        for (int g = 0; g < groups; g++)
        {
            DecodeKeyTile(s, g, kvHead, tile, work);
            CacheAttention.Score(query, tile, headDim, group, headDim, scale, scores + sinks + g * group);
        }
        if (tailCount > 0)
            s.TailKeys.Score(tailFrom - s.TailStart, tailCount, offset, query, scale, scores + tailFrom, tile, group);
        if (SoftCap > 0)
            CacheAttention.Cap(scores, positions, SoftCap);
        // a sliding-window layer: the positions before the window get no weight (their groups are still decoded whole)
        new Span<float>(scores, WindowStart(layer, position)).Fill(float.NegativeInfinity);
        CacheAttention.Softmax(scores, positions);
        new Span<float>(output, headDim).Clear();
        s.SinkValues.Accumulate(0, sinkCount, offset, scores, output, tile, group);
        for (int g = 0; g < groups; g++)
        {
            DecodeValueTile(s, g, kvHead, tile, work);
            CacheAttention.Accumulate(scores + sinks + g * group, tile, headDim, group, headDim, output);
        }
        if (tailCount > 0)
            s.TailValues.Accumulate(tailFrom - s.TailStart, tailCount, offset, scores + tailFrom, output, tile, group);
    }

    /// <summary>tile[t, d] = the key of token t of group <paramref name="g"/>, channel d of <paramref name="kvHead"/>:
    /// min + scale · code per channel, plus the low-rank residual, outliers put back. <paramref name="work"/> holds
    /// [2 + rank, headDim] floats.</summary>
    private void DecodeKeyTile(LayerStore s, int g, int kvHead, float* tile, float* work)
    {
        int headDim = HeadDim, offset = kvHead * headDim;
        fixed (byte* codes = s.KeyCodes)
        {
            byte* first = codes + ((long)g * KvHeadCount + kvHead) * group * rowBytes;
            for (int t = 0; t < group; t++)
                PackedCodes.Unpack(first + t * rowBytes, bits, headDim, tile + t * headDim);
        }
        var scale = new Span<float>(work, headDim);
        var min = new Span<float>(work + headDim, headDim);
        TensorPrimitives.ConvertToSingle(s.KeyScale.AsSpan(g * KvDim + offset, headDim), scale);
        TensorPrimitives.ConvertToSingle(s.KeyMin.AsSpan(g * KvDim + offset, headDim), min);
        for (int t = 0; t < group; t++)
        {
            var row = new Span<float>(tile + t * headDim, headDim);
            TensorPrimitives.MultiplyAdd(row, scale, min, row);
        }
        AddLowRank(s.KeyFactorA, s.KeyFactorB, g, offset, tile, work + 2 * headDim);
        PutOutliersBack(s.KeyOutlierIndex, s.KeyOutlierValue, g * keyOutliers, keyOutliers, kvHead, tile);
    }

    /// <summary>tile[t, d] = the value of token t of group <paramref name="g"/>, channel d of <paramref name="kvHead"/>.</summary>
    private void DecodeValueTile(LayerStore s, int g, int kvHead, float* tile, float* work)
    {
        int headDim = HeadDim;
        fixed (byte* codes = s.ValueCodes)
        {
            byte* first = codes + ((long)g * KvHeadCount + kvHead) * group * rowBytes;
            for (int t = 0; t < group; t++)
                PackedCodes.Unpack(first + t * rowBytes, bits, headDim, tile + t * headDim);
        }
        int scales = ((g * KvHeadCount + kvHead) * group) * valueSplits;
        for (int t = 0; t < group; t++)
        {
            for (int j = 0; j < valueSplits; j++)
            {
                int from = j * headDim / valueSplits, to = (j + 1) * headDim / valueSplits;
                var part = new Span<float>(tile + t * headDim + from, to - from);
                TensorPrimitives.Multiply(part, (float)s.ValueScale[scales + t * valueSplits + j], part);
                TensorPrimitives.Add(part, (float)s.ValueMin[scales + t * valueSplits + j], part);
            }
        }
        AddLowRank(s.ValueFactorA, s.ValueFactorB, g, kvHead * headDim, tile, work + 2 * headDim);
        PutOutliersBack(s.ValueOutlierIndex, s.ValueOutlierValue, g * group * valueOutliersPerToken, group * valueOutliersPerToken, kvHead, tile);
    }

    /// <summary>tile[t, :] += Σ_j A[t, j] · B[j, offset …] for the rank-R factors of group <paramref name="g"/>.</summary>
    private void AddLowRank(Half[] a, Half[] b, int g, int offset, float* tile, float* factorRows)
    {
        if (rank == 0)
            return;
        int headDim = HeadDim;
        for (int j = 0; j < rank; j++)
            TensorPrimitives.ConvertToSingle(b.AsSpan((g * rank + j) * KvDim + offset, headDim), new Span<float>(factorRows + j * headDim, headDim));
        for (int t = 0; t < group; t++)
        {
            var row = new Span<float>(tile + t * headDim, headDim);
            for (int j = 0; j < rank; j++)
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(factorRows + j * headDim, headDim), (float)a[(g * group + t) * rank + j], row, row);
        }
    }

    /// <summary>Overwrites the tile's outliers (indices sorted, in [kvHeads][group][headDim] order) with their stored values.</summary>
    private void PutOutliersBack(int[] indices, Half[] values, int first, int count, int kvHead, float* tile)
    {
        if (count == 0)
            return;
        int tileLength = group * HeadDim, lo = kvHead * tileLength;
        var span = indices.AsSpan(first, count);
        int i = span.BinarySearch(lo);
        for (i = i < 0 ? ~i : i; i < count && span[i] < lo + tileLength; i++)
            tile[span[i] - lo] = (float)values[first + i];
    }

    /// <summary>
    /// The keys and values a query at <paramref name="position"/> reads, decoded by plain scalar code: [position + 1, kvDim]
    /// each. The reference the attention over tiles is tested against.
    /// </summary>
    internal void DecodeReference(int layer, int position, float[] keys, float[] values)
    {
        var s = stores[layer];
        int positions = position + 1, kvDim = KvDim, headDim = HeadDim;
        int tailFrom = QuantizedEnd(positions);
        for (int p = 0; p < positions; p++)
        {
            if (p < sinks)
            {
                s.SinkKeys.Read(p, 1, keys.AsSpan(p * kvDim, kvDim));
                s.SinkValues.Read(p, 1, values.AsSpan(p * kvDim, kvDim));
            }
            else if (p >= tailFrom)
            {
                s.TailKeys.Read(p - s.TailStart, 1, keys.AsSpan(p * kvDim, kvDim));
                s.TailValues.Read(p - s.TailStart, 1, values.AsSpan(p * kvDim, kvDim));
            }
        }
        for (int g = 0; g < (tailFrom - sinks) / group; g++)
        {
            for (int h = 0; h < KvHeadCount; h++)
            {
                for (int t = 0; t < group; t++)
                {
                    int p = sinks + g * group + t;
                    for (int d = 0; d < headDim; d++)
                    {
                        int c = h * headDim + d, inBlock = (h * group + t) * headDim + d;
                        long bit = (((long)g * KvHeadCount + h) * group + t) * rowBytes * 8 + d * bits;
                        int keyCode = (s.KeyCodes[bit / 8] >> (int)(bit % 8)) & levels;
                        int valueCode = (s.ValueCodes[bit / 8] >> (int)(bit % 8)) & levels;
                        int split = ((g * KvHeadCount + h) * group + t) * valueSplits + d * valueSplits / headDim;
                        float key = (float)s.KeyMin[g * kvDim + c] + (float)s.KeyScale[g * kvDim + c] * keyCode;
                        float value = (float)s.ValueMin[split] + (float)s.ValueScale[split] * valueCode;
                        for (int j = 0; j < rank; j++)
                        {
                            key += (float)s.KeyFactorA[(g * group + t) * rank + j] * (float)s.KeyFactorB[(g * rank + j) * kvDim + c];
                            value += (float)s.ValueFactorA[(g * group + t) * rank + j] * (float)s.ValueFactorB[(g * rank + j) * kvDim + c];
                        }
                        for (int i = 0; i < keyOutliers; i++)
                        {
                            if (s.KeyOutlierIndex[g * keyOutliers + i] == inBlock)
                                key = (float)s.KeyOutlierValue[g * keyOutliers + i];
                        }
                        int valueCount = group * valueOutliersPerToken;
                        for (int i = 0; i < valueCount; i++)
                        {
                            if (s.ValueOutlierIndex[g * valueCount + i] == inBlock)
                                value = (float)s.ValueOutlierValue[g * valueCount + i];
                        }
                        keys[p * kvDim + c] = key;
                        values[p * kvDim + c] = value;
                    }
                }
            }
        }
    }

    // ── quantizing one group ──────────────────────────────────────────────────────────────────────────────────

    /// <summary>Keys of group <paramref name="g"/> (rows [group, kvDim]): per channel over the group's tokens.</summary>
    private void QuantizeKeys(LayerStore s, int g, ReadOnlySpan<float> rows)
    {
        ToBlock(rows);
        int headDim = HeadDim;
        if (keyOutliers > 0)
        {
            // a key's quantization group is its channel (h, d) over the group's tokens
            var channel = new (float Mean, float Deviation)[KvDim];
            for (int h = 0; h < KvHeadCount; h++)
            {
                for (int d = 0; d < headDim; d++)
                    channel[h * headDim + d] = Stats(block, (h * group) * headDim + d, group, headDim);
            }
            int n = 0;
            for (int h = 0; h < KvHeadCount; h++)
            {
                for (int t = 0; t < group; t++)
                {
                    for (int d = 0; d < headDim; d++)
                        AddCandidate(ref n, (h * group + t) * headDim + d, channel[h * headDim + d]);
                }
            }
            TakeMostExtreme(keyOutliers, n, s.KeyOutlierIndex, s.KeyOutlierValue, g * keyOutliers);
        }
        for (int h = 0; h < KvHeadCount; h++)
        {
            for (int d = 0; d < headDim; d++)
            {
                int first = (h * group) * headDim + d;
                var (min, scale) = Range(first, group, headDim);
                s.KeyMin[g * KvDim + h * headDim + d] = min;
                s.KeyScale[g * KvDim + h * headDim + d] = scale;
                for (int t = 0; t < group; t++)
                    Encode(first + t * headDim, min, scale);
            }
        }
        Store(s.KeyCodes, g);
        if (rank > 0)
            FitResidual(s.KeyFactorA, s.KeyFactorB, g);
    }

    /// <summary>Values of group <paramref name="g"/>: per token over each split of a head's channels.</summary>
    private void QuantizeValues(LayerStore s, int g, ReadOnlySpan<float> rows)
    {
        ToBlock(rows);
        int headDim = HeadDim, perGroup = group * valueOutliersPerToken;
        if (valueOutliersPerToken > 0)
        {
            // a value's quantization group is its split of its head, for its token; a token's outliers are its most extreme values
            for (int t = 0; t < group; t++)
            {
                int n = 0;
                for (int h = 0; h < KvHeadCount; h++)
                {
                    for (int j = 0; j < valueSplits; j++)
                    {
                        int from = (h * group + t) * headDim + j * headDim / valueSplits, to = (h * group + t) * headDim + (j + 1) * headDim / valueSplits;
                        var stats = Stats(block, from, to - from, 1);
                        for (int i = from; i < to; i++)
                            AddCandidate(ref n, i, stats);
                    }
                }
                TakeMostExtreme(valueOutliersPerToken, n, s.ValueOutlierIndex, s.ValueOutlierValue, g * perGroup + t * valueOutliersPerToken);
            }
            s.ValueOutlierIndex.AsSpan(g * perGroup, perGroup).Sort(s.ValueOutlierValue.AsSpan(g * perGroup, perGroup));
        }
        for (int h = 0; h < KvHeadCount; h++)
        {
            for (int t = 0; t < group; t++)
            {
                for (int j = 0; j < valueSplits; j++)
                {
                    int from = (h * group + t) * headDim + j * headDim / valueSplits, to = (h * group + t) * headDim + (j + 1) * headDim / valueSplits;
                    var (min, scale) = Range(from, to - from, 1);
                    int at = ((g * KvHeadCount + h) * group + t) * valueSplits + j;
                    s.ValueMin[at] = min;
                    s.ValueScale[at] = scale;
                    for (int i = from; i < to; i++)
                        Encode(i, min, scale);
                }
            }
        }
        Store(s.ValueCodes, g);
        if (rank > 0)
            FitResidual(s.ValueFactorA, s.ValueFactorB, g);
    }

    /// <summary>block[h, t, d] = rows[t, h·headDim + d]; no outliers yet.</summary>
    private void ToBlock(ReadOnlySpan<float> rows)
    {
        int headDim = HeadDim;
        for (int h = 0; h < KvHeadCount; h++)
        {
            for (int t = 0; t < group; t++)
                rows.Slice(t * KvDim + h * headDim, headDim).CopyTo(block.AsSpan((h * group + t) * headDim));
        }
        Array.Clear(isOutlier);
    }

    /// <summary>Mean and root-mean-square deviation of <paramref name="count"/> values of <paramref name="data"/> from
    /// <paramref name="first"/>, <paramref name="stride"/> apart.</summary>
    private static (float Mean, float Deviation) Stats(float[] data, int first, int count, int stride)
    {
        double sum = 0, sumSquares = 0;
        for (int i = 0; i < count; i++)
        {
            float v = data[first + i * stride];
            sum += v;
            sumSquares += (double)v * v;
        }
        double mean = sum / count;
        return ((float)mean, (float)Math.Sqrt(Math.Max(0, sumSquares / count - mean * mean)));
    }

    /// <summary>Candidate n is block value i, scored by its distance from its quantization group's mean in deviations
    /// (negated: the most extreme sort first).</summary>
    private void AddCandidate(ref int n, int i, (float Mean, float Deviation) stats)
    {
        outlierScore[n] = -MathF.Abs(block[i] - stats.Mean) / (stats.Deviation + 1e-30f);
        order[n++] = i;
    }

    /// <summary>Marks the <paramref name="count"/> most extreme of the <paramref name="candidates"/> as outliers and
    /// stores their block indices, ascending, with their f16 values at <paramref name="first"/>.</summary>
    private void TakeMostExtreme(int count, int candidates, int[] indices, Half[] values, int first)
    {
        Array.Sort(outlierScore, order, 0, candidates);
        var chosen = order.AsSpan(0, count);
        chosen.Sort();
        for (int i = 0; i < count; i++)
        {
            indices[first + i] = chosen[i];
            values[first + i] = CheckedHalf(block[chosen[i]]);
            isOutlier[chosen[i]] = true;
        }
    }

    /// <summary>f16 minimum and scale of the non-outlier values among <paramref name="count"/> block values from
    /// <paramref name="first"/>, <paramref name="stride"/> apart.</summary>
    private (Half Min, Half Scale) Range(int first, int count, int stride)
    {
        float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
        for (int k = 0; k < count; k++)
        {
            int i = first + k * stride;
            if (isOutlier[i])
                continue;
            lo = MathF.Min(lo, block[i]);
            hi = MathF.Max(hi, block[i]);
        }
        if (lo > hi)
            (lo, hi) = (0, 0);
        return (CheckedHalf(lo), CheckedHalf((hi - lo) / levels));
    }

    private static Half CheckedHalf(float value)
    {
        var h = (Half)value;
        if (Half.IsInfinity(h) || Half.IsNaN(h))
            throw new InvalidOperationException($"a key or value of {value} does not fit the f16 scales of a quantized KV cache");
        return h;
    }

    /// <summary>codes[i] = round((block[i] − min) / scale) clamped to the levels; residual[i] = what decoding misses
    /// (0 for an outlier, which comes back as its f16 value).</summary>
    private void Encode(int i, Half min, Half scale)
    {
        float m = (float)min, sc = (float)scale;
        int code = sc > 0 ? (int)Math.Clamp(MathF.Round((block[i] - m) / sc), 0, levels) : 0;
        codes[i] = (byte)code;
        float decoded = m + sc * code;
        residual[i] = isOutlier[i] ? 0 : block[i] - decoded;
    }

    /// <summary>Packs the block's codes into group <paramref name="g"/>'s rows.</summary>
    private void Store(byte[] destination, int g)
    {
        int headDim = HeadDim;
        for (int h = 0; h < KvHeadCount; h++)
        {
            for (int t = 0; t < group; t++)
            {
                int row = (h * group + t) * headDim;
                PackedCodes.Pack(codes.AsSpan(row, headDim), bits, destination.AsSpan(((g * KvHeadCount + h) * group + t) * rowBytes, rowBytes));
            }
        }
    }

    /// <summary>Rank-R factors A [group, rank], B [rank, kvDim] in f16 of the group's residual (block order → token rows).</summary>
    private void FitResidual(Half[] a, Half[] b, int g)
    {
        int kvDim = KvDim, headDim = HeadDim;
        var r = new float[group * kvDim]; // [group, kvDim]
        for (int h = 0; h < KvHeadCount; h++)
        {
            for (int t = 0; t < group; t++)
                residual.AsSpan((h * group + t) * headDim, headDim).CopyTo(r.AsSpan(t * kvDim + h * headDim));
        }
        var (left, right) = Kernels.LowRankResidual.Fit(r, group, kvDim, rank);
        for (int i = 0; i < left.Length; i++)
            a[g * group * rank + i] = CheckedHalf(left[i]);
        for (int i = 0; i < right.Length; i++)
            b[g * rank * kvDim + i] = CheckedHalf(right[i]);
    }

    /// <summary>What one layer holds.</summary>
    private sealed class LayerStore
    {
        public LayerStore(QuantizedKvCache c)
        {
            int kvDim = c.KvDim, groups = c.maxGroups;
            bool half = c.Policy.HalfFullRows;
            SinkKeys = new FullRows(kvDim, c.HeadDim, half);
            SinkValues = new FullRows(kvDim, c.HeadDim, half);
            SinkKeys.EnsureRows(c.sinks, c.sinks);
            SinkValues.EnsureRows(c.sinks, c.sinks);
            TailKeys = new FullRows(kvDim, c.HeadDim, half);
            TailValues = new FullRows(kvDim, c.HeadDim, half);
            KeyCodes = new byte[(long)groups * c.KvHeadCount * c.group * c.rowBytes];
            ValueCodes = new byte[KeyCodes.Length];
            KeyScale = new Half[groups * kvDim];
            KeyMin = new Half[groups * kvDim];
            ValueScale = new Half[groups * c.KvHeadCount * c.group * c.valueSplits];
            ValueMin = new Half[ValueScale.Length];
            KeyOutlierIndex = new int[groups * c.keyOutliers];
            KeyOutlierValue = new Half[KeyOutlierIndex.Length];
            ValueOutlierIndex = new int[groups * c.group * c.valueOutliersPerToken];
            ValueOutlierValue = new Half[ValueOutlierIndex.Length];
            KeyFactorA = new Half[groups * c.group * c.rank];
            KeyFactorB = new Half[groups * c.rank * kvDim];
            ValueFactorA = new Half[KeyFactorA.Length];
            ValueFactorB = new Half[KeyFactorB.Length];
                TailStart = c.sinks;
        }

        public int Held { get; set; }

        /// <summary>Position of the first row of <see cref="TailKeys"/>: the tail holds positions [TailStart, Held).</summary>
        public int TailStart { get; set; }

        /// <summary>Quantized groups: positions [sinks, sinks + Groups · group).</summary>
        public int Groups { get; set; }

        public FullRows SinkKeys { get; }   // [sinks, kvDim]
        public FullRows SinkValues { get; } // [sinks, kvDim]
        public FullRows TailKeys { get; }   // [rows, kvDim] positions TailStart …
        public FullRows TailValues { get; } // [rows, kvDim]
        public byte[] KeyCodes { get; }     // [groups, kvHeads, group, rowBytes]
        public byte[] ValueCodes { get; }   // [groups, kvHeads, group, rowBytes]
        public Half[] KeyScale { get; }     // [groups, kvDim]
        public Half[] KeyMin { get; }       // [groups, kvDim]
        public Half[] ValueScale { get; }   // [groups, kvHeads, group, valueSplits]
        public Half[] ValueMin { get; }     // [groups, kvHeads, group, valueSplits]
        public int[] KeyOutlierIndex { get; }     // [groups, keyOutliers] ascending per group
        public Half[] KeyOutlierValue { get; }    // [groups, keyOutliers]
        public int[] ValueOutlierIndex { get; }   // [groups, group · valueOutliersPerToken] ascending per group
        public Half[] ValueOutlierValue { get; }  // [groups, group · valueOutliersPerToken]
        public Half[] KeyFactorA { get; }   // [groups, group, rank]
        public Half[] KeyFactorB { get; }   // [groups, rank, kvDim]
        public Half[] ValueFactorA { get; } // [groups, group, rank]
        public Half[] ValueFactorB { get; } // [groups, rank, kvDim]
    }

    /// <summary>Full-precision keys or values [rows, kvDim] (sinks, tail): f32, or f16 with <c>fp=f16</c>, read by the
    /// attention directly (f32) or a tile of rows at a time (f16).</summary>
    private sealed class FullRows(int kvDim, int headDim, bool half)
    {
        private float[] single = [];
        private Half[] halves = [];

        private int Rows => (half ? halves.Length : single.Length) / kvDim;

        /// <summary>Grows to at least <paramref name="rows"/> rows (at least <paramref name="minimum"/>), keeping the contents.</summary>
        public void EnsureRows(int rows, int minimum)
        {
            if (Rows >= rows)
                return;
            int capacity = Math.Max(Math.Max(rows, minimum), Rows * 2);
            if (half)
                Array.Resize(ref halves, capacity * kvDim);
            else
                Array.Resize(ref single, capacity * kvDim);
        }

        public void Write(int row, ReadOnlySpan<float> source)
        {
            if (half)
                TensorPrimitives.ConvertToHalf(source, halves.AsSpan(row * kvDim, source.Length));
            else
                source.CopyTo(single.AsSpan(row * kvDim));
        }

        /// <summary>destination = rows [row, row + count) as f32.</summary>
        public void Read(int row, int count, Span<float> destination)
        {
            if (half)
                TensorPrimitives.ConvertToSingle(halves.AsSpan(row * kvDim, count * kvDim), destination[..(count * kvDim)]);
            else
                single.AsSpan(row * kvDim, count * kvDim).CopyTo(destination);
        }

        /// <summary>Rows [from, from + keep) move to [0, keep).</summary>
        public void Drop(int from, int keep)
        {
            if (half)
                halves.AsSpan(from * kvDim, keep * kvDim).CopyTo(halves);
            else
                single.AsSpan(from * kvDim, keep * kvDim).CopyTo(single);
        }

        /// <summary>scores[i] = scale · query · row (row + i)[offset …] for i in [0, count).</summary>
        public void Score(int row, int count, int offset, float* query, float scale, float* scores, float* tile, int tileRows)
        {
            if (!half)
            {
                fixed (float* rows = single)
                    CacheAttention.Score(query, rows + (long)row * kvDim + offset, kvDim, count, headDim, scale, scores);
                return;
            }
            for (int i = 0; i < count; i += tileRows)
            {
                int n = Math.Min(tileRows, count - i);
                Decode(row + i, n, offset, tile);
                CacheAttention.Score(query, tile, headDim, n, headDim, scale, scores + i);
            }
        }

        /// <summary>output += Σ_i weights[i] · row (row + i)[offset …] for i in [0, count).</summary>
        public void Accumulate(int row, int count, int offset, float* weights, float* output, float* tile, int tileRows)
        {
            if (!half)
            {
                fixed (float* rows = single)
                    CacheAttention.Accumulate(weights, rows + (long)row * kvDim + offset, kvDim, count, headDim, output);
                return;
            }
            for (int i = 0; i < count; i += tileRows)
            {
                int n = Math.Min(tileRows, count - i);
                Decode(row + i, n, offset, tile);
                CacheAttention.Accumulate(weights + i, tile, headDim, n, headDim, output);
            }
        }

        private void Decode(int row, int count, int offset, float* tile)
        {
            for (int i = 0; i < count; i++)
                TensorPrimitives.ConvertToSingle(halves.AsSpan((row + i) * kvDim + offset, headDim), new Span<float>(tile + i * headDim, headDim));
        }
    }
}
