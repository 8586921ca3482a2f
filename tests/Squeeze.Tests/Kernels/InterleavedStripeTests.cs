using System.Runtime.Intrinsics;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Tests.Kernels;

/// <summary>The interleaved-stripe prompt kernels (<see cref="VecDot.StripeProduct4"/>, <see cref="VecDot.StripeProduct1"/>
/// behind <see cref="MatMul"/>) against the one-token kernel, bit for bit, and against the scalar reference.</summary>
public unsafe class InterleavedStripeTests
{
    // The scalar reference sums the blocks in another order: relative to Σ |w·x| (as VecDotTests.SumOrderLimit)
    private const double SumOrderLimit = 2e-6;

    public static TheoryData<GgmlType> StripeTypes() => new(GgmlType.Q4_0, GgmlType.Q5_0, GgmlType.Q8_0, GgmlType.IQ4_NL);

    public static TheoryData<GgmlType> KStripeTypes() => new(GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K);

    // rows: whole stripes of 8 or 16, stripes and the rows left over, fewer rows than a stripe
    private static readonly (int Rows, int Columns)[] Shapes = [(8, 32), (19, 64), (16, 224), (24, 256), (40, 288), (13, 320), (35, 768), (8, 1024)];
    private static readonly (int Rows, int Columns)[] KShapes = [(16, 256), (19, 512), (8, 768), (35, 768), (48, 256), (17, 1280), (16, 2816)];

    [Theory]
    [MemberData(nameof(StripeTypes))]
    public void Prompt_products_equal_the_one_token_kernel_bit_for_bit_for_1_to_70_tokens(GgmlType type)
        => AssertPromptProductsEqualOneToken(type, Shapes);

    [Theory]
    [MemberData(nameof(KStripeTypes))]
    public void K_quant_prompt_products_equal_the_one_token_kernel_bit_for_bit_for_1_to_70_tokens(GgmlType type)
        => AssertPromptProductsEqualOneToken(type, KShapes);

    private static void AssertPromptProductsEqualOneToken(GgmlType type, (int Rows, int Columns)[] shapes)
    {
        // on a machine without AVX-512 and AVX-VNNI MatMul takes the four-token kernels instead: the same must hold
        delegate*<byte*, byte*, int, float> one = VecDot.For(type, VecDot.Best);
        delegate*<byte*, byte*, int, float> scalar = VecDot.For(type, SimdLevel.Scalar);
        using var context = new ComputeContext(2);
        int compared = 0;
        foreach ((int rows, int columns) in shapes)
        {
            for (int seed = 0; seed < 2; seed++)
            {
                var rng = new Random(seed * 1009 + columns * 17 + rows + (int)type * 7);
                byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
                float[] x = KernelTestData.RandomActivations(70 * columns, rng);
                byte[] xq = KernelTestData.Prepared(type, x, columns, 70);
                long rowBytes = GgmlTypes.RowBytes(type, columns), xRowBytes = VecDot.ActivationRowBytes(type, columns);
                float[] wf = KernelTestData.Dequantized(type, w, rows, columns), xf = KernelTestData.PreparedValues(type, xq, columns, 70);
                var expected = new float[70 * rows];
                var reference = new float[70 * rows];
                var magnitude = new double[70 * rows];
                fixed (byte* pw = w, px = xq)
                {
                    for (int t = 0; t < 70; t++)
                    {
                        for (int r = 0; r < rows; r++)
                        {
                            expected[t * rows + r] = one(pw + r * rowBytes, px + t * xRowBytes, columns);
                            reference[t * rows + r] = scalar(pw + r * rowBytes, px + t * xRowBytes, columns);
                            magnitude[t * rows + r] = KernelTestData.Dot(wf.AsSpan(r * columns, columns), xf.AsSpan(t * columns, columns)).Magnitude;
                        }
                    }
                }
                foreach (int tokens in Enumerable.Range(1, 70).Where(t => seed == 0 || t % 3 == 0))
                {
                    var y = new float[tokens * rows];
                    fixed (byte* pw = w)
                    fixed (float* px = x, py = y)
                        MatMul.Multiply(type, pw, px, rows, columns, tokens, rows, context, py);
                    for (int i = 0; i < y.Length; i++)
                    {
                        if (BitConverter.SingleToInt32Bits(y[i]) != BitConverter.SingleToInt32Bits(expected[i]))
                            Assert.Fail($"{type} {rows}x{columns} seed {seed} {tokens} tokens: y[{i / rows}, {i % rows}] = {y[i]}, one-token kernel {expected[i]}");
                        Assert.True(Math.Abs((double)y[i] - reference[i]) <= SumOrderLimit * magnitude[i] + 1e-30,
                            $"{type} {rows}x{columns}: y[{i / rows}, {i % rows}] = {y[i]}, scalar {reference[i]}");
                    }
                    compared += y.Length;
                }
            }
        }
        Assert.True(compared > 100_000, $"{compared} outputs compared");
    }

    [Fact]
    public void Sum_across_eight_512_bit_vectors_adds_in_the_order_of_Vector256_Sum()
    {
        var rng = new Random(5);
        var lanes = new Vector512<float>[8];
        for (int round = 0; round < 2000; round++)
        {
            var values = new float[16 * 8];
            for (int i = 0; i < values.Length; i++)
                values[i] = (float)(rng.NextDouble() * 2 - 1) * MathF.ScaleB(1, rng.Next(-24, 24));
            for (int j = 0; j < 8; j++)
                lanes[j] = Vector512.Create(Enumerable.Range(0, 16).Select(r => values[r * 8 + j]).ToArray());
            Vector512<float> across;
            fixed (Vector512<float>* p = lanes)
                across = VecDot.SumAcross(p);
            for (int r = 0; r < 16; r++)
                Assert.Equal(Vector256.Sum(Vector256.Create(values, r * 8)), across[r]);
        }
    }

    [Theory]
    [MemberData(nameof(KStripeTypes))]
    public void A_packed_k_quant_stripe_holds_each_row_value_with_its_scale_and_min(GgmlType type)
    {
        if (!VecDot.IsSupported(SimdLevel.Avx2))
            return; // the packing decodes blocks with AVX2
        const int columns = 768, nsb = columns / 256, rows = VecDot.KStripeRows;
        // the layout: values [i][super-block][v] (64 bytes, lane r = row r), then per super-block 26 vectors of
        // metadata: scales [v][half], pairs [8] (the mins for Q2_K, Q4_K, Q5_K), d, dmin
        const int laneBytes = 8 * 64, metaBytes = 26 * 64;
        var rng = new Random(9);
        byte[] w = KernelTestData.RandomRows(type, rows, columns, rng);
        float[] decoded = KernelTestData.Dequantized(type, w, rows, columns);
        var packed = new byte[VecDot.StripeBytes(type, columns)];
        Assert.Equal((long)nsb * (8 * laneBytes + metaBytes), packed.Length);
        fixed (byte* pw = w, pp = packed)
            VecDot.PackStripe(type, pw, GgmlTypes.RowBytes(type, columns), columns, pp);
        int offset = type switch { GgmlType.Q3_K => 4, GgmlType.Q6_K => 32, _ => 0 };
        for (int r = 0; r < rows; r++)
        {
            for (int sb = 0; sb < nsb; sb++)
            {
                int meta = nsb * 8 * laneBytes + sb * metaBytes;
                float d = BitConverter.ToSingle(packed, meta + 24 * 64 + 4 * r), dmin = BitConverter.ToSingle(packed, meta + 25 * 64 + 4 * r);
                for (int c = 0; c < 256; c++)
                {
                    int v = c / 32, i = c % 32 / 4, half = i / 4;
                    int u = packed[(i * nsb + sb) * laneBytes + 64 * v + 4 * r + c % 4];
                    short scale = BitConverter.ToInt16(packed, meta + (2 * v + half) * 64 + 4 * r);
                    Assert.Equal(scale, BitConverter.ToInt16(packed, meta + (2 * v + half) * 64 + 4 * r + 2));
                    short min = offset == 0 ? BitConverter.ToInt16(packed, meta + 16 * 64 + c / 32 * 64 + 4 * r + 2 * (c / 16 % 2)) : (short)0;
                    float expected = decoded[r * columns + sb * 256 + c];
                    float value = d * scale * (u - offset) - dmin * min;
                    Assert.True(Math.Abs(value - expected) <= 1e-6f * (Math.Abs(d * scale * u) + Math.Abs(dmin * min)) + 1e-30f,
                        $"{type} row {r} value {sb * 256 + c}: stripe gives {value}, dequantized {expected}");
                }
            }
        }
    }

    [Fact]
    public void Sum_across_eight_vectors_adds_in_the_order_of_Vector256_Sum()
    {
        var rng = new Random(4);
        var lanes = new Vector256<float>[8];
        for (int round = 0; round < 2000; round++)
        {
            var values = new float[8 * 8];
            for (int i = 0; i < values.Length; i++)
                values[i] = (float)(rng.NextDouble() * 2 - 1) * MathF.ScaleB(1, rng.Next(-24, 24)); // sums that depend on the order
            for (int j = 0; j < 8; j++)
                lanes[j] = Vector256.Create(Enumerable.Range(0, 8).Select(r => values[r * 8 + j]).ToArray());
            Vector256<float> across;
            fixed (Vector256<float>* p = lanes)
                across = VecDot.SumAcross(p);
            for (int r = 0; r < 8; r++)
                Assert.Equal(Vector256.Sum(Vector256.Create(values, r * 8)), across[r]);
        }
    }

    [Theory]
    [MemberData(nameof(StripeTypes))]
    public void A_packed_stripe_holds_each_row_value_plus_128_and_the_scales(GgmlType type)
    {
        if (!VecDot.IsSupported(SimdLevel.Avx2))
            return; // the packing decodes blocks with AVX2
        const int columns = 96;
        var rng = new Random(8);
        byte[] w = KernelTestData.RandomRows(type, VecDot.StripeRows, columns, rng);
        float[] decoded = KernelTestData.Dequantized(type, w, VecDot.StripeRows, columns);
        var packed = new byte[VecDot.StripeBytes(type, columns)];
        fixed (byte* pw = w, pp = packed)
            VecDot.PackStripe(type, pw, GgmlTypes.RowBytes(type, columns), columns, pp);
        for (int r = 0; r < VecDot.StripeRows; r++)
        {
            for (int b = 0; b < columns / 32; b++)
            {
                float d = BitConverter.ToSingle(packed, b * VecDot.StripeBlockBytes + 256 + 4 * r);
                for (int j = 0; j < 32; j++)
                {
                    int q = packed[b * VecDot.StripeBlockBytes + (j / 4) * 32 + r * 4 + j % 4] - 128;
                    Assert.Equal(decoded[r * columns + b * 32 + j], d * q);
                }
            }
        }
    }
}
