using System.Buffers;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// A matrix whose rows fall into two groups, each stored as its own nested weight: the "hot" rows (e.g. the embedding
/// rows of the tokens a text uses most, kept precise) and the "cold" rest (kept cheap). Logical row r is row k of
/// <see cref="HotRows"/> when it is hot, k = the number of hot rows before r, else row k of <see cref="ColdRows"/>,
/// k = the number of cold rows before r. The product multiplies x by both groups and scatters their outputs.
/// </summary>
public sealed class RowSplitWeight : LinearWeight
{
    private readonly bool[] hot;   // [Rows]
    private readonly int[] inner;  // [Rows]: the row's index in HotRows or ColdRows
    private readonly int[] hotRowIndices;  // [HotRows.Rows] ascending: the logical rows that are hot
    private readonly int[] coldRowIndices; // [ColdRows.Rows] ascending: the logical rows that are cold

    /// <exception cref="ArgumentException">The mask, the groups' row counts or their columns do not match.</exception>
    public RowSplitWeight(string name, bool[] hot, LinearWeight hotRows, LinearWeight coldRows)
        : base(name, CheckMask(name, hot), CheckGroups(name, hotRows, coldRows))
    {
        int hotCount = hot.Count(h => h);
        if (hotCount == 0 || hotCount == hot.Length)
            throw new ArgumentException($"{name}: {hotCount} of {hot.Length} rows are hot; a split needs at least one hot and one cold row", nameof(hot));
        if (hotRows.Rows != hotCount)
            throw new ArgumentException($"{name}: the mask has {hotCount} hot rows, the hot weight {hotRows} has {hotRows.Rows}", nameof(hotRows));
        if (coldRows.Rows != hot.Length - hotCount)
            throw new ArgumentException($"{name}: the mask has {hot.Length - hotCount} cold rows, the cold weight {coldRows} has {coldRows.Rows}", nameof(coldRows));
        this.hot = [.. hot];
        inner = new int[hot.Length];
        hotRowIndices = new int[hotCount];
        coldRowIndices = new int[hot.Length - hotCount];
        int h = 0, c = 0;
        for (int r = 0; r < hot.Length; r++)
        {
            if (hot[r])
            {
                hotRowIndices[h] = r;
                inner[r] = h++;
            }
            else
            {
                coldRowIndices[c] = r;
                inner[r] = c++;
            }
        }
        HotRows = hotRows;
        ColdRows = coldRows;
    }

    /// <summary>hot[r] is true where logical row r is stored in <see cref="HotRows"/>.</summary>
    public ReadOnlySpan<bool> Hot => hot;

    /// <summary>The hot rows in ascending order, [number of hot rows, Columns].</summary>
    public LinearWeight HotRows { get; }

    /// <summary>The cold rows in ascending order, [Rows − number of hot rows, Columns].</summary>
    public LinearWeight ColdRows { get; }

    /// <summary>The row mask (one bit per row, ⌈Rows / 8⌉ bytes) and both groups.</summary>
    public override long StoredBytes => MaskBytes(Rows) + HotRows.StoredBytes + ColdRows.StoredBytes;

    /// <summary>Bytes of the row mask of <paramref name="rows"/> rows: one bit per row.</summary>
    public static long MaskBytes(int rows) => (rows + 7L) / 8;

    /// <inheritdoc/>
    public override string Scheme => $"split(hot {HotRows.Rows}: {HotRows.Scheme}; cold: {ColdRows.Scheme})";

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        (hot[row] ? HotRows : ColdRows).DecodeRow(inner[row], destination);
    }

    /// <summary>Both groups' products into pooled buffers (the inner products use the context's scratch), their
    /// outputs copied to the rows they stand for: exact, so as deterministic as the groups' products.</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckProduct(x, tokens, y);
        if (tokens == 0)
            return;
        Scatter(HotRows, hotRowIndices, x, tokens, context, y);
        Scatter(ColdRows, coldRowIndices, x, tokens, context, y);
    }

    private void Scatter(LinearWeight group, int[] rowIndices, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        int n = group.Rows, rows = Rows;
        var outputs = ArrayPool<float>.Shared.Rent(tokens * n);
        try
        {
            group.Multiply(x[..(tokens * Columns)], tokens, context, outputs.AsSpan(0, tokens * n));
            RowScatter.Scatter(outputs.AsSpan(0, tokens * n), tokens, rowIndices, y, rows);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(outputs);
        }
    }

    private static int CheckMask(string name, bool[] hot)
    {
        ArgumentNullException.ThrowIfNull(hot);
        if (hot.Length == 0)
            throw new ArgumentException($"{name}: the row mask is empty", nameof(hot));
        return hot.Length;
    }

    private static int CheckGroups(string name, LinearWeight hotRows, LinearWeight coldRows)
    {
        ArgumentNullException.ThrowIfNull(hotRows);
        ArgumentNullException.ThrowIfNull(coldRows);
        if (hotRows.Columns != coldRows.Columns)
            throw new ArgumentException($"{name}: the hot weight {hotRows} and the cold weight {coldRows} have different columns", nameof(coldRows));
        return hotRows.Columns;
    }
}
