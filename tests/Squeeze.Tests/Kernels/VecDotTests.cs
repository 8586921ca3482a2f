using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Tests.Kernels;

public unsafe class VecDotTests
{
    /// <summary>SIMD vs scalar: same integer sums, f32 partial sums added in another order.</summary>
    private const double SumOrderLimit = 2e-6;

    /// <summary>Scalar kernel vs Σ dequantize(w)·dequantize(x) in double: the kernel scales integer sums per block where
    /// dequantization rounds each value (and, for k-quants, each d·scale and dmin·min) to f32 first.</summary>
    private static double DequantizedLimit(GgmlType type) => type switch
    {
        GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q4_1 or GgmlType.Q5_1 => 1e-5,
        _ => 2e-6,
    };

    private static float Dot(delegate*<byte*, byte*, int, float> kernel, byte[] w, byte[] x, int n)
    {
        fixed (byte* pw = w)
        fixed (byte* px = x)
            return kernel(pw, px, n);
    }

    private static IEnumerable<int> Lengths(GgmlType type)
    {
        int block = GgmlTypes.BlockSize(type);
        if (block == 1)
            return Enumerable.Range(0, 257).Concat([288, 511, 768, 1000, 2048]);
        int maxBlocks = block == 256 ? 12 : 40;
        return Enumerable.Range(1, maxBlocks).Select(b => b * block).Concat([block * 64]);
    }

    [Theory]
    [MemberData(nameof(KernelTestData.WeightTypeData), MemberType = typeof(KernelTestData))]
    public void Simd_matches_scalar(GgmlType type)
    {
        delegate*<byte*, byte*, int, float> scalar = VecDot.For(type, SimdLevel.Scalar);
        int compared = 0;
        foreach (SimdLevel level in new[] { SimdLevel.Avx2, SimdLevel.Avx512 }.Where(VecDot.IsSupported))
        {
            delegate*<byte*, byte*, int, float> simd = VecDot.For(type, level);
            for (int seed = 0; seed < 4; seed++)
            {
                var rng = new Random(1000 * seed + (int)type);
                foreach (int n in Lengths(type))
                {
                    byte[] w = KernelTestData.RandomRows(type, 1, n, rng);
                    float[] xf = KernelTestData.RandomActivations(n, rng);
                    byte[] x = KernelTestData.Prepared(type, xf, n, 1);
                    float expected = Dot(scalar, w, x, n), actual = Dot(simd, w, x, n);
                    (_, double magnitude) = KernelTestData.Dot(KernelTestData.Dequantized(type, w, 1, n), KernelTestData.PreparedValues(type, x, n, 1));
                    double error = Math.Abs((double)actual - expected);
                    Assert.True(error <= SumOrderLimit * magnitude + 1e-30,
                        $"{type} {level} n={n} seed={seed}: scalar {expected}, simd {actual}, |diff| {error:g3} > {SumOrderLimit} x {magnitude:g3}");
                    compared++;
                }
            }
        }
        Assert.True(compared > 0 || VecDot.Best == SimdLevel.Scalar);
    }

    [Theory]
    [MemberData(nameof(KernelTestData.WeightTypeData), MemberType = typeof(KernelTestData))]
    public void Scalar_matches_product_of_dequantized_rows(GgmlType type)
    {
        delegate*<byte*, byte*, int, float> scalar = VecDot.For(type, SimdLevel.Scalar);
        double limit = DequantizedLimit(type);
        for (int seed = 0; seed < 4; seed++)
        {
            var rng = new Random(seed + 77);
            foreach (int n in Lengths(type).Where(n => n > 0).Take(16))
            {
                byte[] w = KernelTestData.RandomRows(type, 1, n, rng);
                float[] xf = KernelTestData.RandomActivations(n, rng);
                byte[] x = KernelTestData.Prepared(type, xf, n, 1);
                (double expected, double magnitude) = KernelTestData.ReferenceDot(type, w, KernelTestData.Dequantized(type, w, 1, n), x, KernelTestData.PreparedValues(type, x, n, 1));
                float actual = Dot(scalar, w, x, n);
                double error = Math.Abs(actual - expected);
                Assert.True(error <= limit * magnitude + 1e-30,
                    $"{type} n={n} seed={seed}: kernel {actual}, dequantized {expected}, |diff| {error:g3} > {limit} x {magnitude:g3}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(KernelTestData.WeightTypeData), MemberType = typeof(KernelTestData))]
    public void Four_token_kernels_equal_the_one_token_kernel_bit_for_bit(GgmlType type)
    {
        foreach (SimdLevel level in new[] { SimdLevel.Avx2, SimdLevel.Avx512 }.Where(VecDot.IsSupported))
        {
            bool repack = VecDot.RepacksToQ8_0(type, level);
            delegate*<byte*, byte*, long, int, float*, long, void> four = VecDot.For4(repack ? GgmlType.Q8_0 : type, level);
            if (four == null)
                continue;
            delegate*<byte*, byte*, int, float> one = VecDot.For(type, level);
            for (int seed = 0; seed < 3; seed++)
            {
                var rng = new Random(seed * 17 + (int)type);
                foreach (int n in Lengths(type).Where(n => n > 0).Where((n, i) => i < 12 || i % 7 == 0 || n > 256))
                {
                    byte[] w = KernelTestData.RandomRows(type, 1, n, rng);
                    float[] xf = KernelTestData.RandomActivations(4 * n, rng);
                    byte[] x = KernelTestData.Prepared(type, xf, n, 4);
                    long xStride = VecDot.ActivationRowBytes(type, n);
                    var y = new float[4 * 3];
                    var expected = new float[4];
                    fixed (byte* pw = w, px = x)
                    fixed (float* py = y)
                    {
                        byte* row = pw;
                        byte[] repacked = new byte[repack ? GgmlTypes.RowBytes(GgmlType.Q8_0, n) : 1];
                        fixed (byte* pr = repacked)
                        {
                            if (repack)
                            {
                                VecDot.RepackToQ8_0Avx2(type, pw, n, pr);
                                row = pr;
                            }
                            four(row, px, xStride, n, py + 1, 3);
                        }
                        for (int t = 0; t < 4; t++)
                            expected[t] = one(pw, px + t * xStride, n);
                    }
                    for (int t = 0; t < 4; t++)
                        Assert.True(BitConverter.SingleToUInt32Bits(expected[t]) == BitConverter.SingleToUInt32Bits(y[1 + 3 * t]),
                            $"{type} {level} n={n} token {t}: one-token {expected[t]}, four-token {y[1 + 3 * t]}");
                }
            }
        }
    }

    [Fact]
    public void Dispatch_picks_the_best_level_the_runtime_reports()
    {
        SimdLevel hardware = System.Runtime.Intrinsics.X86.Avx512F.IsSupported && System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported ? SimdLevel.Avx512
            : System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported ? SimdLevel.Avx2 : SimdLevel.Scalar;
        string? cap = Environment.GetEnvironmentVariable("SQUEEZE_SIMD");
        SimdLevel expected = string.IsNullOrEmpty(cap) ? hardware : (SimdLevel)Math.Min((int)hardware, (int)Enum.Parse<SimdLevel>(cap, ignoreCase: true));
        Assert.Equal(expected, VecDot.Best);
        foreach (GgmlType type in KernelTestData.WeightTypes)
        {
            if (VecDot.Best != SimdLevel.Avx512)
                Assert.Throws<PlatformNotSupportedException>(() => (nint)VecDot.For(type, SimdLevel.Avx512));
            else
                Assert.True(VecDot.For(type, SimdLevel.Avx512) != null);
        }
    }

    [Fact]
    public void Half_to_single_is_exact_for_every_bit_pattern()
    {
        for (int h = 0; h < 65536; h++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            float actual = Fp16.ToSingle((ushort)h);
            Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(actual) || (float.IsNaN(expected) && float.IsNaN(actual)),
                $"0x{h:x4}: {expected} vs {actual}");
        }
    }

    [Fact]
    public void Half_to_single_vector_matches_scalar_for_every_bit_pattern()
    {
        var lanes = new uint[16];
        for (int h = 0; h < 65536; h += 16)
        {
            for (int i = 0; i < 16; i++)
                lanes[i] = (uint)(h + i);
            var v256 = Fp16.ToSingle(System.Runtime.Intrinsics.Vector256.Create(lanes.AsSpan(0, 8)));
            var v512 = Fp16.ToSingle(System.Runtime.Intrinsics.Vector512.Create(lanes));
            for (int i = 0; i < 16; i++)
            {
                uint expected = BitConverter.SingleToUInt32Bits(Fp16.ToSingle((ushort)(h + i)));
                Assert.Equal(expected, BitConverter.SingleToUInt32Bits(v512[i]));
                if (i < 8)
                    Assert.Equal(expected, BitConverter.SingleToUInt32Bits(v256[i]));
            }
        }
    }

    [Fact]
    public void Activations_round_to_nearest_even_half_and_bfloat16()
    {
        float tieHalf = 1 + MathF.Pow(2, -11);                      // halfway between 1 and the next half
        Assert.Equal(1f, Fp16.RoundToHalf(tieHalf));
        Assert.Equal(1 + 2 * MathF.Pow(2, -10), Fp16.RoundToHalf(1 + 3 * MathF.Pow(2, -11)));
        Assert.Equal(1f, Fp16.RoundToBFloat16(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie → even 0x3F80
        Assert.Equal(BitConverter.UInt32BitsToSingle(0x3F820000), Fp16.RoundToBFloat16(BitConverter.UInt32BitsToSingle(0x3F818000)));
        Assert.True(float.IsNaN(Fp16.RoundToBFloat16(float.NaN)));
    }
}
