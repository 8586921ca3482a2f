using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>
/// A <see cref="BlockWeight"/> whose one-token products (decode steps) run on its rows interleaved 16 at a time
/// (<see cref="MatMul.MultiplyRowGroups"/>, as llama.cpp repacks Q4_0 and Q4_K rows for its CPU kernels), bit for bit what
/// the rows give; every other product, and decoding, use the rows themselves. The row groups are packed on the first
/// one-token product into memory this weight owns (as much as the rows for Q4_0, 2.8 % more for Q4_K), so a runtime that
/// never decodes one token at a time never makes them. Only weights over a mapped file are wrapped (<see cref="For"/>):
/// their rows' pages are the kernel's to drop once packed, so the copy does not double the memory a model needs.
/// </summary>
public sealed unsafe class RowGroupWeight : LinearWeight, IDisposable
{
    private readonly BlockWeight rows;
    private readonly Lock gate = new();
    private NativeBuffer? groups;

    private RowGroupWeight(BlockWeight rows)
        : base(rows.Name, rows.Rows, rows.Columns)
    {
        this.rows = rows;
    }

    /// <summary><paramref name="weight"/> wrapped when its one-token products can run on row groups on this machine (a
    /// Q4_0 or Q4_K <see cref="BlockWeight"/> over a mapped file with whole groups of rows, AVX-512BW), else null.</summary>
    public static RowGroupWeight? For(LinearWeight weight)
        => weight is BlockWeight block && VecDot.HasRowGroups(block.Type, VecDot.Best) && block.Tensor.Buffer.IsMapped && block.Rows % VecDot.RowGroupRows == 0
            ? new RowGroupWeight(block)
            : null;

    /// <inheritdoc/>
    public override long StoredBytes => rows.StoredBytes;

    /// <inheritdoc/>
    public override string Scheme => rows.Scheme;

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination) => rows.DecodeRow(row, destination);

    /// <inheritdoc/>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (tokens != 1 || context.Deterministic)
        {
            rows.Multiply(x, tokens, context, y);
            return;
        }
        CheckProduct(x, tokens, y);
        byte* packed = Groups();
        fixed (float* px = x)
        fixed (float* py = y)
            MatMul.MultiplyRowGroups(rows.Type, packed, Rows, Columns, px, context, py);
    }

    /// <summary>Frees the row groups.</summary>
    public void Dispose()
    {
        lock (gate)
        {
            groups?.Dispose();
            groups = null;
        }
    }

    private byte* Groups()
    {
        lock (gate)
        {
            if (groups is null)
            {
                var buffer = NativeBuffer.Allocate(MatMul.RowGroupsBytes(rows.Type, Rows, Columns));
                MatMul.PackRowGroups(rows.Type, rows.Tensor.Data, Rows, Columns, buffer.Pointer);
                groups = buffer;
            }
            return groups.Pointer;
        }
    }
}
