namespace Squeeze.LowRank;

/// <summary>Ranks chosen per tensor: the largest rank whose factors fit a byte budget (f16 factors, or uniform codes as
/// <see cref="LowRankEncoder.Weight"/> stores them), and the smallest rank that keeps a fraction of a spectrum's energy.</summary>
public static class RankSelection
{
    /// <summary>Exact stored bytes of factors A [rows, rank] and B [rank, columns]: 2 bytes a value for f16
    /// (<paramref name="factorBits"/> = 16); for uniform codes of 2..8 bits, each row's packed codes plus an f16 scale
    /// and min per group (groups of <see cref="FactorGroup"/> of the row length).</summary>
    public static long FactorBytes(int rows, int columns, int rank, int factorBits = 16)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(rank, 1);
        if (factorBits == 16)
            return 2L * rank * (rows + columns);
        if (factorBits is < 2 or > 8)
            throw new ArgumentOutOfRangeException(nameof(factorBits), factorBits, "factors are f16 (16) or uniform codes of 2..8 bits");
        static long Matrix(long rows, int columns, int bits) => rows * ((columns * (long)bits + 7) / 8 + 4L * (columns / FactorGroup(columns)));
        return Matrix(rows, rank, factorBits) + Matrix(rank, columns, factorBits);
    }

    /// <summary>The largest rank (at most min(rows, columns)) whose factors take at most <paramref name="bytes"/>; 0 when
    /// not even rank 1 fits.</summary>
    public static int RankForBytes(int rows, int columns, long bytes, int factorBits = 16)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        for (int rank = Math.Min(rows, columns); rank >= 1; rank--)
        {
            if (FactorBytes(rows, columns, rank, factorBits) <= bytes)
                return rank;
        }
        return 0;
    }

    /// <summary>The smallest rank r with Σ_{i&lt;r} σ_i² ≥ <paramref name="fraction"/> · Σ σ_i² over the whole
    /// <paramref name="singularValues"/> (descending, every value of the matrix).</summary>
    public static int RankForEnergy(ReadOnlySpan<double> singularValues, double fraction)
    {
        if (singularValues.IsEmpty)
            throw new ArgumentException("no singular values", nameof(singularValues));
        if (!(fraction is >= 0 and <= 1))
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "an energy fraction is in [0, 1]");
        double total = 0;
        foreach (double s in singularValues)
            total += s * s;
        double kept = 0;
        for (int r = 0; r < singularValues.Length; r++)
        {
            kept += singularValues[r] * singularValues[r];
            if (kept >= fraction * total)
                return r + 1;
        }
        return singularValues.Length;
    }

    /// <summary>The group of quantized factor rows of length <paramref name="length"/>: its largest divisor up to 32.</summary>
    public static int FactorGroup(int length)
    {
        for (int g = Math.Min(32, length); g > 1; g--)
        {
            if (length % g == 0)
                return g;
        }
        return 1;
    }
}
