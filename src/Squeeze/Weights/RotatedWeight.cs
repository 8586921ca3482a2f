using System.Buffers;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// A weight stored in a rotated basis (QuIP-style incoherence processing): <c>W = W′ · F</c> with F a seeded
/// <see cref="RandomizedHadamard"/> (orthogonal) and W′ = W · Fᵀ the <see cref="Inner"/> weight, whose rows are
/// <c>F · w</c>: outliers are spread over each Hadamard block, so W′ quantizes with less error. The product is
/// <c>W · x = W′ · (F · x)</c>: each token's activations are rotated (O(n log n)) into a pooled buffer and the inner
/// weight multiplies them with its own kernel. The seed and the permutation flag are all that is stored besides the
/// inner weight. The rotation is bit-identical at every SIMD level, so the product is deterministic when the inner
/// one is.
/// </summary>
public sealed class RotatedWeight : LinearWeight
{
    /// <exception cref="ArgumentException">The rotation's length is not the inner weight's row length.</exception>
    public RotatedWeight(RandomizedHadamard rotation, LinearWeight inner)
        : base(inner?.Name ?? throw new ArgumentNullException(nameof(inner)), inner.Rows, inner.Columns)
    {
        ArgumentNullException.ThrowIfNull(rotation);
        if (rotation.Columns != inner.Columns)
            throw new ArgumentException($"{inner.Name}: a rotation of {rotation.Columns} values cannot rotate rows of {inner.Columns}", nameof(rotation));
        Rotation = rotation;
        Inner = inner;
    }

    /// <summary>F: applied to the activations, undone on decoded rows.</summary>
    public RandomizedHadamard Rotation { get; }

    /// <summary>W′ = W · Fᵀ, in any representation.</summary>
    public LinearWeight Inner { get; }

    /// <inheritdoc/>
    public override long StoredBytes => Inner.StoredBytes;

    /// <inheritdoc/>
    public override string Scheme => $"rotation b{Rotation.BlockSize}{(Rotation.Permute ? " perm" : "")} + {Inner.Scheme}";

    /// <summary><c>destination = Fᵀ · w′</c> (the inner row rotated back).</summary>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        var rotated = ArrayPool<float>.Shared.Rent(Columns);
        try
        {
            var span = rotated.AsSpan(0, Columns);
            Inner.DecodeRow(row, span);
            Rotation.Inverse(span, destination);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rotated);
        }
    }

    /// <inheritdoc/>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        CheckProduct(x, tokens, y);
        int n = Columns;
        var rotated = ArrayPool<float>.Shared.Rent(checked(tokens * n));
        try
        {
            for (int t = 0; t < tokens; t++)
                Rotation.Forward(x.Slice(t * n, n), rotated.AsSpan(t * n, n));
            Inner.Multiply(rotated.AsSpan(0, tokens * n), tokens, context, y);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rotated);
        }
    }
}
