using System.Buffers;
using Squeeze.Kernels;

namespace Squeeze.Weights;

/// <summary>
/// W ≈ A·B with A [Rows, <see cref="Rank"/>] and B [<see cref="Rank"/>, Columns], each factor a weight of its own (f16
/// <see cref="BlockWeight"/>s, or quantized factors in any representation). The product runs as two: h = B·x through a
/// pooled buffer, then y = A·h; it costs rank·(rows + columns) multiply-adds per token instead of rows·columns.
/// </summary>
public sealed class LowRankWeight : LinearWeight
{
    private readonly Lazy<float[]> decodedB; // [rank, columns], for DecodeRow

    /// <exception cref="ArgumentException">The factors' shapes do not chain: A.Columns ≠ B.Rows.</exception>
    public LowRankWeight(string name, LinearWeight a, LinearWeight b)
        : base(name, Check(a, b).Rows, b.Columns)
    {
        A = a;
        B = b;
        decodedB = new Lazy<float[]>(b.Decode, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The left factor, [Rows, Rank].</summary>
    public LinearWeight A { get; }

    /// <summary>The right factor, [Rank, Columns].</summary>
    public LinearWeight B { get; }

    /// <summary>The inner dimension r of A·B: columns of <see cref="A"/>, rows of <see cref="B"/>.</summary>
    public int Rank => A.Columns;

    /// <inheritdoc/>
    public override long StoredBytes => A.StoredBytes + B.StoredBytes;

    /// <inheritdoc/>
    public override string Scheme => A.Scheme == B.Scheme ? $"lowrank r{Rank} {A.Scheme}" : $"lowrank r{Rank} {A.Scheme}·{B.Scheme}";

    /// <summary>Factors stored as f16 <see cref="BlockWeight"/>s named <c>name.a</c> and <c>name.b</c>.</summary>
    /// <param name="name">The weight's name.</param>
    /// <param name="a">[rows, rank] row-major.</param>
    /// <param name="b">[rank, columns] row-major.</param>
    /// <param name="rows">Output features.</param>
    /// <param name="rank">Inner dimension r.</param>
    /// <param name="columns">Input features.</param>
    public static LowRankWeight Float16(string name, ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rows, int rank, int columns)
        => new(name, BlockWeight.Float16(name + ".a", a, rows, rank), BlockWeight.Float16(name + ".b", b, rank, columns));

    /// <summary>The reference: row r of A times B, <c>destination[c] = Σ_k A[r, k]·B[k, c]</c> over ascending k, each product
    /// rounded to f32 before it is added (TensorPrimitives.MultiplyAdd does not fuse), the same bits on every machine
    /// (docs/FORMAT.md §3.4). B is decoded once, on first use.</summary>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        var b = decodedB.Value;
        var a = ArrayPool<float>.Shared.Rent(Rank);
        try
        {
            A.DecodeRow(row, a.AsSpan(0, Rank));
            destination.Clear();
            for (int k = 0; k < Rank; k++)
            {
                if (a[k] != 0)
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(b.AsSpan(k * Columns, Columns), a[k], destination, destination);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(a);
        }
    }

    /// <summary>h = B·x, then y = A·h. Deterministic whenever both factors' products are (their own
    /// <see cref="ComputeContext.Deterministic"/> handling applies to each step).</summary>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        CheckProduct(x, tokens, y);
        if (tokens == 0)
            return;
        int n = tokens * Rank;
        var hidden = ArrayPool<float>.Shared.Rent(n); // [tokens, rank]
        try
        {
            B.Multiply(x, tokens, context, hidden.AsSpan(0, n));
            A.Multiply(hidden.AsSpan(0, n), tokens, context, y);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(hidden);
        }
    }

    private static LinearWeight Check(LinearWeight a, LinearWeight b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Columns != b.Rows)
            throw new ArgumentException($"factors do not chain: A {a} has {a.Columns} columns, B {b} has {b.Rows} rows", nameof(b));
        return a;
    }
}
