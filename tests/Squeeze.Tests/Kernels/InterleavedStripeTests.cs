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

    [Theory]
    [MemberData(nameof(StripeTypes))]
    public void Prompt_products_equal_the_one_token_kernel_bit_for_bit_for_1_to_70_tokens(GgmlType type)
    {
        // on a machine without AVX-512 and AVX-VNNI MatMul takes the four-token kernels instead: the same must hold
        delegate*<byte*, byte*, int, float> one = VecDot.For(type, VecDot.Best);
        delegate*<byte*, byte*, int, float> scalar = VecDot.For(type, SimdLevel.Scalar);
        using var context = new ComputeContext(2);
        int compared = 0;
        foreach ((int rows, int columns) in new[] { (8, 32), (19, 64), (16, 224), (24, 256), (40, 288), (13, 320), (35, 768), (8, 1024) })
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
        var packed = new byte[VecDot.StripeBytes(columns)];
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
