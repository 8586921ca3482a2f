using Squeeze.Kernels;

namespace Squeeze.Tests.Kernels;

public unsafe class AttentionTests
{
    private delegate void HeadKernel(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output);

    // The vector version sums each score in TensorPrimitives.Dot's order and its softmax (TensorPrimitives') differs
    // from the reference's in the last bits: relative error against the reference stays near float rounding.
    private const float Tolerance = 2e-5f;

    private static float[] Run(HeadKernel kernel, float[] query, float[] keys, float[] values, int stride, int positions, int headDim, float scale)
    {
        var scores = new float[positions + 1];
        var output = new float[headDim + 1];
        output[headDim] = 12345; // must stay untouched
        fixed (float* q = query, k = keys, v = values, s = scores, o = output)
            kernel(q, k, v, stride, positions, headDim, scale, s, o);
        Assert.Equal(12345, output[headDim]);
        return output[..headDim];
    }

    private static float[] Random(int length, Random rng, float magnitude)
    {
        var values = new float[length];
        for (int i = 0; i < length; i++)
            values[i] = (float)(rng.NextDouble() * 2 - 1) * magnitude;
        return values;
    }

    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(24)]
    [InlineData(48)]
    [InlineData(64)]
    [InlineData(80)]
    [InlineData(128)]
    public void Avx2_matches_scalar_reference(int headDim)
    {
        if (!VecDot.IsSupported(SimdLevel.Avx2))
            return; // nothing to compare: the dispatcher runs the scalar reference
        for (int seed = 0; seed < 6; seed++)
        {
            var rng = new Random(seed);
            foreach (int positions in new[] { 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 257 })
            {
                int stride = headDim * 3 + 8; // the head sits inside a wider kv row
                float[] query = Random(headDim, rng, 2), keys = Random(positions * stride, rng, 2), values = Random(positions * stride, rng, 1);
                float scale = 1 / MathF.Sqrt(headDim);
                float[] expected = Run(Attention.HeadScalar, query, keys, values, stride, positions, headDim, scale);
                float[] actual = Run(Attention.HeadAvx2, query, keys, values, stride, positions, headDim, scale);
                for (int d = 0; d < headDim; d++)
                    Assert.True(MathF.Abs(expected[d] - actual[d]) <= Tolerance * (1 + MathF.Abs(expected[d])),
                        $"headDim {headDim}, positions {positions}, seed {seed}, d {d}: scalar {expected[d]}, AVX2 {actual[d]}");
            }
        }
    }

    [Theory]
    [InlineData(8)]
    [InlineData(48)]
    public void Scores_far_beyond_exp_range_stay_finite_and_match_the_reference(int headDim)
    {
        // Scores in the thousands (exp overflows above ~88): the softmax must shift by the maximum.
        var rng = new Random(headDim + 1);
        int positions = 37, stride = headDim;
        float[] query = Random(headDim, rng, 40), keys = Random(positions * stride, rng, 40), values = Random(positions * stride, rng, 1);
        float[] expected = Run(Attention.HeadScalar, query, keys, values, stride, positions, headDim, 1);
        Assert.All(expected, v => Assert.True(float.IsFinite(v)));
        if (!VecDot.IsSupported(SimdLevel.Avx2))
            return;
        float[] actual = Run(Attention.HeadAvx2, query, keys, values, stride, positions, headDim, 1);
        for (int d = 0; d < headDim; d++)
            Assert.True(MathF.Abs(expected[d] - actual[d]) <= Tolerance * (1 + MathF.Abs(expected[d])), $"d {d}: scalar {expected[d]}, AVX2 {actual[d]}");
    }

    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(40)]
    [InlineData(48)]
    [InlineData(64)]
    [InlineData(80)]
    [InlineData(96)]
    [InlineData(112)]
    [InlineData(128)]
    [InlineData(144)]
    public void Avx2_is_bit_for_bit_one_tensor_primitives_call_per_position(int headDim)
    {
        // what the forward pass computed before this kernel: quantized models keep their perplexity to the last digit
        // (head sizes of 16 to 128 in steps of 16 take the inline scores on a machine with Vector512)
        if (!VecDot.IsSupported(SimdLevel.Avx2))
            return;
        var rng = new Random(headDim);
        foreach ((int positions, float magnitude) in new[] { (1, 2f), (2, 2f), (5, 2f), (33, 2f), (256, 2f), (300, 1e-3f), (300, 30f) })
        {
            int stride = headDim * 6;
            float[] query = Random(headDim, rng, magnitude), keys = Random(positions * stride, rng, 2), values = Random(positions * stride, rng, 1);
            for (int i = 0; i < keys.Length; i += 7)
                keys[i] *= MathF.ScaleB(1, rng.Next(-12, 12)); // scores whose sum depends on the order of its terms
            float scale = 1 / MathF.Sqrt(headDim);
            var scores = new float[positions];
            for (int p = 0; p < positions; p++)
                scores[p] = System.Numerics.Tensors.TensorPrimitives.Dot(query, keys.AsSpan(p * stride, headDim)) * scale;
            System.Numerics.Tensors.TensorPrimitives.Subtract(scores, System.Numerics.Tensors.TensorPrimitives.Max(scores), scores);
            System.Numerics.Tensors.TensorPrimitives.SoftMax(scores, scores);
            var expected = new float[headDim];
            for (int p = 0; p < positions; p++)
                System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(values.AsSpan(p * stride, headDim), scores[p], expected, expected);
            Assert.Equal(expected, Run(Attention.HeadAvx2, query, keys, values, stride, positions, headDim, scale));
        }
    }

    [Fact]
    public void Scalar_reference_is_softmax_weighted_average()
    {
        // two positions, head size 2: scores 0 and ln 3 (scale 1) give weights 1/4 and 3/4
        float[] query = [1, 0], keys = [0, 5, MathF.Log(3), 7], values = [4, 8, 0, 4];
        float[] output = Run(Attention.HeadScalar, query, keys, values, stride: 2, positions: 2, headDim: 2, scale: 1);
        Assert.Equal(1, output[0], 5);
        Assert.Equal(5, output[1], 5);
    }

    [Fact]
    public void Dispatcher_handles_head_sizes_that_are_not_a_multiple_of_8()
    {
        var rng = new Random(7);
        const int headDim = 12, positions = 9;
        float[] query = Random(headDim, rng, 1), keys = Random(positions * headDim, rng, 1), values = Random(positions * headDim, rng, 1);
        Assert.Equal(Run(Attention.HeadScalar, query, keys, values, headDim, positions, headDim, 0.5f),
            Run(Attention.Head, query, keys, values, headDim, positions, headDim, 0.5f));
    }
}
