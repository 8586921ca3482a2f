using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>A weight matrix removed entirely (block or sub-layer dropping): every weight is zero and nothing is stored.
/// The runtime skips an attention or feed-forward sub-layer whose output projection is a ZeroWeight.</summary>
public sealed class ZeroWeight(string name, int rows, int columns) : LinearWeight(name, rows, columns)
{
    /// <inheritdoc/>
    public override long StoredBytes => 0;

    /// <inheritdoc/>
    public override string Scheme => "zero";

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        destination.Clear();
    }

    /// <inheritdoc/>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        CheckProduct(x, tokens, y);
        y[..(tokens * Rows)].Clear();
    }
}
