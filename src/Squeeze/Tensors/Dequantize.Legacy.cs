using Squeeze.Tensors.Blocks;
using static Squeeze.Tensors.HalfConversions;

namespace Squeeze.Tensors;

// ggml's 32-value block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, IQ4_NL.
// In every nibble format, byte j holds value j in its low nibble and value j + 16 in its high nibble.
public static partial class Dequantize
{
    private const int QK = 32;

    /// <summary>IQ4_NL's non-linear 4-bit code book (ggml's <c>kvalues_iq4nl</c>).</summary>
    internal static ReadOnlySpan<sbyte> IQ4NLValues => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    // y = (q - 8) * d
    private static void Q4_0(ReadOnlySpan<BlockQ4_0> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ4_0 b = ref blocks[i];
            float d = F16ToF32(b.D);
            Span<float> o = y.Slice(i * QK, QK);
            for (int j = 0; j < QK / 2; j++)
            {
                o[j] = ((b.Qs[j] & 0x0F) - 8) * d;
                o[j + QK / 2] = ((b.Qs[j] >> 4) - 8) * d;
            }
        }
    }

    // y = q * d + m
    private static void Q4_1(ReadOnlySpan<BlockQ4_1> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ4_1 b = ref blocks[i];
            float d = F16ToF32(b.D), m = F16ToF32(b.M);
            Span<float> o = y.Slice(i * QK, QK);
            for (int j = 0; j < QK / 2; j++)
            {
                o[j] = (b.Qs[j] & 0x0F) * d + m;
                o[j + QK / 2] = (b.Qs[j] >> 4) * d + m;
            }
        }
    }

    // y = (q - 16) * d, q = nibble | fifth bit << 4
    private static void Q5_0(ReadOnlySpan<BlockQ5_0> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ5_0 b = ref blocks[i];
            float d = F16ToF32(b.D);
            uint qh = QhBits(b.Qh);
            Span<float> o = y.Slice(i * QK, QK);
            for (int j = 0; j < QK / 2; j++)
            {
                int h0 = (int)(((qh >> j) << 4) & 0x10);
                int h1 = (int)((qh >> (j + 12)) & 0x10);
                o[j] = (((b.Qs[j] & 0x0F) | h0) - 16) * d;
                o[j + QK / 2] = (((b.Qs[j] >> 4) | h1) - 16) * d;
            }
        }
    }

    // y = q * d + m, q = nibble | fifth bit << 4
    private static void Q5_1(ReadOnlySpan<BlockQ5_1> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ5_1 b = ref blocks[i];
            float d = F16ToF32(b.D), m = F16ToF32(b.M);
            uint qh = QhBits(b.Qh);
            Span<float> o = y.Slice(i * QK, QK);
            for (int j = 0; j < QK / 2; j++)
            {
                int h0 = (int)(((qh >> j) << 4) & 0x10);
                int h1 = (int)((qh >> (j + 12)) & 0x10);
                o[j] = ((b.Qs[j] & 0x0F) | h0) * d + m;
                o[j + QK / 2] = ((b.Qs[j] >> 4) | h1) * d + m;
            }
        }
    }

    // y = q * d
    private static void Q8_0(ReadOnlySpan<BlockQ8_0> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ8_0 b = ref blocks[i];
            float d = F16ToF32(b.D);
            Span<float> o = y.Slice(i * QK, QK);
            for (int j = 0; j < QK; j++)
                o[j] = b.Qs[j] * d;
        }
    }

    // y = q * d (the cached sum is not needed)
    private static void Q8_1(ReadOnlySpan<BlockQ8_1> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ8_1 b = ref blocks[i];
            float d = F16ToF32(b.D);
            Span<float> o = y.Slice(i * QK, QK);
            for (int j = 0; j < QK; j++)
                o[j] = b.Qs[j] * d;
        }
    }

    // y = d * kvalues[q]
    private static void IQ4_NL(ReadOnlySpan<BlockIQ4_NL> blocks, Span<float> y)
    {
        ReadOnlySpan<sbyte> k = IQ4NLValues;
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockIQ4_NL b = ref blocks[i];
            float d = F16ToF32(b.D);
            Span<float> o = y.Slice(i * QK, QK);
            for (int j = 0; j < QK / 2; j++)
            {
                o[j] = d * k[b.Qs[j] & 0x0F];
                o[j + QK / 2] = d * k[b.Qs[j] >> 4];
            }
        }
    }

    private static uint QhBits(in Bytes4 qh) => (uint)(qh[0] | (qh[1] << 8) | (qh[2] << 16) | (qh[3] << 24));
}
