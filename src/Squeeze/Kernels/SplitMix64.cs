namespace Squeeze.Kernels;

/// <summary>
/// SplitMix64 (Steele, Lea and Flood 2014), the seeded generator of the native format's rotations: part of the file
/// format, so it is defined here rather than taken from <see cref="Random"/> (whose sequence may change between .NET
/// versions). <c>state += 0x9E3779B97F4A7C15; z = state; z = (z ^ (z &gt;&gt; 30)) · 0xBF58476D1CE4E5B9;
/// z = (z ^ (z &gt;&gt; 27)) · 0x94D049BB133111EB; return z ^ (z &gt;&gt; 31)</c>, all modulo 2^64.
/// </summary>
public struct SplitMix64
{
    private ulong state;

    /// <summary>A generator whose state starts at <paramref name="seed"/>.</summary>
    public SplitMix64(ulong seed) => state = seed;

    /// <summary>The next 64-bit output.</summary>
    public ulong Next()
    {
        state += 0x9E3779B97F4A7C15UL;
        ulong z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>An integer in [0, <paramref name="bound"/>): the high 64 bits of <c>Next() · bound</c> (Lemire's
    /// multiply-shift, without rejection: the bias is below bound / 2^64).</summary>
    public ulong Below(ulong bound)
    {
        ArgumentOutOfRangeException.ThrowIfZero(bound);
        return Math.BigMul(Next(), bound, out _);
    }
}
