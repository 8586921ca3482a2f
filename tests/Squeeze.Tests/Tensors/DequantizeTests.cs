using System.Runtime.InteropServices;
using Squeeze.Tensors;

namespace Squeeze.Tests.Tensors;

/// <summary>The types the synthetic golden files do not cover (F16, BF16, Q8_1, Q8_K) and argument checks.</summary>
public class DequantizeTests
{
    [Fact]
    public void F16_and_BF16_rows_decode_every_value()
    {
        var bits = new ushort[65536];
        for (int i = 0; i < bits.Length; i++)
            bits[i] = (ushort)i;
        var bytes = MemoryMarshal.AsBytes(bits.AsSpan());
        var y = new float[bits.Length];
        Dequantize.Row(GgmlType.F16, bytes, y);
        for (int i = 0; i < bits.Length; i++)
            Assert.Equal(BitConverter.SingleToInt32Bits((float)BitConverter.UInt16BitsToHalf(bits[i])), BitConverter.SingleToInt32Bits(y[i]));
        Dequantize.Row(GgmlType.BF16, bytes, y);
        for (int i = 0; i < bits.Length; i++)
            Assert.Equal(i << 16, BitConverter.SingleToInt32Bits(y[i]));
    }

    [Fact]
    public void Q8_1_is_q_times_d()
    {
        var block = new byte[36];
        BitConverter.TryWriteBytes(block.AsSpan(0), HalfConversions.F32ToF16(0.5f));
        BitConverter.TryWriteBytes(block.AsSpan(2), HalfConversions.F32ToF16(123f)); // cached sum: ignored
        for (int j = 0; j < 32; j++)
            block[4 + j] = (byte)(sbyte)(j - 16);
        var y = new float[32];
        Dequantize.Row(GgmlType.Q8_1, block, y);
        for (int j = 0; j < 32; j++)
            Assert.Equal((j - 16) * 0.5f, y[j]);
    }

    [Fact]
    public void Q8_K_is_q_times_f32_d()
    {
        var block = new byte[292];
        BitConverter.TryWriteBytes(block.AsSpan(0), 0.1f);
        for (int j = 0; j < 256; j++)
            block[4 + j] = (byte)(sbyte)(j - 128);
        var y = new float[256];
        Dequantize.Row(GgmlType.Q8_K, block, y);
        for (int j = 0; j < 256; j++)
            Assert.Equal(0.1f * (j - 128), y[j]);
    }

    [Fact]
    public void Q4_0_nibble_order_low_then_high()
    {
        var block = new byte[18];
        BitConverter.TryWriteBytes(block.AsSpan(0), HalfConversions.F32ToF16(2f));
        for (int j = 0; j < 16; j++)
            block[2 + j] = (byte)(j | ((15 - j) << 4));
        var y = new float[32];
        Dequantize.Row(GgmlType.Q4_0, block, y);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal((j - 8) * 2f, y[j]);
            Assert.Equal((15 - j - 8) * 2f, y[j + 16]);
        }
    }

    [Fact]
    public void Length_mismatches_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => Dequantize.Row(GgmlType.Q4_0, new byte[18], new float[33]));
        Assert.Throws<ArgumentException>(() => Dequantize.Row(GgmlType.Q4_0, new byte[17], new float[32]));
        Assert.Throws<ArgumentException>(() => Dequantize.Row(GgmlType.F32, new byte[8], new float[3]));
        Dequantize.Row(GgmlType.Q6_K, ReadOnlySpan<byte>.Empty, Span<float>.Empty);
    }
}
