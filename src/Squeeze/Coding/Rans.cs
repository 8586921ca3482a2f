using System.Buffers.Binary;

namespace Squeeze.Coding;

/// <summary>
/// Static byte-oriented rANS (Duda's range asymmetric numeral systems, in the form of Giesen's ryg_rans) over an
/// alphabet of at most 256 symbols with frequencies summing to 2^<see cref="RansTable.PrecisionBits"/>. The state x is
/// 32 bits and stays in [<see cref="Low"/>, 2^31) between symbols.
/// <para>Decoding (the definition; docs/FORMAT.md, scheme "entropy"): x = the stream's first 4 bytes, little-endian,
/// which must lie in [2^23, 2^31); then for every symbol: slot = x mod 2^14, s = the symbol whose interval
/// [cum(s), cum(s) + f(s)) holds slot, x ← f(s) · ⌊x / 2^14⌋ + slot − cum(s), and while x &lt; 2^23,
/// x ← x · 256 + the next stream byte. After the last symbol x must equal 2^23 and every byte must have been read.</para>
/// <para>Encoding runs the symbols backwards from x = 2^23: before coding s, while x ≥ f(s) · 2^17 the low byte of x is
/// emitted and x ← ⌊x / 256⌋; then x ← ⌊x / f(s)⌋ · 2^14 + (x mod f(s)) + cum(s). The stream is the final x (4 bytes,
/// little-endian) followed by the emitted bytes in reverse order of emission.</para>
/// </summary>
public static class Rans
{
    /// <summary>Lower bound of the normalized state, 2^23.</summary>
    public const uint Low = 1u << 23;

    /// <summary>Bytes of the state at the head of every stream.</summary>
    public const int StateBytes = 4;

    /// <summary>Codes <paramref name="symbols"/> with <paramref name="table"/>; every symbol must have a non-zero frequency.</summary>
    /// <exception cref="ArgumentException">A symbol is outside the table or has frequency 0.</exception>
    public static byte[] Encode(ReadOnlySpan<byte> symbols, RansTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        var frequencies = table.Frequencies;
        var cumulative = table.Cumulative;
        // Every symbol emits at most 2 bytes (x < 2^31 shrinks below f · 2^17 ≥ 2^17 after two bytes).
        var reversed = new byte[2L * symbols.Length + StateBytes];
        long emitted = 0;
        uint x = Low;
        for (int i = symbols.Length - 1; i >= 0; i--)
        {
            int s = symbols[i];
            uint f = s < frequencies.Length ? frequencies[s] : 0u;
            if (f == 0)
                throw new ArgumentException($"symbol {s} at {i} has no frequency in the table", nameof(symbols));
            uint limit = f << (31 - RansTable.PrecisionBits);
            while (x >= limit)
            {
                reversed[emitted++] = (byte)x;
                x >>= 8;
            }
            x = (x / f << RansTable.PrecisionBits) + x % f + cumulative[s];
        }
        var stream = new byte[StateBytes + emitted];
        BinaryPrimitives.WriteUInt32LittleEndian(stream, x);
        for (long k = 0; k < emitted; k++)
            stream[StateBytes + k] = reversed[emitted - 1 - k];
        return stream;
    }

    /// <summary>Decodes <c>destination.Length</c> symbols from <paramref name="stream"/>.</summary>
    /// <exception cref="InvalidDataException">The stream is not a valid coding of that many symbols: a bad initial
    /// state, a stream that ends early, bytes left over, or a final state other than <see cref="Low"/>.</exception>
    public static unsafe void Decode(ReadOnlySpan<byte> stream, RansTable table, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (stream.Length < StateBytes)
            throw new InvalidDataException($"an rANS stream has at least {StateBytes} bytes; this one has {stream.Length}");
        uint x = BinaryPrimitives.ReadUInt32LittleEndian(stream);
        if (x < Low || x >= 1u << 31)
            throw new InvalidDataException($"the rANS stream's initial state {x} is outside [2^23, 2^31)");
        const uint mask = (1u << RansTable.PrecisionBits) - 1;
        fixed (byte* start = stream)
        fixed (byte* output = destination)
        fixed (uint* steps = table.SlotSteps)
        fixed (byte* symbols = table.SlotSymbols)
        {
            byte* at = start + StateBytes, end = start + stream.Length;
            for (int i = 0; i < destination.Length; i++)
            {
                uint slot = x & mask, step = steps[slot]; // f(s) << 16 | (slot − cum(s))
                output[i] = symbols[slot];
                x = (step >> 16) * (x >> RansTable.PrecisionBits) + (step & 0xFFFF);
                while (x < Low)
                {
                    if (at == end)
                        throw new InvalidDataException($"the rANS stream ends after {stream.Length} bytes, at symbol {i} of {destination.Length}");
                    x = x << 8 | *at++;
                }
            }
            if (at != end)
                throw new InvalidDataException($"the rANS stream has {end - at} bytes left after its {destination.Length} symbols");
        }
        if (x != Low)
            throw new InvalidDataException($"the rANS stream's final state is {x}, not 2^23: the stream is corrupt");
    }
}

/// <summary>
/// A static frequency table for <see cref="Rans"/>: one frequency per symbol of the alphabet, summing to exactly
/// 2^<see cref="PrecisionBits"/>; symbols with frequency 0 cannot be coded.
/// </summary>
public sealed class RansTable
{
    /// <summary>Probability precision: frequencies sum to 2^14.</summary>
    public const int PrecisionBits = 14;

    /// <summary>The sum of the frequencies, 2^14.</summary>
    public const int Total = 1 << PrecisionBits;

    private readonly ushort[] frequencies;
    private readonly uint[] cumulative;
    private readonly byte[] slotSymbols; // [Total]: the symbol owning each slot
    private readonly uint[] slotSteps; // [Total]: f(s) << 16 | (slot − cum(s)) for the symbol s owning each slot

    private RansTable(ushort[] frequencies)
    {
        this.frequencies = frequencies;
        cumulative = new uint[frequencies.Length];
        slotSymbols = new byte[Total];
        slotSteps = new uint[Total];
        uint sum = 0;
        for (int s = 0; s < frequencies.Length; s++)
        {
            cumulative[s] = sum;
            for (uint k = 0; k < frequencies[s]; k++)
            {
                slotSymbols[sum + k] = (byte)s;
                slotSteps[sum + k] = (uint)frequencies[s] << 16 | k;
            }
            sum += frequencies[s];
        }
    }

    /// <summary>Frequency of each symbol.</summary>
    public ReadOnlySpan<ushort> Frequencies => frequencies;

    /// <summary>Sum of the frequencies of the symbols before each symbol.</summary>
    internal ReadOnlySpan<uint> Cumulative => cumulative;

    /// <summary>For every slot 0 … 2^14 − 1, the symbol whose interval holds it.</summary>
    internal ReadOnlySpan<byte> SlotSymbols => slotSymbols;

    /// <summary>For every slot, <c>f(s) &lt;&lt; 16 | (slot − cum(s))</c> of the symbol s owning it: one decoding step is
    /// <c>x ← (step &gt;&gt; 16) · ⌊x / 2^14⌋ + (step &amp; 0xFFFF)</c>.</summary>
    internal ReadOnlySpan<uint> SlotSteps => slotSteps;

    /// <summary>A table read from a file: 1 … 256 frequencies summing to exactly 2^14.</summary>
    /// <exception cref="InvalidDataException">The alphabet size or the sum is wrong.</exception>
    public static RansTable FromFrequencies(ReadOnlySpan<ushort> frequencies)
    {
        if (frequencies.Length is < 1 or > 256)
            throw new InvalidDataException($"an rANS table has 1 to 256 symbols, not {frequencies.Length}");
        long sum = 0;
        foreach (ushort f in frequencies)
            sum += f;
        if (sum != Total)
            throw new InvalidDataException($"the rANS frequencies sum to {sum}, not 2^{PrecisionBits} = {Total}");
        return new RansTable(frequencies.ToArray());
    }

    /// <summary>
    /// Frequencies proportional to <paramref name="counts"/> (one per symbol of the alphabet): every symbol that occurs
    /// gets at least 1, each gets ⌊count · 2^14 / n⌉, and the sum is then corrected to 2^14 one unit at a time, each unit
    /// going to (or taken from) the symbol where it changes the code length most (least), about count / frequency bits. An alphabet with no occurrence at
    /// all gives symbol 0 the whole range.
    /// </summary>
    public static RansTable FromCounts(ReadOnlySpan<long> counts)
    {
        if (counts.Length is < 1 or > 256)
            throw new ArgumentException($"an rANS table has 1 to 256 symbols, not {counts.Length}", nameof(counts));
        long n = 0;
        foreach (long c in counts)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(c, nameof(counts));
            n += c;
        }
        var f = new ushort[counts.Length];
        if (n == 0)
        {
            f[0] = Total;
            return new RansTable(f);
        }
        long sum = 0;
        for (int s = 0; s < counts.Length; s++)
        {
            if (counts[s] == 0)
                continue;
            long q = (long)Math.Round((double)counts[s] * Total / n, MidpointRounding.ToEven);
            f[s] = (ushort)Math.Clamp(q, 1, Total);
            sum += f[s];
        }
        while (sum != Total)
        {
            // A unit of frequency is worth about count / f bits: give it to the symbol where it saves most, or take it
            // from the symbol (with f > 1) where it costs least.
            bool reduce = sum > Total;
            int pick = -1;
            for (int s = 0; s < counts.Length; s++)
            {
                if (counts[s] == 0 || (reduce && f[s] <= 1))
                    continue;
                long mine = counts[s] * f[pick < 0 ? s : pick], theirs = pick < 0 ? mine : counts[pick] * f[s];
                if (pick < 0 || (reduce ? mine < theirs : mine > theirs))
                    pick = s;
            }
            if (reduce)
            {
                f[pick]--;
                sum--;
            }
            else
            {
                f[pick]++;
                sum++;
            }
        }
        return new RansTable(f);
    }
}
