using System.Runtime.InteropServices;
using Squeeze.Tensors;

namespace Squeeze.Quantization;

// Plain float encodings: F32 (copy), F16 (IEEE half, nearest even), BF16 (ggml's rounding).
public static partial class Quantize
{
    // y[i] = x[i]
    private static void F32(ReadOnlySpan<float> x, Span<byte> y) => MemoryMarshal.AsBytes(x).CopyTo(y);

    // y[i] = half(x[i])
    private static void F16(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<ushort> h = MemoryMarshal.Cast<byte, ushort>(y);
        for (int i = 0; i < x.Length; i++)
            h[i] = HalfConversions.F32ToF16(x[i]);
    }

    // y[i] = bf16(x[i])
    private static void BF16(ReadOnlySpan<float> x, Span<byte> y)
    {
        Span<ushort> h = MemoryMarshal.Cast<byte, ushort>(y);
        for (int i = 0; i < x.Length; i++)
            h[i] = HalfConversions.F32ToBf16(x[i]);
    }
}
