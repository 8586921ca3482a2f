using System.Buffers;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// A sparse weight whose every row keeps the same number of weights: the kept values are a nested weight
/// <see cref="Values"/> [rows, <see cref="KeptPerRow"/>] (f16, quantized …), and the subclass says which columns they sit
/// in (<see cref="KeptColumns"/>, ascending). The product multiplies only the kept weights (<see cref="SparseProduct"/>).
/// </summary>
public abstract class SparseRowsWeight : LinearWeight
{
    /// <summary>A [<paramref name="rows"/>, <paramref name="columns"/>] weight keeping the values of <paramref name="values"/>, [rows, kept per row];
    /// <see cref="ArgumentException"/> when those do not fit.</summary>
    protected SparseRowsWeight(string name, int rows, int columns, LinearWeight values)
        : base(name, rows, columns)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Rows != rows || values.Columns > columns)
            throw new ArgumentException($"{name}: kept values [{values.Rows}, {values.Columns}] do not fit [{rows}, {columns}]", nameof(values));
        Values = values;
    }

    /// <summary>The kept weights, row by row in column order: [Rows, KeptPerRow].</summary>
    public LinearWeight Values { get; }

    /// <summary>Weights kept in every row.</summary>
    public int KeptPerRow => Values.Columns;

    /// <summary>The bytes that say where the kept weights are (indices or a bitmask).</summary>
    public abstract long IndexBytes { get; }

    /// <inheritdoc/>
    public override long StoredBytes => Values.StoredBytes + IndexBytes;

    /// <summary><c>destination[k]</c> = the column of the k-th kept weight of <paramref name="row"/> (ascending), for k in
    /// [0, KeptPerRow). Safe to call from several threads at once.</summary>
    public abstract void KeptColumns(int row, Span<int> destination);

    /// <summary>True when <see cref="FusedDot"/> computes a row's product straight from the stored form (no decoding).</summary>
    internal virtual bool HasFusedDot => false;

    /// <summary>Σ_c W[row, c] · x[c] straight from the stored form, when <see cref="HasFusedDot"/>.</summary>
    internal virtual unsafe float FusedDot(int row, float* x) => throw new NotSupportedException($"{Name}: no fused product");

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        int kept = KeptPerRow;
        var values = ArrayPool<float>.Shared.Rent(kept);
        var columns = ArrayPool<int>.Shared.Rent(kept);
        try
        {
            Values.DecodeRow(row, values.AsSpan(0, kept));
            KeptColumns(row, columns.AsSpan(0, kept));
            destination.Clear();
            for (int k = 0; k < kept; k++)
                destination[columns[k]] = values[k];
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
            ArrayPool<int>.Shared.Return(columns);
        }
    }

    /// <summary>Only the kept products: <c>y[t, r] = Σ_k Values[r, k] · x[t, column_k]</c>. In the deterministic mode, the
    /// decoded product (the gathered sums are not the same at every SIMD level).</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        CheckProduct(x, tokens, y);
        if (context.Deterministic)
            DecodedProduct.Multiply(this, x, tokens, context, y);
        else
            SparseProduct.Multiply(this, x, tokens, context, y);
    }
}
