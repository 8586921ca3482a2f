namespace Squeeze.LowRank;

/// <summary>Ranks chosen per tensor: the largest rank whose f16 factors fit a byte budget, and the smallest rank that
/// keeps a fraction of a spectrum's energy.</summary>
public static class RankSelection
{
    /// <summary>Bytes of f16 factors A [rows, rank] and B [rank, columns]: 2·rank·(rows + columns).</summary>
    public static long Float16FactorBytes(int rows, int columns, int rank) => 2L * rank * (rows + columns);

    /// <summary>The largest rank whose f16 factors take at most <paramref name="bytes"/>, capped at min(rows, columns);
    /// 0 when not even rank 1 fits.</summary>
    public static int RankForBytes(int rows, int columns, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        long rank = bytes / (2L * (rows + columns));
        return (int)Math.Min(rank, Math.Min(rows, columns));
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
}
