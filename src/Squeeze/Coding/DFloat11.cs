namespace Squeeze.Coding;

/// <summary>
/// DFloat11-style lossless coding of BF16 values (Zhang et al. 2025): a BF16 value is sign (1 bit), exponent (8 bits)
/// and mantissa (7 bits); the mantissas and signs of trained weights are close to random, but their exponents use a
/// few dozen of the 256 values with very uneven frequencies. So each value is split into one raw byte
/// <c>sign &lt;&lt; 7 | mantissa</c> and one exponent symbol, and the exponents are entropy-coded (here with
/// <see cref="ChunkedRans"/>, where DFloat11 uses Huffman codes). Bit-exact: <see cref="Join"/> of
/// <see cref="Split"/> gives back every bit pattern, NaNs and subnormals included.
/// </summary>
public static class DFloat11
{
    /// <summary><c>signMantissa[i] = (v &gt;&gt; 8 &amp; 0x80) | (v &amp; 0x7F)</c> and <c>exponents[i] = v &gt;&gt; 7 &amp; 0xFF</c>
    /// for v = <paramref name="bf16"/>[i].</summary>
    public static void Split(ReadOnlySpan<ushort> bf16, Span<byte> signMantissa, Span<byte> exponents)
    {
        if (signMantissa.Length != bf16.Length || exponents.Length != bf16.Length)
            throw new ArgumentException($"{bf16.Length} values need {bf16.Length} sign-mantissa bytes and exponents; got {signMantissa.Length} and {exponents.Length}");
        for (int i = 0; i < bf16.Length; i++)
        {
            int v = bf16[i];
            signMantissa[i] = (byte)((v >> 8 & 0x80) | (v & 0x7F));
            exponents[i] = (byte)(v >> 7);
        }
    }

    /// <summary><c>destination[i] = (signMantissa[i] &amp; 0x80) &lt;&lt; 8 | exponents[i] &lt;&lt; 7 | (signMantissa[i] &amp; 0x7F)</c>.</summary>
    public static void Join(ReadOnlySpan<byte> signMantissa, ReadOnlySpan<byte> exponents, Span<ushort> destination)
    {
        if (signMantissa.Length != destination.Length || exponents.Length != destination.Length)
            throw new ArgumentException($"{destination.Length} values need {destination.Length} sign-mantissa bytes and exponents; got {signMantissa.Length} and {exponents.Length}");
        for (int i = 0; i < destination.Length; i++)
        {
            int sm = signMantissa[i];
            destination[i] = (ushort)((sm & 0x80) << 8 | exponents[i] << 7 | (sm & 0x7F));
        }
    }
}
