using Squeeze.Kernels;

namespace Squeeze.Tests.Kernels;

/// <summary>The deterministic mode's functions: close to the C runtime's, and the vector versions equal to the scalar
/// ones bit for bit at every length (the property that makes .sqz files decodable at any SIMD level).</summary>
public unsafe class DeterministicMathTests
{
    private static float[] Random(int length, Random rng, float magnitude)
    {
        var values = new float[length];
        for (int i = 0; i < length; i++)
            values[i] = (float)(rng.NextDouble() * 2 - 1) * magnitude;
        return values;
    }

    [Fact]
    public void Exp_is_within_a_few_ulp_of_the_runtime()
    {
        for (float x = -87f; x <= 88f; x += 0.0137f)
        {
            double expected = Math.Exp(x);
            float actual = DeterministicMath.Exp(x);
            Assert.True(Math.Abs(actual - expected) <= 4e-7 * expected, $"exp({x}) = {actual}, expected {expected}");
        }
        Assert.Equal(1f, DeterministicMath.Exp(0f));
    }

    [Fact]
    public void Vector_and_scalar_versions_give_the_same_bits()
    {
        var rng = new Random(42);
        for (int n = 0; n <= 300; n++)
        {
            float[] x = Random(n, rng, 30), y = Random(n, rng, 3);
            var scalar = new float[n];
            var vector = new float[n];
            DeterministicMath.ExpShifted(x, 2.5f, scalar, vector: false);
            DeterministicMath.ExpShifted(x, 2.5f, vector, vector: true);
            Assert.Equal(scalar, vector);
            DeterministicMath.Sigmoid(x, scalar, vector: false);
            DeterministicMath.Sigmoid(x, vector, vector: true);
            Assert.Equal(scalar, vector);
            fixed (float* px = x, py = y)
            {
                Assert.Equal(DeterministicMath.SumScalar(px, n), DeterministicMath.SumVector(px, n));
                Assert.Equal(DeterministicMath.DotScalar(px, py, n), DeterministicMath.DotVector(px, py, n));
                if (DeterministicMath.UseVector512)
                    Assert.Equal(DeterministicMath.DotScalar(px, py, n), DeterministicMath.DotVector512(px, py, n));
                double reference = 0;
                for (int i = 0; i < n; i++)
                    reference += (double)x[i] * y[i];
                Assert.True(Math.Abs(DeterministicMath.DotScalar(px, py, n) - reference) <= 1e-5 * (1 + n), $"n = {n}");
            }
        }
    }

    [Fact]
    public void Four_and_eight_token_dots_equal_single_dots()
    {
        var rng = new Random(7);
        foreach (int n in new[] { 1, 7, 8, 9, 31, 48, 288, 289, 768 })
        {
            float[] w = Random(n, rng, 1), x = Random(4 * n + 3, rng, 1);
            var y = new float[4 * 5];
            fixed (float* pw = w, px = x, py = y)
            {
                DeterministicMath.Dot4Vector(pw, px, n + 1, n, py, 5);
                for (int t = 0; t < 4; t++)
                    Assert.Equal(DeterministicMath.DotScalar(pw, px + t * (n + 1), n), y[t * 5]);
                if (!DeterministicMath.UseVector512)
                    continue;
                Array.Clear(y);
                DeterministicMath.Dot4Vector512(pw, px, n + 1, n, py, 5);
                for (int t = 0; t < 4; t++)
                    Assert.Equal(DeterministicMath.DotScalar(pw, px + t * (n + 1), n), y[t * 5]);
                float[] x8 = Random(8 * n + 7, rng, 1);
                var y8 = new float[8 * 5];
                fixed (float* px8 = x8, py8 = y8)
                {
                    DeterministicMath.Dot8Vector512(pw, px8, n + 1, n, py8, 5);
                    for (int t = 0; t < 8; t++)
                        Assert.Equal(DeterministicMath.DotScalar(pw, px8 + t * (n + 1), n), y8[t * 5]);
                }
            }
        }
    }

    [Fact]
    public void Rope_functions_match_the_runtime()
    {
        for (double angle = 0; angle < 4096; angle += 0.731)
        {
            var (cos, sin) = DeterministicMath.CosSin(angle);
            Assert.Equal((float)Math.Cos(angle), (float)cos, 6);
            Assert.Equal((float)Math.Sin(angle), (float)sin, 6);
        }
        foreach (double x in new[] { 1e-300, 0.3, 1, 2, 10000, 500000, 1e300 })
            Assert.Equal(Math.Log(x), DeterministicMath.Log(x), Math.Abs(Math.Log(x)) * 1e-14 + 1e-15);
        for (int i = 0; i < 64; i++)
        {
            double expected = Math.Pow(10000, -2.0 * i / 128);
            Assert.True(Math.Abs(DeterministicMath.Pow(10000, -2.0 * i / 128) - expected) <= 1e-14 * expected);
        }
    }
}

/// <summary>The deterministic attention head against its definition written out with the scalar functions.</summary>
public unsafe class DeterministicAttentionTests
{
    [Theory]
    [InlineData(8, 1)]
    [InlineData(8, 37)]
    [InlineData(48, 100)]
    [InlineData(64, 3)]
    [InlineData(80, 256)]
    [InlineData(12, 20)]
    [InlineData(112, 33)]
    [InlineData(128, 9)]
    public void Head_equals_its_scalar_definition(int headDim, int positions)
    {
        var rng = new Random(headDim * 1000 + positions);
        int stride = headDim + 5;
        float[] query = [.. Enumerable.Range(0, headDim).Select(_ => (float)rng.NextDouble() * 2 - 1)];
        float[] keys = [.. Enumerable.Range(0, positions * stride).Select(_ => (float)rng.NextDouble() * 2 - 1)];
        float[] values = [.. Enumerable.Range(0, positions * stride).Select(_ => (float)rng.NextDouble() * 2 - 1)];
        float scale = 1f / MathF.Sqrt(headDim);
        var scores = new float[positions];
        var output = new float[headDim];
        var expected = new float[headDim];
        fixed (float* q = query, k = keys, v = values, s = scores, o = output)
        {
            Attention.HeadDeterministic(q, k, v, stride, positions, headDim, scale, s, o);
            float max = float.NegativeInfinity;
            for (int p = 0; p < positions; p++)
            {
                s[p] = DeterministicMath.DotScalar(q, k + p * stride, headDim) * scale;
                max = MathF.Max(max, s[p]);
            }
            DeterministicMath.ExpShifted(scores, max, scores, vector: false);
            float total = DeterministicMath.SumScalar(s, positions);
            for (int p = 0; p < positions; p++)
                s[p] /= total;
            for (int d = 0; d < headDim; d++)
            {
                float sum = 0;
                for (int p = 0; p < positions; p++)
                    sum += s[p] * v[p * stride + d];
                expected[d] = sum;
            }
        }
        Assert.Equal(expected, output);
    }
}
