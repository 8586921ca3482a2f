namespace Squeeze.Kernels;

/// <summary>
/// Byte offsets inside ggml's quantization blocks, as the kernels read them (see ggml-common.h). Kept private to the
/// kernels: the block structs that describe the formats live in Squeeze.Tensors.
/// </summary>
internal static class BlockLayout
{
    public const int QK = 32;    // values in a block of the 32-types
    public const int QK_K = 256; // values in a k-quant super-block

    // Q4_0: d f16, qs[16] (value j: low nibble of qs[j], value j+16: high nibble)
    public const int Q4_0Bytes = 18, Q4_0Qs = 2;
    // Q4_1: d f16, m f16, qs[16]
    public const int Q4_1Bytes = 20, Q4_1M = 2, Q4_1Qs = 4;
    // Q5_0: d f16, qh u32 (bit j = fifth bit of value j), qs[16]
    public const int Q5_0Bytes = 22, Q5_0Qh = 2, Q5_0Qs = 6;
    // Q5_1: d f16, m f16, qh u32, qs[16]
    public const int Q5_1Bytes = 24, Q5_1M = 2, Q5_1Qh = 4, Q5_1Qs = 8;
    // Q8_0: d f16, qs[32] int8
    public const int Q8_0Bytes = 34, Q8_0Qs = 2;
    // Q8_1: d f16, s f16 (= d * Σ qs), qs[32] int8
    public const int Q8_1Bytes = 36, Q8_1S = 2, Q8_1Qs = 4;
    // IQ4_NL: d f16, qs[16] (indices into the non-linear table)
    public const int IQ4_NLBytes = 18, IQ4_NLQs = 2;

    // Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d f16, dmin f16
    public const int Q2_KBytes = 84, Q2_KQs = 16, Q2_KD = 80, Q2_KDmin = 82;
    // Q3_K: hmask[32], qs[64], scales[12] (16 six-bit scales), d f16
    public const int Q3_KBytes = 110, Q3_KQs = 32, Q3_KScales = 96, Q3_KD = 108;
    // Q4_K: d f16, dmin f16, scales[12] (8 six-bit scales + 8 six-bit mins), qs[128]
    public const int Q4_KBytes = 144, Q4_KDmin = 2, Q4_KScales = 4, Q4_KQs = 16;
    // Q5_K: d f16, dmin f16, scales[12], qh[32], qs[128]
    public const int Q5_KBytes = 176, Q5_KDmin = 2, Q5_KScales = 4, Q5_KQh = 16, Q5_KQs = 48;
    // Q6_K: ql[128], qh[64], scales[16] int8, d f16
    public const int Q6_KBytes = 210, Q6_KQh = 128, Q6_KScales = 192, Q6_KD = 208;
    // Q8_K: d f32, qs[256] int8, bsums[16] int16 (sum of each 16 qs)
    public const int Q8_KBytes = 292, Q8_KQs = 4, Q8_KBsums = 260;

    /// <summary>The 16 levels of IQ4_NL (ggml's kvalues_iq4nl).</summary>
    public static ReadOnlySpan<sbyte> IQ4_NLValues => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
}
