using Squeeze.Weights;

namespace Squeeze.Pruning;

/// <summary>Encodes the kept values of a pruned matrix ([rows, columns] row-major, values only) as a weight named
/// <paramref name="name"/>: f16, uniform codes …</summary>
public delegate LinearWeight ValueEncoder(string name, float[] values, int rows, int columns);

/// <summary>
/// A <see cref="PruningResult"/> turned into the representation the runtime multiplies without expanding it: N:M
/// (<see cref="NmSparseWeight"/>), unstructured (<see cref="MaskedSparseWeight"/>) or structured
/// (<see cref="StructuredSparseWeight"/>, or <see cref="ZeroWeight"/> when nothing is left), the kept values encoded by a
/// <see cref="ValueEncoder"/> (<see cref="F16"/> by default).
/// </summary>
public static class PrunedWeights
{
    /// <summary>Values as an F16 <see cref="BlockWeight"/> over a buffer of its own.</summary>
    public static LinearWeight F16(string name, float[] values, int rows, int columns) => BlockWeight.Float16(name, values, rows, columns);

    /// <summary>The representation that fits <paramref name="pattern"/>: N:M, unstructured or structured.</summary>
    public static LinearWeight For(string name, PruningResult result, SparsityPattern pattern, ValueEncoder? encode = null) => pattern switch
    {
        SparsityPattern.NOfM p => NOfM(name, result, p.N, p.M, encode),
        SparsityPattern.Unstructured => Unstructured(name, result, encode),
        _ => Structured(name, result, encode),
    };

    /// <summary>N:M: every group of <paramref name="m"/> keeps exactly <paramref name="n"/> in <paramref name="result"/>'s mask.</summary>
    public static NmSparseWeight NOfM(string name, PruningResult result, int n, int m, ValueEncoder? encode = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        int rows = result.Rows, columns = result.Columns;
        var indices = NmSparseWeight.Pack(result.Mask, rows, columns, n, m);
        int kept = columns / m * n;
        return new NmSparseWeight(name, rows, columns, n, m, (encode ?? F16)(name, KeptValues(result, kept), rows, kept), indices);
    }

    /// <summary>Unstructured: every row keeps the same number (what per-row pruning produces).</summary>
    /// <exception cref="ArgumentException">Rows keep different numbers of weights.</exception>
    public static MaskedSparseWeight Unstructured(string name, PruningResult result, ValueEncoder? encode = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        int rows = result.Rows, columns = result.Columns;
        int kept = result.Mask.AsSpan(0, columns).Count(true);
        var values = KeptValues(result, kept);
        return new MaskedSparseWeight(name, rows, columns, (encode ?? F16)(name, values, rows, kept), MaskedSparseWeight.Pack(result.Mask, rows, columns));
    }

    /// <summary>Structured: rows whose every weight was removed, and columns removed from every row, are dropped; the rest
    /// of the mask must keep everything. Nothing kept: a <see cref="ZeroWeight"/>.</summary>
    /// <exception cref="ArgumentException">The mask is not whole rows and columns.</exception>
    public static LinearWeight Structured(string name, PruningResult result, ValueEncoder? encode = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        int rows = result.Rows, columns = result.Columns;
        var mask = result.Mask;
        var rowKept = new bool[rows];
        var columnKept = new bool[columns];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                rowKept[r] |= mask[(long)r * columns + c];
                columnKept[c] |= mask[(long)r * columns + c];
            }
        }
        int kr = rowKept.Count(k => k), kc = columnKept.Count(k => k);
        if (kr == 0 || kc == 0)
            return new ZeroWeight(name, rows, columns);
        var values = new float[(long)kr * kc];
        int i = 0;
        for (int r = 0; r < rows; r++)
        {
            if (!rowKept[r])
                continue;
            for (int c = 0; c < columns; c++)
            {
                if (!columnKept[c])
                    continue;
                if (!mask[(long)r * columns + c])
                    throw new ArgumentException($"{name}: weight ({r}, {c}) is removed but neither its row nor its column is", nameof(result));
                values[i++] = result.Weights[(long)r * columns + c];
            }
        }
        return new StructuredSparseWeight(name, rows, columns, StructuredSparseWeight.Pack(rowKept), StructuredSparseWeight.Pack(columnKept),
            (encode ?? F16)(name, values, kr, kc));
    }

    // The kept weights of every row in column order, [rows, kept]; throws when a row keeps a different number.
    private static float[] KeptValues(PruningResult result, int kept)
    {
        int rows = result.Rows, columns = result.Columns;
        var values = new float[(long)rows * kept];
        for (int r = 0; r < rows; r++)
        {
            int k = 0;
            for (int c = 0; c < columns; c++)
            {
                if (!result.Mask[(long)r * columns + c])
                    continue;
                if (k == kept)
                    throw new ArgumentException($"row {r} keeps more than {kept} weights", nameof(result));
                values[(long)r * kept + k++] = result.Weights[(long)r * columns + c];
            }
            if (k != kept)
                throw new ArgumentException($"row {r} keeps {k} weights, not {kept}", nameof(result));
        }
        return values;
    }
}
