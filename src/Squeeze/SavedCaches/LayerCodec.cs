using Squeeze.Coding;
using Squeeze.Runtime;

namespace Squeeze.SavedCaches;

/// <summary>
/// One layer's keys and values [positions, kvDim] as one range-coded stream, stored as a <see cref="SavedCacheStorage"/>
/// says:
/// <list type="bullet">
/// <item><c>f32</c> / <c>f16</c>: every value's bits, raw.</item>
/// <item><c>qN</c> (the grids of <see cref="QuantizedKvCache"/>, decided once over the saved positions): positions
/// [0, sinks) and the last ones that do not fill a group or lie in the window are stored in full precision (f32, or f16
/// with <c>fp=f16</c>). The rest, group by group of <c>group</c> positions: keys per channel (an f16 minimum and scale,
/// then the channel's codes, the first raw and each next one as its difference to the previous token's code modulo
/// 2^N), values per token over <c>vgroup</c> channels of a head (f16 minimum and scale, then the codes), with adaptive
/// statistics per channel. Decoding gives min + scale · code.</item>
/// <item><c>step:S:values=V</c>: the sinks in f16; then for the keys, and then the values, channel by channel: the f16
/// mean and standard deviation σ over the other positions, a bit saying whether the codes are differences to the
/// previous token's, and the codes, zigzag-mapped, through the channel's adaptive statistics (an escape and 32 raw bits
/// for the rare large ones). Decoding gives mean + (S · σ) · code for keys, mean + (V · σ) · code for values.</item>
/// </list>
/// </summary>
internal sealed class LayerCodec
{
    private const int StepAlphabet = 64; // zigzag codes 0 … 62, and 63 the escape
    private readonly SavedCacheStorage storage;
    private readonly KvCachePolicy policy;
    private readonly int kvDim, headDim, kvHeads, valueSplits, levels, mask;

    public LayerCodec(SavedCacheStorage storage, int kvHeads, int headDim)
    {
        this.storage = storage;
        policy = storage.Policy ?? KvCachePolicy.Float32;
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
        if (storage.Policy is null)
        {
            int sinks = Math.Min(storage.Sinks, positions);
            WriteRows(encoder, keys[..(sinks * kvDim)], half: true);
            WriteRows(encoder, values[..(sinks * kvDim)], half: true);
            EncodeSteps(encoder, keys[(sinks * kvDim)..(positions * kvDim)], positions - sinks, storage.Step);
            EncodeSteps(encoder, values[(sinks * kvDim)..(positions * kvDim)], positions - sinks, storage.ValueStep);
            return encoder.Finish();
        }
        var (from, to) = QuantizedRange(positions);
        WriteRows(encoder, keys[..(from * kvDim)], HalfRows);
        WriteRows(encoder, values[..(from * kvDim)], HalfRows);
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
        WriteRows(encoder, keys[(to * kvDim)..(positions * kvDim)], HalfRows);
        WriteRows(encoder, values[(to * kvDim)..(positions * kvDim)], HalfRows);
        return encoder.Finish();
    }

    /// <summary>Decodes what <see cref="Encode"/> wrote for <paramref name="positions"/> positions (the file's checksum
    /// has vouched for the stream).</summary>
    public void Decode(ReadOnlyMemory<byte> stream, int positions, Span<float> keys, Span<float> values)
    {
        var decoder = new RangeDecoder(stream);
        if (storage.Policy is null)
        {
            int sinks = Math.Min(storage.Sinks, positions);
            ReadRows(decoder, keys[..(sinks * kvDim)], half: true);
            ReadRows(decoder, values[..(sinks * kvDim)], half: true);
            DecodeSteps(decoder, keys[(sinks * kvDim)..(positions * kvDim)], positions - sinks, storage.Step);
            DecodeSteps(decoder, values[(sinks * kvDim)..(positions * kvDim)], positions - sinks, storage.ValueStep);
            return;
        }
        var (from, to) = QuantizedRange(positions);
        ReadRows(decoder, keys[..(from * kvDim)], HalfRows);
        ReadRows(decoder, values[..(from * kvDim)], HalfRows);
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
        ReadRows(decoder, keys[(to * kvDim)..(positions * kvDim)], HalfRows);
        ReadRows(decoder, values[(to * kvDim)..(positions * kvDim)], HalfRows);
    }

    /// <summary>The <c>step</c> storage of <paramref name="count"/> rows [count, kvDim], channel by channel, with steps
    /// of <paramref name="steps"/> standard deviations.</summary>
    private void EncodeSteps(RangeEncoder encoder, ReadOnlySpan<float> rows, int count, double steps)
    {
        var codes = new int[count];
        var deltas = new int[count];
        for (int c = 0; c < kvDim; c++)
        {
            double sum = 0, squares = 0;
            for (int t = 0; t < count; t++)
            {
                double x = rows[t * kvDim + c];
                sum += x;
                squares += x * x;
            }
            double average = sum / Math.Max(1, count);
            var mean = CheckedHalf((float)average);
            var deviation = CheckedHalf((float)Math.Sqrt(Math.Max(0, squares / Math.Max(1, count) - average * average)));
            WriteHalf(encoder, mean);
            WriteHalf(encoder, deviation);
            float step = (float)(steps * (float)deviation);
            for (int t = 0; t < count; t++)
            {
                codes[t] = step > 0 ? (int)Math.Clamp(MathF.Round((rows[t * kvDim + c] - (float)mean) / step), -(1 << 30), 1 << 30) : 0;
                deltas[t] = t == 0 ? codes[0] : codes[t] - codes[t - 1];
            }
            bool delta = Entropy(deltas) < Entropy(codes);
            encoder.EncodeUniform(delta ? 1u : 0u, 1);
            var model = new AdaptiveFrequencies(StepAlphabet);
            foreach (int code in delta ? deltas : codes)
            {
                uint z = (uint)((code << 1) ^ (code >> 31));
                if (z < StepAlphabet - 1)
                {
                    model.Encode(encoder, (int)z);
                    continue;
                }
                model.Encode(encoder, StepAlphabet - 1);
                encoder.EncodeUniform(z >> 16, 16);
                encoder.EncodeUniform(z & 0xFFFF, 16);
            }
        }
    }

    private void DecodeSteps(RangeDecoder decoder, Span<float> rows, int count, double steps)
    {
        for (int c = 0; c < kvDim; c++)
        {
            float mean = ReadHalf(decoder), step = (float)(steps * ReadHalf(decoder));
            bool delta = decoder.DecodeUniform(1) == 1;
            var model = new AdaptiveFrequencies(StepAlphabet);
            int previous = 0;
            for (int t = 0; t < count; t++)
            {
                uint z = (uint)model.Decode(decoder);
                if (z == StepAlphabet - 1)
                    z = decoder.DecodeUniform(16) << 16 | decoder.DecodeUniform(16);
                int code = (int)(z >> 1) ^ -(int)(z & 1);
                if (delta)
                    code += previous;
                previous = code;
                rows[t * kvDim + c] = mean + step * code;
            }
        }
    }

    /// <summary>Zeroth-order entropy of <paramref name="codes"/> in bits: which of two codings of a channel is shorter.</summary>
    private static double Entropy(int[] codes)
    {
        var counts = new Dictionary<int, int>();
        foreach (int code in codes)
            counts[code] = counts.GetValueOrDefault(code) + 1;
        double bits = 0;
        foreach (int n in counts.Values)
            bits -= n * Math.Log2((double)n / codes.Length);
        return bits;
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

    internal static void WriteRows(RangeEncoder encoder, ReadOnlySpan<float> rows, bool half)
    {
        foreach (float x in rows)
        {
            if (half)
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

    internal static void ReadRows(RangeDecoder decoder, Span<float> rows, bool half)
    {
        for (int i = 0; i < rows.Length; i++)
        {
            if (half)
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
