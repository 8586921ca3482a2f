using Squeeze.Coding;

namespace Squeeze.SavedCaches;

/// <summary>
/// Adaptive symbol statistics for the range coder: every symbol of the alphabet starts with frequency 1, each coded
/// symbol adds <see cref="Increment"/>, and all frequencies are halved (rounding up) once the total passes
/// <see cref="Limit"/>, so the model follows a channel whose distribution drifts along the context. Encoder and decoder
/// update it the same way after every symbol; nothing of it is stored.
/// </summary>
internal sealed class AdaptiveFrequencies
{
    private const uint Increment = 32;
    private const uint Limit = 1 << 16;
    private readonly uint[] frequencies; // [symbols]
    private uint total;

    public AdaptiveFrequencies(int symbols)
    {
        frequencies = new uint[symbols];
        Array.Fill(frequencies, 1u);
        total = (uint)symbols;
    }

    public void Encode(RangeEncoder encoder, int symbol)
    {
        uint cumulative = 0;
        for (int s = 0; s < symbol; s++)
            cumulative += frequencies[s];
        encoder.Encode(cumulative, frequencies[symbol], total);
        Update(symbol);
    }

    public int Decode(RangeDecoder decoder)
    {
        uint target = decoder.Target(total), cumulative = 0;
        int symbol = 0;
        while (cumulative + frequencies[symbol] <= target)
            cumulative += frequencies[symbol++];
        decoder.Consume(cumulative, frequencies[symbol]);
        Update(symbol);
        return symbol;
    }

    private void Update(int symbol)
    {
        frequencies[symbol] += Increment;
        total += Increment;
        if (total <= Limit)
            return;
        total = 0;
        for (int s = 0; s < frequencies.Length; s++)
        {
            frequencies[s] = (frequencies[s] + 1) / 2;
            total += frequencies[s];
        }
    }
}
