using Squeeze.Coding;
using Squeeze.Runtime;

namespace Squeeze.SavedCaches;

/// <summary>
/// One layer's keys and values [positions, kvDim] as one range-coded stream, quantized as a <see cref="KvCachePolicy"/>
/// says (the grids of <see cref="QuantizedKvCache"/>, decided once over the saved positions):
/// <list type="bullet">
/// <item><c>f32</c> / <c>f16</c>: every value's bits, raw.</item>
/// <item><c>qN</c>: positions [0, sinks) and the last ones that do not fill a group or lie in the window are stored in
/// full precision (f32, or f16 with <c>fp=f16</c>). The rest, group by group of <c>group</c> positions: keys per channel
/// (an f16 minimum and scale, then the channel's codes, the first raw and each next one as its difference to the
/// previous token's code modulo 2^N), values per token over <c>vgroup</c> channels of a head (f16 minimum and scale,
/// then the codes). The codes go through the range coder with adaptive statistics per channel (one for first key
/// codes, one for key differences, one for value codes): CacheGen's delta to the neighbouring token and its per-channel
/// probability models.</item>
/// </list>
/// Decoding gives min + scale · code. Outliers, low-rank residuals and eviction are not stored.
/// </summary>
internal sealed class LayerCodec
{
    private readonly KvCachePolicy policy;
    private readonly int kvDim, headDim, kvHeads, valueSplits, levels, mask;

    public LayerCodec(KvCachePolicy policy, int kvHeads, int headDim)
    {
        Check(policy);
        this.policy = policy;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        kvDim = kvHeads * headDim;
        if (policy.Kind == KvCacheKind.Quantized)
        {
            valueSplits = (headDim + policy.ValueGroup - 1) / policy.ValueGroup;
            levels = (1 << policy.Bits) - 1;
            mask = levels;
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> for a policy a saved cache cannot store.</summary>
    public static void Check(KvCachePolicy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        if (policy.Kind == KvCacheKind.Evicting)
            throw new ArgumentException($"a saved cache cannot be stored as '{policy}': eviction depends on the queries that come later");
        if (policy.Outliers > 0 || policy.LowRank > 0)
            throw new ArgumentException($"a saved cache cannot be stored as '{policy}': outliers and low-rank residuals are not stored; use f32, f16 or qN[:sinks=N][:window=N][:group=N][:vgroup=N][:fp=f16]");
    }

    /// <summary>[quantized from, quantized to) of <paramref name="positions"/> positions: whole groups after the sinks and before the window.</summary>
    private (int From, int To) QuantizedRange(int positions)
    {
        if (policy.Kind != KvCacheKind.Quantized)
            return (0, 0);
        int sinks = Math.Min(policy.Sinks, positions);
        return (sinks, sinks + policy.Group * (Math.Max(0, positions - sinks - policy.Window) / policy.Group));
    }

    private bool HalfRows => policy.Kind == KvCacheKind.Float16 || (policy.Kind == KvCacheKind.Quantized && policy.HalfFullRows);

    public byte[] Encode(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int positions)
    {
        var encoder = new RangeEncoder();
        var (from, to) = QuantizedRange(positions);
        WriteRows(encoder, keys[..(from * kvDim)]);
        WriteRows(encoder, values[..(from * kvDim)]);
        if (to > from)
        {
            var keyFirst = Models(kvDim);
            var keyDelta = Models(kvDim);
            var valueCodes = Models(kvDim);
            int group = policy.Group;
            var codes = new int[group];
            for (int p0 = from; p0 < to; p0 += group)
            {
                for (int c = 0; c < kvDim; c++)
                {
                    float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
                    for (int t = 0; t < group; t++)
                    {
                        float x = keys[(p0 + t) * kvDim + c];
                        lo = MathF.Min(lo, x);
                        hi = MathF.Max(hi, x);
                    }
                    var (min, scale) = Grid(lo, hi);
                    WriteHalf(encoder, min);
                    WriteHalf(encoder, scale);
                    for (int t = 0; t < group; t++)
                        codes[t] = Code(keys[(p0 + t) * kvDim + c], min, scale);
                    keyFirst[c].Encode(encoder, codes[0]);
                    for (int t = 1; t < group; t++)
                        keyDelta[c].Encode(encoder, (codes[t] - codes[t - 1]) & mask);
                }
                for (int t = 0; t < group; t++)
                {
                    var row = values.Slice((p0 + t) * kvDim, kvDim);
                    for (int h = 0; h < kvHeads; h++)
                    {
                        for (int j = 0; j < valueSplits; j++)
                        {
                            int a = h * headDim + j * headDim / valueSplits, b = h * headDim + (j + 1) * headDim / valueSplits;
                            float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
                            for (int c = a; c < b; c++)
                            {
                                lo = MathF.Min(lo, row[c]);
                                hi = MathF.Max(hi, row[c]);
                            }
                            var (min, scale) = Grid(lo, hi);
                            WriteHalf(encoder, min);
                            WriteHalf(encoder, scale);
                            for (int c = a; c < b; c++)
                                valueCodes[c].Encode(encoder, Code(row[c], min, scale));
                        }
                    }
                }
            }
        }
        WriteRows(encoder, keys[(to * kvDim)..(positions * kvDim)]);
        WriteRows(encoder, values[(to * kvDim)..(positions * kvDim)]);
        return encoder.Finish();
    }

    /// <summary>Decodes what <see cref="Encode"/> wrote for <paramref name="positions"/> positions (the file's checksum
    /// has vouched for the stream).</summary>
    public void Decode(ReadOnlyMemory<byte> stream, int positions, Span<float> keys, Span<float> values)
    {
        var decoder = new RangeDecoder(stream);
        var (from, to) = QuantizedRange(positions);
        ReadRows(decoder, keys[..(from * kvDim)]);
        ReadRows(decoder, values[..(from * kvDim)]);
        if (to > from)
        {
            var keyFirst = Models(kvDim);
            var keyDelta = Models(kvDim);
            var valueCodes = Models(kvDim);
            int group = policy.Group;
            for (int p0 = from; p0 < to; p0 += group)
            {
                for (int c = 0; c < kvDim; c++)
                {
                    float min = ReadHalf(decoder), scale = ReadHalf(decoder);
                    int code = keyFirst[c].Decode(decoder);
                    keys[p0 * kvDim + c] = min + scale * code;
                    for (int t = 1; t < group; t++)
                    {
                        code = (code + keyDelta[c].Decode(decoder)) & mask;
                        keys[(p0 + t) * kvDim + c] = min + scale * code;
                    }
                }
                for (int t = 0; t < group; t++)
                {
                    var row = values.Slice((p0 + t) * kvDim, kvDim);
                    for (int h = 0; h < kvHeads; h++)
                    {
                        for (int j = 0; j < valueSplits; j++)
                        {
                            int a = h * headDim + j * headDim / valueSplits, b = h * headDim + (j + 1) * headDim / valueSplits;
                            float min = ReadHalf(decoder), scale = ReadHalf(decoder);
                            for (int c = a; c < b; c++)
                                row[c] = min + scale * valueCodes[c].Decode(decoder);
                        }
                    }
                }
            }
        }
        ReadRows(decoder, keys[(to * kvDim)..(positions * kvDim)]);
        ReadRows(decoder, values[(to * kvDim)..(positions * kvDim)]);
    }

    private AdaptiveFrequencies[] Models(int count)
    {
        var models = new AdaptiveFrequencies[count];
        for (int i = 0; i < count; i++)
            models[i] = new AdaptiveFrequencies(levels + 1);
        return models;
    }

    /// <summary>The f16 minimum and step of a group spanning [lo, hi] with 2^N levels.</summary>
    private (Half Min, Half Scale) Grid(float lo, float hi) => (CheckedHalf(lo), CheckedHalf((hi - lo) / levels));

    private int Code(float x, Half min, Half scale)
    {
        float m = (float)min, s = (float)scale;
        return s > 0 ? (int)Math.Clamp(MathF.Round((x - m) / s), 0, levels) : 0;
    }

    private static Half CheckedHalf(float value)
    {
        var h = (Half)value;
        if (Half.IsInfinity(h) || Half.IsNaN(h))
            throw new InvalidOperationException($"a key or value of {value} does not fit the f16 scales of a quantized saved cache");
        return h;
    }

    private static void WriteHalf(RangeEncoder encoder, Half value) => encoder.EncodeUniform(BitConverter.HalfToUInt16Bits(value), 16);

    private static float ReadHalf(RangeDecoder decoder) => (float)BitConverter.UInt16BitsToHalf((ushort)decoder.DecodeUniform(16));

    private void WriteRows(RangeEncoder encoder, ReadOnlySpan<float> rows)
    {
        foreach (float x in rows)
        {
            if (HalfRows)
            {
                WriteHalf(encoder, CheckedHalf(x));
            }
            else
            {
                uint bits = BitConverter.SingleToUInt32Bits(x);
                encoder.EncodeUniform(bits >> 16, 16);
                encoder.EncodeUniform(bits & 0xFFFF, 16);
            }
        }
    }

    private void ReadRows(RangeDecoder decoder, Span<float> rows)
    {
        for (int i = 0; i < rows.Length; i++)
        {
            if (HalfRows)
            {
                rows[i] = ReadHalf(decoder);
            }
            else
            {
                uint high = decoder.DecodeUniform(16);
                rows[i] = BitConverter.UInt32BitsToSingle(high << 16 | decoder.DecodeUniform(16));
            }
        }
    }
}
