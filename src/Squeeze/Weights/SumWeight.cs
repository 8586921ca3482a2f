using System.Buffers;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// W = Σ terms, every term of the same shape: a dense part plus sparse outliers (SpQR, SqueezeLLM), or a quantized
/// weight plus a low-rank correction of its error (EoRA). The product is the sum of the terms' products.
/// </summary>
public sealed class SumWeight : LinearWeight
{
    private readonly LinearWeight[] terms;

    /// <summary>The sum of <paramref name="terms"/> (at least two, all of the same shape) as one weight <paramref name="name"/>.</summary>
    public SumWeight(string name, IReadOnlyList<LinearWeight> terms)
        : base(name, Check(terms).Rows, terms[0].Columns)
    {
        foreach (var t in terms)
        {
            if (t.Rows != Rows || t.Columns != Columns)
                throw new ArgumentException($"{name}: term {t} is not [{Rows}, {Columns}]", nameof(terms));
        }
        this.terms = [.. terms];
    }

    /// <summary>The summed weights, in the order given.</summary>
    public IReadOnlyList<LinearWeight> Terms => terms;

    /// <inheritdoc/>
    public override long StoredBytes => terms.Sum(t => t.StoredBytes);

    /// <inheritdoc/>
    public override string Scheme => string.Join(" + ", terms.Select(t => t.Scheme));

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        terms[0].DecodeRow(row, destination);
        var part = ArrayPool<float>.Shared.Rent(Columns);
        try
        {
            for (int i = 1; i < terms.Length; i++)
            {
                terms[i].DecodeRow(row, part.AsSpan(0, Columns));
                for (int c = 0; c < Columns; c++)
                    destination[c] += part[c];
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(part);
        }
    }

    /// <inheritdoc/>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        CheckProduct(x, tokens, y);
        int n = tokens * Rows;
        terms[0].Multiply(x, tokens, context, y);
        var part = ArrayPool<float>.Shared.Rent(Math.Max(1, n));
        try
        {
            for (int i = 1; i < terms.Length; i++)
            {
                terms[i].Multiply(x, tokens, context, part.AsSpan(0, n));
                System.Numerics.Tensors.TensorPrimitives.Add(y[..n], part.AsSpan(0, n), y[..n]);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(part);
        }
    }

    private static LinearWeight Check(IReadOnlyList<LinearWeight> terms)
    {
        ArgumentNullException.ThrowIfNull(terms);
        if (terms.Count < 2)
            throw new ArgumentException("a sum needs at least two terms", nameof(terms));
        return terms[0];
    }
}
