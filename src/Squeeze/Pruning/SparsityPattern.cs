namespace Squeeze.Pruning;

/// <summary>Which weights of a matrix W [rows, columns] a pruner may remove, and how many.</summary>
public abstract record SparsityPattern
{
    private SparsityPattern()
    {
    }

    /// <summary>Checks that the pattern fits a [<paramref name="rows"/>, <paramref name="columns"/>] matrix.</summary>
    /// <exception cref="ArgumentException">It does not.</exception>
    public abstract void Validate(int rows, int columns);

    /// <summary>Unstructured: in every row the <c>round(Sparsity · columns)</c> weights of least score are removed (each row
    /// is its own comparison group, as Wanda does), so every row keeps the same number of weights.</summary>
    public sealed record Unstructured(double Sparsity) : SparsityPattern
    {
        /// <inheritdoc/>
        public override void Validate(int rows, int columns)
        {
            if (!(Sparsity >= 0 && Sparsity < 1))
                throw new ArgumentException($"sparsity {Sparsity} is outside [0, 1)");
        }

        /// <summary>Weights removed from each row.</summary>
        public int PrunedPerRow(int columns) => (int)Math.Round(Sparsity * columns, MidpointRounding.ToEven);

        /// <summary>The pattern as reports print it, e.g. <c>0.5 unstructured</c>.</summary>
        public override string ToString() => $"{Sparsity:0.##} unstructured";
    }

    /// <summary>N:M: of every M consecutive weights of a row (columns [gM, gM + M)) exactly N are kept.</summary>
    public sealed record NOfM(int N, int M) : SparsityPattern
    {
        /// <inheritdoc/>
        public override void Validate(int rows, int columns)
        {
            if (M < 2 || M > 16 || N < 1 || N >= M)
                throw new ArgumentException($"{N}:{M} sparsity needs 1 <= N < M <= 16");
            if (columns % M != 0)
                throw new ArgumentException($"{columns} columns are not whole groups of {M}");
        }

        /// <summary>The pattern as reports print it, e.g. <c>2:4</c>.</summary>
        public override string ToString() => $"{N}:{M}";
    }

    /// <summary>Structured, whole output rows: <c>round(Fraction · rows / GroupSize)</c> groups of <see cref="GroupSize"/>
    /// consecutive rows (1 = single rows; the head dimension = the query rows of whole attention heads) are removed.</summary>
    public sealed record Rows(double Fraction, int GroupSize = 1) : SparsityPattern
    {
        /// <inheritdoc/>
        public override void Validate(int rows, int columns) => CheckGroups(Fraction, GroupSize, rows, "rows");

        /// <summary>The pattern as reports print it, e.g. <c>0.25 rows</c>.</summary>
        public override string ToString() => GroupSize == 1 ? $"{Fraction:0.##} rows" : $"{Fraction:0.##} row groups of {GroupSize}";
    }

    /// <summary>Structured, whole input columns: <c>round(Fraction · columns / GroupSize)</c> groups of
    /// <see cref="GroupSize"/> consecutive columns are removed (for <c>attn_output</c> with the head dimension as group
    /// size: whole attention heads).</summary>
    public sealed record Columns(double Fraction, int GroupSize = 1) : SparsityPattern
    {
        /// <inheritdoc/>
        public override void Validate(int rows, int columns) => CheckGroups(Fraction, GroupSize, columns, "columns");

        /// <summary>The pattern as reports print it, e.g. <c>0.25 columns</c>.</summary>
        public override string ToString() => GroupSize == 1 ? $"{Fraction:0.##} columns" : $"{Fraction:0.##} column groups of {GroupSize}";
    }

    /// <summary>Groups removed by a structured pattern of <paramref name="fraction"/> over <paramref name="groups"/>.</summary>
    internal static int PrunedGroups(double fraction, int groups) => (int)Math.Round(fraction * groups, MidpointRounding.ToEven);

    private static void CheckGroups(double fraction, int groupSize, int length, string what)
    {
        if (!(fraction >= 0 && fraction < 1))
            throw new ArgumentException($"fraction {fraction} of {what} is outside [0, 1)");
        if (groupSize < 1 || length % groupSize != 0)
            throw new ArgumentException($"{length} {what} are not whole groups of {groupSize}");
    }
}
