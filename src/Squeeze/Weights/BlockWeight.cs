using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Weights;

/// <summary>A weight stored in one of GGUF's types (F32, F16, BF16, the legacy and k-quant blocks, IQ4_NL), multiplied
/// by <see cref="MatMul"/>'s kernels as ggml does.</summary>
public sealed class BlockWeight : LinearWeight
{
    /// <summary>The 2-D <paramref name="tensor"/> as a weight; <see cref="ArgumentException"/> for any other rank.</summary>
    public BlockWeight(Tensor tensor)
        : base(tensor.Name, checked((int)tensor.Rows), checked((int)tensor.Columns))
    {
        if (tensor.Shape.Length != 2)
            throw new ArgumentException($"tensor '{tensor.Name}' has shape [{string.Join(", ", tensor.Shape)}]; a weight matrix is 2-D", nameof(tensor));
        Tensor = tensor;
    }

    /// <summary>The stored tensor, rows contiguous.</summary>
    public Tensor Tensor { get; }

    /// <summary>An f16 weight [rows, columns] over a buffer it owns, holding <paramref name="values"/> rounded to f16.</summary>
    /// <exception cref="ArgumentException"><paramref name="values"/> is not rows × columns long.</exception>
    public static unsafe BlockWeight Float16(string name, ReadOnlySpan<float> values, int rows, int columns)
    {
        if (values.Length != (long)rows * columns)
            throw new ArgumentException($"{name}: {values.Length} values are not [{rows}, {columns}]", nameof(values));
        var buffer = NativeBuffer.Allocate(2L * values.Length);
        var halves = new Span<ushort>(buffer.Pointer, values.Length);
        for (int i = 0; i < values.Length; i++)
            halves[i] = HalfConversions.F32ToF16(values[i]);
        return new BlockWeight(new Tensor(name, GgmlType.F16, [rows, columns], buffer, 0));
    }

    /// <summary>The tensor's GGUF type.</summary>
    public GgmlType Type => Tensor.Type;

    /// <inheritdoc/>
    public override long StoredBytes => Tensor.ByteLength;

    /// <inheritdoc/>
    public override string Scheme => Tensor.Type.ToString();

    /// <inheritdoc/>
    public override void DecodeRow(int row, Span<float> destination)
    {
        CheckRow(row, destination);
        Dequantize.Row(Tensor.Type, Tensor.Row(row), destination);
    }

    /// <inheritdoc/>
    public override void Multiply(ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
        => MatMul.Multiply(Tensor, x, tokens, context, y);
}
