using Squeeze.Tensors;
using System.Runtime.CompilerServices;
using static Squeeze.Kernels.BlockLayout;

namespace Squeeze.Kernels;

/// <summary>
/// Dot products of one encoded weight row with one activation row in the weight type's vec_dot type (see
/// <see cref="QuantizeActivations"/>), computed as ggml's CPU backend does: integer products per block, scaled by the
/// block scales and summed in f32. Every method has the signature (weight row, activation row, n) → Σ, n being the
/// number of values (a multiple of the block size). This file holds the plain scalar references.
/// </summary>
internal static unsafe partial class VecDot
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float H(byte* p) => Fp16.ToSingle(Unsafe.ReadUnaligned<ushort>(p));

    /// <summary>Σ_i w[i] · x[i], f32 weights and activations.</summary>
    public static float F32Scalar(byte* w, byte* x, int n)
    {
        float* a = (float*)w, b = (float*)x;
        float sum = 0;
        for (int i = 0; i < n; i++)
            sum += a[i] * b[i];
        return sum;
    }

    /// <summary>Σ_i f16(w[i]) · x[i]; x already rounded to f16 (held as f32).</summary>
    public static float F16Scalar(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        float sum = 0;
        for (int i = 0; i < n; i++)
            sum += Fp16.ToSingle(a[i]) * b[i];
        return sum;
    }

    /// <summary>Σ_i bf16(w[i]) · x[i]; x already rounded to bf16 (held as f32).</summary>
    public static float BF16Scalar(byte* w, byte* x, int n)
    {
        ushort* a = (ushort*)w;
        float* b = (float*)x;
        float sum = 0;
        for (int i = 0; i < n; i++)
            sum += HalfConversions.Bf16ToF32(a[i]) * b[i];
        return sum;
    }

    /// <summary>Q4_0 · Q8_0: Σ_blocks d_w·d_x · Σ_j (q_w[j] − 8)·q_x[j].</summary>
    public static float Q4_0Scalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK; b++, w += Q4_0Bytes, x += Q8_0Bytes)
        {
            byte* qs = w + Q4_0Qs;
            sbyte* q8 = (sbyte*)(x + Q8_0Qs);
            int sumi = 0;
            for (int j = 0; j < 16; j++)
                sumi += ((qs[j] & 0xF) - 8) * q8[j] + ((qs[j] >> 4) - 8) * q8[j + 16];
            sum += H(w) * H(x) * sumi;
        }
        return sum;
    }

    /// <summary>Q4_1 · Q8_1: Σ_blocks d_w·d_x · Σ_j q_w[j]·q_x[j] + m_w·s_x.</summary>
    public static float Q4_1Scalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK; b++, w += Q4_1Bytes, x += Q8_1Bytes)
        {
            byte* qs = w + Q4_1Qs;
            sbyte* q8 = (sbyte*)(x + Q8_1Qs);
            int sumi = 0;
            for (int j = 0; j < 16; j++)
                sumi += (qs[j] & 0xF) * q8[j] + (qs[j] >> 4) * q8[j + 16];
            sum += H(w) * H(x) * sumi + H(w + Q4_1M) * H(x + Q8_1S);
        }
        return sum;
    }

    /// <summary>Q5_0 · Q8_0: Σ_blocks d_w·d_x · Σ_j (q_w[j] − 16)·q_x[j], q_w 5-bit.</summary>
    public static float Q5_0Scalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK; b++, w += Q5_0Bytes, x += Q8_0Bytes)
        {
            uint qh = Unsafe.ReadUnaligned<uint>(w + Q5_0Qh);
            byte* qs = w + Q5_0Qs;
            sbyte* q8 = (sbyte*)(x + Q8_0Qs);
            int sumi = 0;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10;
                int h1 = (int)(qh >> (j + 12)) & 0x10;
                sumi += (((qs[j] & 0xF) | h0) - 16) * q8[j] + (((qs[j] >> 4) | h1) - 16) * q8[j + 16];
            }
            sum += H(w) * H(x) * sumi;
        }
        return sum;
    }

    /// <summary>Q5_1 · Q8_1: Σ_blocks d_w·d_x · Σ_j q_w[j]·q_x[j] + m_w·s_x, q_w 5-bit.</summary>
    public static float Q5_1Scalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK; b++, w += Q5_1Bytes, x += Q8_1Bytes)
        {
            uint qh = Unsafe.ReadUnaligned<uint>(w + Q5_1Qh);
            byte* qs = w + Q5_1Qs;
            sbyte* q8 = (sbyte*)(x + Q8_1Qs);
            int sumi = 0;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10;
                int h1 = (int)(qh >> (j + 12)) & 0x10;
                sumi += ((qs[j] & 0xF) | h0) * q8[j] + ((qs[j] >> 4) | h1) * q8[j + 16];
            }
            sum += H(w) * H(x) * sumi + H(w + Q5_1M) * H(x + Q8_1S);
        }
        return sum;
    }

    /// <summary>Q8_0 · Q8_0: Σ_blocks d_w·d_x · Σ_j q_w[j]·q_x[j].</summary>
    public static float Q8_0Scalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK; b++, w += Q8_0Bytes, x += Q8_0Bytes)
        {
            sbyte* qw = (sbyte*)(w + Q8_0Qs);
            sbyte* q8 = (sbyte*)(x + Q8_0Qs);
            int sumi = 0;
            for (int j = 0; j < QK; j++)
                sumi += qw[j] * q8[j];
            sum += H(w) * H(x) * sumi;
        }
        return sum;
    }

    /// <summary>IQ4_NL · Q8_0: Σ_blocks d_w·d_x · Σ_j kvalues[q_w[j]]·q_x[j].</summary>
    public static float IQ4_NLScalar(byte* w, byte* x, int n)
    {
        ReadOnlySpan<sbyte> k = IQ4_NLValues;
        float sum = 0;
        for (int b = 0; b < n / QK; b++, w += IQ4_NLBytes, x += Q8_0Bytes)
        {
            byte* qs = w + IQ4_NLQs;
            sbyte* q8 = (sbyte*)(x + Q8_0Qs);
            int sumi = 0;
            for (int j = 0; j < 16; j++)
                sumi += k[qs[j] & 0xF] * q8[j] + k[qs[j] >> 4] * q8[j + 16];
            sum += H(w) * H(x) * sumi;
        }
        return sum;
    }

    /// <summary>Q2_K · Q8_K: Σ_blocks d_x·d_w · Σ_j sc[j]·Σ_16 q_w·q_x − d_x·dmin_w · Σ_j m[j]·bsums[j] (16-value sub-blocks, q_w 2-bit).</summary>
    public static float Q2_KScalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK_K; b++, w += Q2_KBytes, x += Q8_KBytes)
        {
            byte* sc = w;
            short* bsums = (short*)(x + Q8_KBsums);
            int summs = 0;
            for (int j = 0; j < 16; j++)
                summs += bsums[j] * (sc[j] >> 4);
            float dy = *(float*)x;
            float dall = dy * H(w + Q2_KD), dmin = dy * H(w + Q2_KDmin);
            byte* q2 = w + Q2_KQs;
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            int isum = 0, s = 0;
            for (int chunk = 0; chunk < 2; chunk++, q2 += 32)
            {
                for (int shift = 0; shift < 8; shift += 2)
                {
                    for (int half = 0; half < 2; half++, q8 += 16)
                    {
                        int sub = 0;
                        for (int l = 0; l < 16; l++)
                            sub += q8[l] * ((q2[16 * half + l] >> shift) & 3);
                        isum += (sc[s++] & 0xF) * sub;
                    }
                }
            }
            sum += dall * isum - dmin * summs;
        }
        return sum;
    }

    /// <summary>The 16 signed 6-bit scales of a Q3_K block (stored offset by 32 in 12 bytes).</summary>
    /// <remarks><paramref name="scales"/> must be 4-byte aligned (a stackalloc'd buffer is).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void UnpackQ3_KScales(byte* packed, sbyte* scales)
    {
        const uint kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
        uint a0 = Unsafe.ReadUnaligned<uint>(packed), a1 = Unsafe.ReadUnaligned<uint>(packed + 4), tmp = Unsafe.ReadUnaligned<uint>(packed + 8);
        uint* aux = (uint*)scales;
        aux[0] = (a0 & kmask2) | (((tmp >> 0) & kmask1) << 4);
        aux[1] = (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4);
        aux[2] = ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        aux[3] = ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        byte* bytes = (byte*)aux;
        for (int j = 0; j < 16; j++)
            scales[j] = (sbyte)(bytes[j] - 32);
    }

    /// <summary>Q3_K · Q8_K: Σ_blocks d_x·d_w · Σ_j sc[j]·Σ_16 q_w·q_x, q_w = 2 low bits − (high bit ? 0 : 4).</summary>
    public static float Q3_KScalar(byte* w, byte* x, int n)
    {
        sbyte* scales = stackalloc sbyte[16];
        float sum = 0;
        for (int b = 0; b < n / QK_K; b++, w += Q3_KBytes, x += Q8_KBytes)
        {
            UnpackQ3_KScales(w + Q3_KScales, scales);
            byte* hm = w;
            byte* qs = w + Q3_KQs;
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            int isum = 0, s = 0;
            for (int chunk = 0; chunk < 2; chunk++, qs += 32)
            {
                for (int j = 0; j < 4; j++)
                {
                    int m = 1 << (4 * chunk + j);
                    for (int half = 0; half < 2; half++, q8 += 16)
                    {
                        int sub = 0;
                        for (int l = 0; l < 16; l++)
                        {
                            int i = 16 * half + l;
                            int v = ((qs[i] >> (2 * j)) & 3) - ((hm[i] & m) != 0 ? 0 : 4);
                            sub += v * q8[l];
                        }
                        isum += scales[s++] * sub;
                    }
                }
            }
            sum += H(w + Q3_KD) * *(float*)x * isum;
        }
        return sum;
    }

    /// <summary>Scale and min of sub-block <paramref name="j"/> (0..7) of a Q4_K / Q5_K block (ggml's get_scale_min_k4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void ScaleMinK4(int j, byte* q, out int scale, out int min)
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

    /// <summary>Q4_K · Q8_K: Σ_blocks d_x·d_w · Σ_j sc[j]·Σ_32 q_w·q_x − d_x·dmin_w · Σ_j m[j]·(bsums[2j] + bsums[2j+1]).</summary>
    public static float Q4_KScalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK_K; b++, w += Q4_KBytes, x += Q8_KBytes)
        {
            byte* qs = w + Q4_KQs;
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            short* bsums = (short*)(x + Q8_KBsums);
            int isum = 0, summs = 0;
            for (int j = 0; j < 4; j++, qs += 32, q8 += 64)
            {
                int lo = 0, hi = 0;
                for (int l = 0; l < 32; l++)
                {
                    lo += (qs[l] & 0xF) * q8[l];
                    hi += (qs[l] >> 4) * q8[l + 32];
                }
                ScaleMinK4(2 * j, w + Q4_KScales, out int s0, out int m0);
                ScaleMinK4(2 * j + 1, w + Q4_KScales, out int s1, out int m1);
                isum += s0 * lo + s1 * hi;
                summs += m0 * (bsums[4 * j] + bsums[4 * j + 1]) + m1 * (bsums[4 * j + 2] + bsums[4 * j + 3]);
            }
            float dy = *(float*)x;
            sum += H(w) * dy * isum - H(w + Q4_KDmin) * dy * summs;
        }
        return sum;
    }

    /// <summary>Q5_K · Q8_K: as Q4_K with 5-bit q_w (fifth bit from qh).</summary>
    public static float Q5_KScalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK_K; b++, w += Q5_KBytes, x += Q8_KBytes)
        {
            byte* qs = w + Q5_KQs;
            byte* qh = w + Q5_KQh;
            sbyte* q8 = (sbyte*)(x + Q8_KQs);
            short* bsums = (short*)(x + Q8_KBsums);
            int isum = 0, summs = 0;
            for (int j = 0; j < 4; j++, qs += 32, q8 += 64)
            {
                int u1 = 1 << (2 * j), u2 = 2 << (2 * j);
                int lo = 0, hi = 0;
                for (int l = 0; l < 32; l++)
                {
                    lo += ((qs[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0)) * q8[l];
                    hi += ((qs[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) * q8[l + 32];
                }
                ScaleMinK4(2 * j, w + Q5_KScales, out int s0, out int m0);
                ScaleMinK4(2 * j + 1, w + Q5_KScales, out int s1, out int m1);
                isum += s0 * lo + s1 * hi;
                summs += m0 * (bsums[4 * j] + bsums[4 * j + 1]) + m1 * (bsums[4 * j + 2] + bsums[4 * j + 3]);
            }
            float dy = *(float*)x;
            sum += H(w) * dy * isum - H(w + Q5_KDmin) * dy * summs;
        }
        return sum;
    }

    /// <summary>Q6_K · Q8_K: Σ_blocks d_w·d_x · Σ_j sc[j]·Σ_16 (q_w − 32)·q_x, q_w 6-bit, sc int8.</summary>
    public static float Q6_KScalar(byte* w, byte* x, int n)
    {
        float sum = 0;
        for (int b = 0; b < n / QK_K; b++, w += Q6_KBytes, x += Q8_KBytes)
        {
            int isum = 0;
            for (int chunk = 0; chunk < 2; chunk++)
            {
                byte* ql = w + 64 * chunk;
                byte* qh = w + Q6_KQh + 32 * chunk;
                sbyte* sc = (sbyte*)(w + Q6_KScales) + 8 * chunk;
                sbyte* q8 = (sbyte*)(x + Q8_KQs) + 128 * chunk;
                for (int l = 0; l < 32; l++)
                {
                    int s = l / 16;
                    int v1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                    int v2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int v3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int v4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    isum += sc[s] * v1 * q8[l] + sc[s + 2] * v2 * q8[l + 32] + sc[s + 4] * v3 * q8[l + 64] + sc[s + 6] * v4 * q8[l + 96];
                }
            }
            sum += H(w + Q6_KD) * *(float*)x * isum;
        }
        return sum;
    }
}
