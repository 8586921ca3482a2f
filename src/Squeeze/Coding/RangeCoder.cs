namespace Squeeze.Coding;

/// <summary>
/// A range coder (arithmetic coding with integer frequencies) with a 64-bit low end and a 64-bit range kept in
/// [2^48, 2^64): a symbol with cumulative frequency <c>c</c>, frequency <c>f</c> out of <c>total</c> narrows the range
/// to <c>⌊range / total⌋ · f</c>; bytes leave from the top when the range falls below 2^48, and a carry out of the low
/// end is propagated into the bytes already written. Totals up to <see cref="MaxTotal"/> lose at most 2^-18 of the
/// ideal code length per symbol to the truncated division. <see cref="Finish"/> writes the two bytes that pin a value
/// inside the final range and drops trailing zero bytes (the decoder reads zeros past the end).
/// </summary>
public sealed class RangeEncoder
{
    /// <summary>The largest total frequency a symbol may be coded with.</summary>
    public const uint MaxTotal = 1u << 30;

    private const ulong Bottom = 1UL << 48;
    private readonly List<byte> output = [];
    private ulong low;
    private ulong range = ulong.MaxValue;
    private bool finished;

    /// <summary>Codes the symbol occupying [<paramref name="cumulative"/>, <paramref name="cumulative"/> +
    /// <paramref name="frequency"/>) of [0, <paramref name="total"/>).</summary>
    public void Encode(uint cumulative, uint frequency, uint total)
    {
        if (finished)
            throw new InvalidOperationException("the encoder is finished");
        if (total == 0 || total > MaxTotal || frequency == 0 || (ulong)cumulative + frequency > total)
            throw new ArgumentOutOfRangeException(nameof(frequency), $"symbol [{cumulative}, {cumulative}+{frequency}) of {total} cannot be coded");
        ulong r = range / total;
        ulong add = r * cumulative;
        low += add;
        if (low < add)
            Carry();
        range = r * frequency;
        while (range < Bottom)
        {
            output.Add((byte)(low >> 56));
            low <<= 8;
            range <<= 8;
        }
    }

    /// <summary>Codes <paramref name="bits"/> (≤ 16) raw bits of <paramref name="value"/>, each value equally likely.</summary>
    public void EncodeUniform(uint value, int bits)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(bits, 16);
        Encode(value, 1, 1u << bits);
    }

    /// <summary>Ends the stream and returns its bytes.</summary>
    public byte[] Finish()
    {
        if (!finished)
        {
            finished = true;
            // The smallest multiple of 2^48 at or above low lies inside [low, low + range) since range ≥ 2^48.
            const ulong mask = Bottom - 1;
            low += mask;
            if (low < mask)
                Carry();
            low &= ~mask;
            output.Add((byte)(low >> 56));
            output.Add((byte)(low >> 48));
            while (output.Count > 0 && output[^1] == 0)
                output.RemoveAt(output.Count - 1);
        }
        return [.. output];
    }

    /// <summary>Bytes written so far (the stream grows by whole bytes as the range narrows).</summary>
    public int Length => output.Count;

    private void Carry()
    {
        int i = output.Count - 1;
        while (output[i] == 0xFF)
            output[i--] = 0;
        output[i]++;
    }
}

/// <summary>Reads what <see cref="RangeEncoder"/> wrote, given the same frequencies in the same order.</summary>
public sealed class RangeDecoder
{
    private const ulong Bottom = 1UL << 48;
    private readonly ReadOnlyMemory<byte> input;
    private int next;
    private ulong code;   // the stream's value minus the encoder's low end, in the current window
    private ulong range = ulong.MaxValue;
    private ulong step;   // range / total of the symbol being decoded

    /// <summary>A decoder reading the stream <see cref="RangeEncoder"/> wrote into <paramref name="input"/>.</summary>
    public RangeDecoder(ReadOnlyMemory<byte> input)
    {
        this.input = input;
        for (int i = 0; i < 8; i++)
            code = (code << 8) | NextByte();
    }

    /// <summary>The cumulative frequency the next symbol covers, in [0, <paramref name="total"/>): find the symbol whose
    /// interval holds it, then call <see cref="Consume"/> with that interval. Throws on a value no encoder can produce.</summary>
    public uint Target(uint total)
    {
        if (total == 0 || total > RangeEncoder.MaxTotal)
            throw new ArgumentOutOfRangeException(nameof(total), $"total frequency {total} cannot be decoded");
        step = range / total;
        ulong value = code / step;
        if (value >= total)
            throw new InvalidDataException("the coded stream is corrupt (a value past the last symbol)");
        return (uint)value;
    }

    /// <summary>Removes the symbol [<paramref name="cumulative"/>, <paramref name="cumulative"/> + <paramref name="frequency"/>)
    /// that <see cref="Target"/> pointed into.</summary>
    public void Consume(uint cumulative, uint frequency)
    {
        code -= step * cumulative;
        range = step * frequency;
        while (range < Bottom)
        {
            code = (code << 8) | NextByte();
            range <<= 8;
        }
    }

    /// <summary>Reads <paramref name="bits"/> raw bits written by <see cref="RangeEncoder.EncodeUniform"/>.</summary>
    public uint DecodeUniform(int bits)
    {
        uint value = Target(1u << bits);
        Consume(value, 1);
        return value;
    }

    /// <summary>Bytes of the stream read so far, counting the zeros read past its end.</summary>
    public int Position => next;

    private byte NextByte()
    {
        byte value = next < input.Length ? input.Span[next] : (byte)0;
        next++;
        return value;
    }
}
