using Squeeze.Tensors.Blocks;
using static Squeeze.Tensors.HalfConversions;

namespace Squeeze.Tensors;

// ggml's 256-value super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K.
public static partial class Dequantize
{
    private const int QK_K = 256;

    // Per 16 values: y = d * (sc & 15) * q - dmin * (sc >> 4); each 32 bytes of Qs serve 128 values, 2 bits per shift.
    private static void Q2_K(ReadOnlySpan<BlockQ2_K> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ2_K b = ref blocks[i];
            float d = F16ToF32(b.D), min = F16ToF32(b.DMin);
            Span<float> o = y.Slice(i * QK_K, QK_K);
            int k = 0, scale = 0;
            for (int n = 0; n < QK_K; n += 128)
            {
                int q = n / 4; // 32 bytes per 128 values
                for (int shift = 0; shift < 8; shift += 2)
                {
                    for (int half = 0; half < 2; half++)
                    {
                        int sc = b.Scales[scale++];
                        float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                        for (int l = 0; l < 16; l++)
                            o[k++] = dl * ((b.Qs[q + 16 * half + l] >> shift) & 3) - ml;
                    }
                }
            }
        }
    }

    // Per 16 values: y = d * (scale - 32) * (q - (hmask bit ? 0 : 4)).
    private static void Q3_K(ReadOnlySpan<BlockQ3_K> blocks, Span<float> y)
    {
        Span<sbyte> scales = stackalloc sbyte[16];
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ3_K b = ref blocks[i];
            float dAll = F16ToF32(b.D);
            UnpackQ3Scales(b.Scales, scales);
            Span<float> o = y.Slice(i * QK_K, QK_K);
            int k = 0, s = 0, m = 1;
            for (int n = 0; n < QK_K; n += 128)
            {
                int q = n / 4;
                for (int shift = 0; shift < 8; shift += 2, m <<= 1)
                {
                    for (int half = 0; half < 2; half++)
                    {
                        float dl = dAll * (scales[s++] - 32);
                        for (int l = 0; l < 16; l++)
                        {
                            int idx = 16 * half + l;
                            int v = ((b.Qs[q + idx] >> shift) & 3) - ((b.HMask[idx] & m) != 0 ? 0 : 4);
                            o[k++] = dl * v;
                        }
                    }
                }
            }
        }
    }

    /// <summary>Q3_K's 16 six-bit scales (0..63, before subtracting 32) from their 12-byte packing: the low 4 bits of
    /// scale j are nibble j of bytes 0..7 (low nibbles first), the high 2 bits come from bytes 8..11.</summary>
    internal static void UnpackQ3Scales(in Bytes12 packed, Span<sbyte> scales)
    {
        // scales: [16]
        for (int j = 0; j < 16; j++)
        {
            int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
            int high = (packed[8 + (j % 4)] >> (2 * (j / 4))) & 3;
            scales[j] = (sbyte)(low | (high << 4));
        }
    }

    /// <summary>Scale and min of sub-block <paramref name="j"/> (0..7) of Q4_K/Q5_K's 12-byte packing (ggml's <c>get_scale_min_k4</c>).</summary>
    internal static void ScaleMinK4(int j, in Bytes12 q, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = q[j] & 63;
            min = q[j + 4] & 63;
        }
        else
        {
            scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    // Per 32 values: y = d * sc * q - dmin * m; each 32 bytes of Qs serve 64 values (low nibbles, then high).
    private static void Q4_K(ReadOnlySpan<BlockQ4_K> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ4_K b = ref blocks[i];
            float d = F16ToF32(b.D), min = F16ToF32(b.DMin);
            Span<float> o = y.Slice(i * QK_K, QK_K);
            int k = 0;
            for (int j = 0, s = 0; j < QK_K; j += 64, s += 2)
            {
                ScaleMinK4(s, b.Scales, out int sc, out int m);
                float d1 = d * sc, m1 = min * m;
                ScaleMinK4(s + 1, b.Scales, out sc, out m);
                float d2 = d * sc, m2 = min * m;
                int q = j / 2;
                for (int l = 0; l < 32; l++)
                    o[k++] = d1 * (b.Qs[q + l] & 0xF) - m1;
                for (int l = 0; l < 32; l++)
                    o[k++] = d2 * (b.Qs[q + l] >> 4) - m2;
            }
        }
    }

    // As Q4_K with a fifth bit (value 16) from Qh: bit 2s of Qh[l] for the low nibbles, bit 2s + 1 for the high.
    private static void Q5_K(ReadOnlySpan<BlockQ5_K> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ5_K b = ref blocks[i];
            float d = F16ToF32(b.D), min = F16ToF32(b.DMin);
            Span<float> o = y.Slice(i * QK_K, QK_K);
            int k = 0, u1 = 1, u2 = 2;
            for (int j = 0, s = 0; j < QK_K; j += 64, s += 2, u1 <<= 2, u2 <<= 2)
            {
                ScaleMinK4(s, b.Scales, out int sc, out int m);
                float d1 = d * sc, m1 = min * m;
                ScaleMinK4(s + 1, b.Scales, out sc, out m);
                float d2 = d * sc, m2 = min * m;
                int q = j / 2;
                for (int l = 0; l < 32; l++)
                    o[k++] = d1 * ((b.Qs[q + l] & 0xF) + ((b.Qh[l] & u1) != 0 ? 16 : 0)) - m1;
                for (int l = 0; l < 32; l++)
                    o[k++] = d2 * ((b.Qs[q + l] >> 4) + ((b.Qh[l] & u2) != 0 ? 16 : 0)) - m2;
            }
        }
    }

    // Per 16 values: y = (d * scale) * (q - 32); per 128 values, 64 bytes of Ql and 32 of Qh.
    private static void Q6_K(ReadOnlySpan<BlockQ6_K> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ6_K b = ref blocks[i];
            float d = F16ToF32(b.D);
            Span<float> o = y.Slice(i * QK_K, QK_K);
            for (int n = 0; n < 2; n++)
            {
                int ql = 64 * n, qh = 32 * n, sc = 8 * n, ob = 128 * n;
                for (int l = 0; l < 32; l++)
                {
                    int s = sc + l / 16;
                    int h = b.Qh[qh + l];
                    int q1 = ((b.Ql[ql + l] & 0xF) | ((h & 3) << 4)) - 32;
                    int q2 = ((b.Ql[ql + l + 32] & 0xF) | (((h >> 2) & 3) << 4)) - 32;
                    int q3 = ((b.Ql[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
                    int q4 = ((b.Ql[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
                    o[ob + l] = d * b.Scales[s] * q1;
                    o[ob + l + 32] = d * b.Scales[s + 2] * q2;
                    o[ob + l + 64] = d * b.Scales[s + 4] * q3;
                    o[ob + l + 96] = d * b.Scales[s + 6] * q4;
                }
            }
        }
    }

    // y = d * q (f32 scale)
    private static void Q8_K(ReadOnlySpan<BlockQ8_K> blocks, Span<float> y)
    {
        for (int i = 0; i < blocks.Length; i++)
        {
            ref readonly BlockQ8_K b = ref blocks[i];
            Span<float> o = y.Slice(i * QK_K, QK_K);
            for (int j = 0; j < QK_K; j++)
                o[j] = b.D * b.Qs[j];
        }
    }
}
