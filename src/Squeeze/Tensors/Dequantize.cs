using System.Runtime.InteropServices;

namespace Squeeze.Tensors;

/// <summary>Decoding of every <see cref="GgmlType"/> to f32 (scalar reference, bit-exact with ggml's
/// <c>dequantize_row_*</c>: same operations in the same order, no fused multiply-add).</summary>
public static partial class Dequantize
{
    /// <summary>Decodes one row: <c>destination[i] = value i of the encoded row</c>. <paramref name="source"/> holds
    /// exactly <c>RowBytes(type, destination.Length)</c> bytes.</summary>
    /// <exception cref="ArgumentException">The destination length is not a multiple of the block size, or the source
    /// length does not match it.</exception>
    public static void Row(GgmlType type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        long expected = GgmlTypes.RowBytes(type, destination.Length);
        if (source.Length != expected)
            throw new ArgumentException($"a {type} row of {destination.Length} values takes {expected} bytes, not {source.Length}", nameof(source));
        switch (type)
        {
            case GgmlType.F32: MemoryMarshal.Cast<byte, float>(source).CopyTo(destination); break;
            case GgmlType.F16: F16(MemoryMarshal.Cast<byte, ushort>(source), destination); break;
            case GgmlType.BF16: BF16(MemoryMarshal.Cast<byte, ushort>(source), destination); break;
            case GgmlType.Q4_0: Q4_0(Blocks<Blocks.BlockQ4_0>(source), destination); break;
            case GgmlType.Q4_1: Q4_1(Blocks<Blocks.BlockQ4_1>(source), destination); break;
            case GgmlType.Q5_0: Q5_0(Blocks<Blocks.BlockQ5_0>(source), destination); break;
            case GgmlType.Q5_1: Q5_1(Blocks<Blocks.BlockQ5_1>(source), destination); break;
            case GgmlType.Q8_0: Q8_0(Blocks<Blocks.BlockQ8_0>(source), destination); break;
            case GgmlType.Q8_1: Q8_1(Blocks<Blocks.BlockQ8_1>(source), destination); break;
            case GgmlType.IQ4_NL: IQ4_NL(Blocks<Blocks.BlockIQ4_NL>(source), destination); break;
            case GgmlType.Q2_K: Q2_K(Blocks<Blocks.BlockQ2_K>(source), destination); break;
            case GgmlType.Q3_K: Q3_K(Blocks<Blocks.BlockQ3_K>(source), destination); break;
            case GgmlType.Q4_K: Q4_K(Blocks<Blocks.BlockQ4_K>(source), destination); break;
            case GgmlType.Q5_K: Q5_K(Blocks<Blocks.BlockQ5_K>(source), destination); break;
            case GgmlType.Q6_K: Q6_K(Blocks<Blocks.BlockQ6_K>(source), destination); break;
            case GgmlType.Q8_K: Q8_K(Blocks<Blocks.BlockQ8_K>(source), destination); break;
            default: throw new NotSupportedException($"tensor type {type} cannot be dequantized");
        }
    }

    /// <summary>Decodes a whole tensor: <c>destination[r * Columns + c] = value (r, c)</c>;
    /// <paramref name="destination"/> holds exactly <see cref="Tensor.ElementCount"/> values.</summary>
    public static void Tensor(Tensor tensor, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (destination.Length != tensor.ElementCount)
            throw new ArgumentException($"tensor '{tensor.Name}' has {tensor.ElementCount} values, the destination {destination.Length}", nameof(destination));
        int columns = checked((int)tensor.Columns);
        for (long r = 0; r < tensor.Rows; r++)
            Row(tensor.Type, tensor.Row(r), destination.Slice(checked((int)(r * columns)), columns));
    }

    private static ReadOnlySpan<T> Blocks<T>(ReadOnlySpan<byte> source) where T : struct => MemoryMarshal.Cast<byte, T>(source);

    // x = half(bits)
    private static void F16(ReadOnlySpan<ushort> x, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++)
            y[i] = HalfConversions.F16ToF32(x[i]);
    }

    // x = bits << 16
    private static void BF16(ReadOnlySpan<ushort> x, Span<float> y)
    {
        for (int i = 0; i < x.Length; i++)
            y[i] = HalfConversions.Bf16ToF32(x[i]);
    }
}
