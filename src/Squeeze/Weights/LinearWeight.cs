using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// A weight matrix W [<see cref="Rows"/>, <see cref="Columns"/>] as the runtime multiplies it: in one of GGUF's block
/// types (<see cref="BlockWeight"/>) or in a representation GGUF cannot express (uniform codes of any width and group,
/// codebooks, sparse outliers, rotations, low-rank factors, N:M sparsity …). Every representation has a scalar
/// reference, <see cref="DecodeRow"/>, and a product, <see cref="Multiply"/>; the default product decodes rows into
/// scratch and multiplies them in f32, representations with a faster kernel override it and are tested against the
/// reference.
/// </summary>
public abstract class LinearWeight
{
    /// <summary>A weight <paramref name="name"/> of <paramref name="rows"/> output by <paramref name="columns"/> input features (both at least 1).</summary>
    protected LinearWeight(string name, int rows, int columns)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(columns, 1);
        Name = name;
        Rows = rows;
        Columns = columns;
    }

    /// <summary>The tensor's name (llama.cpp's GGUF convention, e.g. <c>blk.0.attn_q.weight</c>).</summary>
    public string Name { get; }

    /// <summary>Output features.</summary>
    public int Rows { get; }

    /// <summary>Input features.</summary>
    public int Columns { get; }

    /// <summary>Bytes the representation takes when stored (codes, scales, indices, factors …).</summary>
    public abstract long StoredBytes { get; }

    /// <summary>Stored bits per weight of the logical [Rows, Columns] matrix.</summary>
    public double BitsPerWeight => 8.0 * StoredBytes / ((long)Rows * Columns);

    /// <summary>A short description of the representation, e.g. <c>Q4_K</c> or <c>uniform b3 g96 asym</c>.</summary>
    public abstract string Scheme { get; }

    /// <summary>Reference decoding: <c>destination[c] = W[row, c]</c>. Safe to call from several threads at once.</summary>
    public abstract void DecodeRow(int row, Span<float> destination);

    /// <summary>Floats of per-thread scratch <see cref="DecodeRowFast"/> needs (0: none).</summary>
    internal virtual int DecodeScratchFloats => 0;

    /// <summary>Row <paramref name="row"/> into <paramref name="destination"/> ([Columns]) with the same bits as
    /// <see cref="DecodeRow"/>, as fast as the representation can (<paramref name="scratch"/> holds
    /// <see cref="DecodeScratchFloats"/> floats); what the default product (<see cref="DecodedProduct"/>) decodes with.</summary>
    internal virtual unsafe void DecodeRowFast(int row, float* destination, float* scratch) => DecodeRow(row, new Span<float>(destination, Columns));

    /// <summary>
    /// <c>y[t, r] = Σ_c W[r, c] · x[t, c]</c> for every token t: <paramref name="x"/> is [tokens, Columns],
    /// <paramref name="y"/> is [tokens, Rows], row-major. Results do not depend on the thread count; in the
    /// deterministic mode (<see cref="ComputeContext.Deterministic"/>) they are also the same at every SIMD level.
    /// </summary>
    public virtual void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        CheckProduct(x, tokens, y);
        DecodedProduct.Multiply(this, x, tokens, context, y);
    }

    /// <summary>Every row decoded: [Rows, Columns] row-major.</summary>
    public float[] Decode()
    {
        var all = new float[(long)Rows * Columns];
        for (int r = 0; r < Rows; r++)
            DecodeRow(r, all.AsSpan(r * Columns, Columns));
        return all;
    }

    /// <summary>Name, scheme and shape, e.g. <c>blk.0.attn_q.weight Q4_K [288, 288]</c>.</summary>
    public override string ToString() => $"{Name} {Scheme} [{Rows}, {Columns}]";

    /// <summary>Throws unless x and y hold <paramref name="tokens"/> rows of this weight's input and output.</summary>
    protected void CheckProduct(ReadOnlySpan<float> x, int tokens, Span<float> y)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (x.Length < (long)tokens * Columns)
            throw new ArgumentException($"{Name}: x holds {x.Length} values; {tokens} tokens of {Columns} need {(long)tokens * Columns}", nameof(x));
        if (y.Length < (long)tokens * Rows)
            throw new ArgumentException($"{Name}: y holds {y.Length} values; {tokens} tokens of {Rows} need {(long)tokens * Rows}", nameof(y));
    }

    /// <summary>Throws unless <paramref name="row"/> is a row and <paramref name="destination"/> is one row long.</summary>
    protected void CheckRow(int row, Span<float> destination)
    {
        if ((uint)row >= (uint)Rows)
            throw new ArgumentOutOfRangeException(nameof(row), row, $"{Name} has {Rows} rows");
        if (destination.Length != Columns)
            throw new ArgumentException($"{Name} has rows of {Columns} values; destination has {destination.Length}", nameof(destination));
    }
}
