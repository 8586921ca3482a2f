using System.Runtime.Intrinsics;
using Squeeze.Kernels;
using Squeeze.Tensors;

namespace Squeeze.Tests.Kernels;

public unsafe class QuantizeActivationsTests
{
    private delegate void Quantizer(float* x, int n, byte* y);

    private static byte[] Run(Quantizer q, GgmlType type, float[] x)
    {
        var y = new byte[GgmlTypes.RowBytes(type, x.Length)];
        fixed (float* px = x)
        fixed (byte* py = y)
            q(px, x.Length, py);
        return y;
    }

    public static TheoryData<GgmlType> ActivationTypes() => new([GgmlType.Q8_0, GgmlType.Q8_1, GgmlType.Q8_K]);

    [Theory]
    [MemberData(nameof(ActivationTypes))]
    public void Vector256_equals_scalar_exactly(GgmlType type)
    {
        if (!Vector256.IsHardwareAccelerated)
            return; // nothing to compare: the dispatcher runs the scalar reference
        (Quantizer scalar, Quantizer vector) = type switch
        {
            GgmlType.Q8_0 => ((Quantizer)QuantizeActivations.Q8_0Scalar, (Quantizer)QuantizeActivations.Q8_0Vector256),
            GgmlType.Q8_1 => (QuantizeActivations.Q8_1Scalar, QuantizeActivations.Q8_1Vector256),
            _ => (QuantizeActivations.Q8_KScalar, QuantizeActivations.Q8_KVector256),
        };
        int block = GgmlTypes.BlockSize(type);
        for (int seed = 0; seed < 20; seed++)
        {
            var rng = new Random(seed);
            for (int blocks = 1; blocks <= 12; blocks++)
            {
                float[] x = KernelTestData.RandomActivations(blocks * block, rng);
                Assert.Equal(Run(scalar, type, x), Run(vector, type, x));
            }
        }
    }

    [Fact]
    public void Q8_0_rounds_half_to_even_with_scale_127_over_amax()
    {
        // amax = 127 makes 127 / amax = 1 exactly: q = round-half-even(x)
        float[] x = new float[32];
        float[] values = [127, 2.5f, 3.5f, -0.5f, -1.5f, 0.49f, -126.5f];
        values.CopyTo(x, 0);
        byte[] y = Run(QuantizeActivations.Q8_0Scalar, GgmlType.Q8_0, x);
        Assert.Equal(HalfConversions.F32ToF16(1f), BitConverter.ToUInt16(y, 0));
        Assert.Equal(new sbyte[] { 127, 2, 4, 0, -2, 0, -126 }, y.AsSpan(2, 7).ToArray().Select(b => (sbyte)b));
        Assert.Equal(y, Run(QuantizeActivations.Q8_0, GgmlType.Q8_0, x));
    }

    [Fact]
    public void Q8_1_stores_d_times_sum_of_quants()
    {
        var x = new float[32];
        for (int i = 0; i < 32; i++)
            x[i] = i - 5;
        byte[] y = Run(QuantizeActivations.Q8_1Scalar, GgmlType.Q8_1, x);
        int sum = y.AsSpan(4, 32).ToArray().Sum(b => (sbyte)b);
        float d = 26f / 127f;
        Assert.Equal(HalfConversions.F32ToF16(d), BitConverter.ToUInt16(y, 0));
        Assert.Equal(HalfConversions.F32ToF16(d * sum), BitConverter.ToUInt16(y, 2));
    }

    [Fact]
    public void Q8_K_takes_the_sign_of_the_first_largest_value_and_sums_each_16()
    {
        var x = new float[256];
        x[3] = -127; // first of largest magnitude: iscale = -127 / -127 = 1
        x[4] = 127;
        x[5] = 2.5f; // tie: nearest even
        x[20] = -3.5f;
        byte[] y = Run(QuantizeActivations.Q8_KScalar, GgmlType.Q8_K, x);
        Assert.Equal(1f, BitConverter.ToSingle(y, 0));
        Assert.Equal(-127, (sbyte)y[4 + 3]);
        Assert.Equal(127, (sbyte)y[4 + 4]);
        Assert.Equal(2, (sbyte)y[4 + 5]);
        Assert.Equal(-4, (sbyte)y[4 + 20]);
        Assert.Equal(2, BitConverter.ToInt16(y, 260));     // bsums[0] = -127 + 127 + 2
        Assert.Equal(-4, BitConverter.ToInt16(y, 262));    // bsums[1]
        Assert.Equal(y, Run(QuantizeActivations.Q8_K, GgmlType.Q8_K, x));
    }

    [Fact]
    public void Q8_K_of_negative_largest_value_stores_negative_d()
    {
        var x = new float[256];
        x[0] = 2;
        x[1] = -4; // max = -4: iscale = 127 / 4, d = 4 / 127 ... as 1 / iscale
        byte[] y = Run(QuantizeActivations.Q8_KScalar, GgmlType.Q8_K, x);
        Assert.Equal(1 / (-127f / -4f), BitConverter.ToSingle(y, 0));
        Assert.Equal(64, (sbyte)y[4]); // 2 · 31.75 = 63.5 → 64 (tie to even)
        Assert.Equal(-127, (sbyte)y[5]);
    }

    [Theory]
    [MemberData(nameof(ActivationTypes))]
    public void Dequantized_activations_are_within_half_a_step(GgmlType type)
    {
        // Q8_0 / Q8_1 quantize with the f32 scale and store it as f16, so the limit adds the f16 rounding of d (2^-11 relative)
        const double StepFraction = 0.5 + 127 * 0.0005;
        var rng = new Random(7);
        int block = GgmlTypes.BlockSize(type);
        float[] x = KernelTestData.RandomActivations(block * 16, rng);
        byte[] q = Run(type switch { GgmlType.Q8_0 => QuantizeActivations.Q8_0, GgmlType.Q8_1 => QuantizeActivations.Q8_1, _ => QuantizeActivations.Q8_K }, type, x);
        var back = new float[x.Length];
        Dequantize.Row(type, q, back);
        for (int b = 0; b < x.Length / block; b++)
        {
            double amax = x.Skip(b * block).Take(block).Max(v => Math.Abs((double)v));
            for (int i = b * block; i < (b + 1) * block; i++)
                Assert.True(Math.Abs(back[i] - x[i]) <= StepFraction * amax / 127 + 1e-30, $"{type} value {i}: {x[i]} came back as {back[i]}");
        }
    }
}
