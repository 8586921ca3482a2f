using Squeeze.Coding;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.SavedCaches;

/// <summary>
/// The <c>pre</c> storage of one layer's keys and values [positions, kvDim] as one range-coded stream (KVQuant's
/// pre-RoPE keys, with CacheGen's entropy coding):
/// <list type="number">
/// <item>the first <see cref="SavedCacheStorage.Sinks"/> positions in f16, as they are;</item>
/// <item>when the storage has a window, a scale g = 2^(f / 2) per key/value head and position, f in [−4, 8], that
/// multiplies both steps of that head at that position: (a² / mean a²)^(−1/4) in half-octaves, where a² is the mean
/// squared attention weight the window's queries give the position (<see cref="Sensitivities.Attention"/>). The full
/// (a²)^(−1/2), the same error in the attention's output from every position, trusts the window too much and coded
/// longer at equal KLD on stories15M;</item>
/// <item>the keys of the other positions rotated back by their position's angles (<see cref="Rotate"/>), so that a
/// channel keeps its level from token to token instead of swinging around its pair's circle;</item>
/// <item>then, channel by channel, keys and then values: the channel's step Δ as an exponent (Δ = 2^((e − 128) / 4),
/// e in [0, 255]), its mean as a whole number m of steps, the class s of its spread σ / Δ, and for every position the
/// code round((x / Δ − m) / g), zigzag-mapped, through the adaptive statistics of class s (an escape and the number's
/// length and bits for the rare large ones). Decoding gives (m + code · g) · Δ.</item>
/// </list>
/// The key steps are what the sensitivities make them: Δ = S / √w for a key channel, where w is the mean square of
/// the query channels that read it over the prompt (<see cref="Sensitivities"/>), so that every key channel adds the
/// same error to the attention scores: a channel the queries hardly read gets a large step and costs almost nothing.
/// Values get Δ = V · σ, σ their channel's standard deviation over the saved positions (weighting values by the norms
/// of the attn_output columns they feed coded longer at the same KLD on stories15M). The steps are stored, so loading
/// needs no weights.
/// The statistics, classes and exponents adapt over the whole file (one codec object codes its layers in order).
/// </summary>
internal sealed class PreRotaryCodec
{
    private const int Alphabet = 64;    // zigzag codes 0 … 62, and 63 the escape
    private const int Spreads = 16;     // classes of σ / Δ: ⌊2 log2(σ / Δ)⌋ + 6, clamped
    private const int Exponents = 256;  // steps 2^((e − 128) / 4)
    private static readonly float[] Quarters = [1f, 1.18920712f, 1.41421356f, 1.68179283f]; // 2^(i / 4)
    private readonly SavedCacheStorage storage;
    private readonly int kvHeads, headDim, kvDim;
    private readonly RopeStyle style;
    private readonly AdaptiveFrequencies[] keyCodes = Models(Spreads, Alphabet), valueCodes = Models(Spreads, Alphabet);
    private readonly AdaptiveFrequencies keyExponents = new(Exponents), valueExponents = new(Exponents);
    private readonly AdaptiveFrequencies keySpreads = new(Spreads), valueSpreads = new(Spreads);
    private readonly AdaptiveFrequencies lengths = new(33);
    private const int Scales = 13;      // token scales 2^(f / 2), f in [−4, 8]
    private readonly AdaptiveFrequencies tokenScales = new(Scales);

    public PreRotaryCodec(SavedCacheStorage storage, int kvHeads, int headDim, RopeStyle style)
    {
        this.storage = storage;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.style = style;
        kvDim = kvHeads * headDim;
    }

    /// <summary>Codes one layer: <paramref name="keys"/> (after RoPE, as the runtime caches them) and
    /// <paramref name="values"/> [positions, kvDim], rotated back with <paramref name="cos"/> / <paramref name="sin"/>
    /// [contextLength, headDim / 2]; <paramref name="keyWeights"/> [kvDim] are the key channels' sensitivities
    /// (<see cref="Sensitivities.Keys"/>), <paramref name="attention"/> [kvHeads, positions] the mean squared attention
    /// weights of the window (<see cref="Sensitivities.Attention"/>; null without a window).</summary>
    public byte[] Encode(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin,
        double[] keyWeights, double[]? attention)
    {
        var encoder = new RangeEncoder();
        int sinks = Math.Min(storage.Sinks, positions), count = positions - sinks;
        LayerCodec.WriteRows(encoder, keys[..(sinks * kvDim)], half: true);
        LayerCodec.WriteRows(encoder, values[..(sinks * kvDim)], half: true);
        var scales = new double[kvHeads * count]; // [kvHeads, count]
        for (int h = 0; h < kvHeads; h++)
        {
            double mean = 0;
            for (int t = 0; t < count; t++)
                mean += attention is null ? 0 : attention[h * positions + sinks + t] / count;
            for (int t = 0; t < count; t++)
            {
                double squared = attention is null ? 0 : attention[h * positions + sinks + t]; // mean a²
                int f = mean > 0 ? (int)Math.Clamp(Math.Round(-0.5 * Math.Log2(Math.Max(squared, 1e-30) / mean)), -4, 8) : 0;
                if (storage.Window > 0)
                    tokenScales.Encode(encoder, f + 4);
                scales[h * count + t] = Scale(f);
            }
        }
        float[] unrotated = keys[(sinks * kvDim)..(positions * kvDim)].ToArray(); // [count, kvDim]
        Rotate(unrotated, sinks, cos, sin, inverse: true);
        EncodeChannels(encoder, unrotated, count, scales, keyWeights, storage.Step, keyExponents, keySpreads, keyCodes);
        EncodeChannels(encoder, values[(sinks * kvDim)..(positions * kvDim)], count, scales, null, storage.ValueStep, valueExponents, valueSpreads, valueCodes);
        return encoder.Finish();
    }

    /// <summary>Decodes what <see cref="Encode"/> wrote for <paramref name="positions"/> positions into
    /// <paramref name="keys"/> (rotated again with <paramref name="cos"/> / <paramref name="sin"/>, as the runtime rotates
    /// a new key) and <paramref name="values"/>.</summary>
    public void Decode(ReadOnlyMemory<byte> stream, int positions, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, Span<float> keys, Span<float> values)
    {
        var decoder = new RangeDecoder(stream);
        int sinks = Math.Min(storage.Sinks, positions), count = positions - sinks;
        LayerCodec.ReadRows(decoder, keys[..(sinks * kvDim)], half: true);
        LayerCodec.ReadRows(decoder, values[..(sinks * kvDim)], half: true);
        var scales = new double[kvHeads * count]; // [kvHeads, count]
        for (int i = 0; i < scales.Length; i++)
            scales[i] = Scale(storage.Window > 0 ? tokenScales.Decode(decoder) - 4 : 0);
        var rotated = keys[(sinks * kvDim)..(positions * kvDim)];
        DecodeChannels(decoder, rotated, count, scales, keyExponents, keySpreads, keyCodes);
        Rotate(rotated, sinks, cos, sin, inverse: false);
        DecodeChannels(decoder, values[(sinks * kvDim)..(positions * kvDim)], count, scales, valueExponents, valueSpreads, valueCodes);
    }

    /// <summary>Rotates every head of <paramref name="rows"/> [count, kvDim], row t at position
    /// <paramref name="first"/> + t, by its position's angles (the runtime's RoPE), or back by them when
    /// <paramref name="inverse"/>.</summary>
    public void Rotate(Span<float> rows, int first, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, bool inverse)
    {
        int half = headDim / 2;
        var negated = new float[half];
        for (int t = 0; t < rows.Length / kvDim; t++)
        {
            int pos = first + t;
            var c = cos.Slice(pos * half, half);
            var s = sin.Slice(pos * half, half);
            if (inverse)
            {
                for (int i = 0; i < half; i++)
                    negated[i] = -s[i];
                s = negated;
            }
            for (int h = 0; h < kvHeads; h++)
                Transformer.Rope(rows.Slice(t * kvDim + h * headDim, headDim), c, s, style);
        }
    }

    /// <summary>Codes the channels of <paramref name="rows"/> [count, kvDim] with steps <paramref name="scale"/> / √w
    /// (<paramref name="weights"/> [kvDim] given) or <paramref name="scale"/> · σ (none given).</summary>
    private void EncodeChannels(RangeEncoder encoder, ReadOnlySpan<float> rows, int count, double[] scales, double[]? weights, double scale,
        AdaptiveFrequencies exponents, AdaptiveFrequencies spreads, AdaptiveFrequencies[] codes)
    {
        for (int c = 0; c < kvDim; c++)
        {
            double sum = 0, squares = 0;
            for (int t = 0; t < count; t++)
            {
                double x = rows[t * kvDim + c];
                sum += x;
                squares += x * x;
            }
            double mean = sum / Math.Max(1, count);
            double deviation = Math.Sqrt(Math.Max(0, squares / Math.Max(1, count) - mean * mean));
            int e = Exponent(weights is null ? scale * deviation : scale / Math.Sqrt(weights[c]));
            exponents.Encode(encoder, e);
            double step = Step(e);
            int m = (int)Math.Clamp(Math.Round(mean / step), -(1 << 30), 1 << 30);
            EncodeInteger(encoder, m);
            int spread = Spread(deviation / step);
            spreads.Encode(encoder, spread);
            var model = codes[spread];
            for (int t = 0; t < count; t++)
            {
                int code = (int)Math.Clamp(Math.Round((rows[t * kvDim + c] / step - m) / scales[c / headDim * count + t]), -(1 << 30), 1 << 30);
                uint z = Zigzag(code);
                if (z < Alphabet - 1)
                {
                    model.Encode(encoder, (int)z);
                    continue;
                }
                model.Encode(encoder, Alphabet - 1);
                EncodeInteger(encoder, (int)(z - (Alphabet - 1)));
            }
        }
    }

    private void DecodeChannels(RangeDecoder decoder, Span<float> rows, int count, double[] scales,
        AdaptiveFrequencies exponents, AdaptiveFrequencies spreads, AdaptiveFrequencies[] codes)
    {
        for (int c = 0; c < kvDim; c++)
        {
            double step = Step(exponents.Decode(decoder));
            int m = DecodeInteger(decoder);
            var model = codes[spreads.Decode(decoder)];
            for (int t = 0; t < count; t++)
            {
                uint z = (uint)model.Decode(decoder);
                if (z == Alphabet - 1)
                    z += (uint)DecodeInteger(decoder);
                rows[t * kvDim + c] = (float)((m + Unzigzag(z) * scales[c / headDim * count + t]) * step);
            }
        }
    }

    /// <summary>The exponent e of the step 2^((e − 128) / 4) nearest <paramref name="step"/> (in log scale), within [0, 255].</summary>
    private static int Exponent(double step) => double.IsFinite(step) ? (int)Math.Clamp(Math.Round(4 * Math.Log2(step)) + 128, 0, Exponents - 1) : Exponents - 1;

    /// <summary>2^((e − 128) / 4), exactly the same on every machine.</summary>
    private static double Step(int e) => Math.ScaleB(Quarters[e & 3], (e >> 2) - 32);

    /// <summary>2^(f / 2), exactly the same on every machine.</summary>
    private static double Scale(int f) => Math.ScaleB(Quarters[(f & 1) * 2], f >> 1);

    private static int Spread(double ratio) => ratio > 0 ? (int)Math.Clamp(Math.Floor(2 * Math.Log2(ratio)) + 6, 0, Spreads - 1) : 0;

    private static uint Zigzag(int value) => (uint)((value << 1) ^ (value >> 31));

    private static int Unzigzag(uint z) => (int)(z >> 1) ^ -(int)(z & 1);

    /// <summary>Any integer: the bit length n of its zigzag form through the adaptive statistics, then its n − 1 bits below the leading one.</summary>
    private void EncodeInteger(RangeEncoder encoder, int value)
    {
        uint z = Zigzag(value);
        int length = 32 - System.Numerics.BitOperations.LeadingZeroCount(z);
        lengths.Encode(encoder, length);
        for (int bits = length - 1; bits > 0;)
        {
            int chunk = Math.Min(16, bits);
            bits -= chunk;
            encoder.EncodeUniform((z >> bits) & ((1u << chunk) - 1), chunk);
        }
    }

    private int DecodeInteger(RangeDecoder decoder)
    {
        int length = lengths.Decode(decoder);
        if (length == 0)
            return 0;
        uint z = 1;
        for (int bits = length - 1; bits > 0;)
        {
            int chunk = Math.Min(16, bits);
            bits -= chunk;
            z = z << chunk | decoder.DecodeUniform(chunk);
        }
        return Unzigzag(z);
    }

    private static AdaptiveFrequencies[] Models(int count, int symbols)
    {
        var models = new AdaptiveFrequencies[count];
        for (int i = 0; i < count; i++)
            models[i] = new AdaptiveFrequencies(symbols);
        return models;
    }
}
