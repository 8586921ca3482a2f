using Squeeze.Calibration;
using Squeeze.Compression.Representations;
using Squeeze.Compression;
using Squeeze.Quantization;
using Squeeze.Weights;

namespace Squeeze.Tests.Quantization;

public sealed class VectorQuantizerTests
{
    private static float[] Diagonal(double[] h, int n) => [.. Enumerable.Range(0, n).Select(i => (float)h[i * n + i])];

    [Theory]
    [InlineData(4, 6, false)]
    [InlineData(4, 6, true)]
    [InlineData(8, 6, false)]
    [InlineData(2, 4, true)]
    public void Second_order_assignment_beats_the_nearest_centroid_on_a_correlated_layer(int dimension, int bits, bool scaled)
    {
        var (w, h) = GptqTests.Layer(seed: dimension + bits, rows: 64, columns: 96, tokens: 384);
        var hessian = GptqHessian.Prepare(h, 96, 0.01, activationOrder: false, threads: 1);
        var importance = Diagonal(h, 96);
        var options = new VectorQuantizerOptions { Dimension = dimension, IndexBits = bits, RowScales = scaled };
        var nearest = VectorQuantizer.Quantize("w", w, 64, 96, importance, hessian: null, options);
        var gptq = VectorQuantizer.Quantize("w", w, 64, 96, importance, hessian, options);
        Assert.Equal(nearest.Scheme, gptq.Scheme);
        Assert.Equal(nearest.StoredBytes, gptq.StoredBytes);
        double plain = Gptq.OutputError(w, nearest.Decode(), 64, 96, h);
        double second = Gptq.OutputError(w, gptq.Decode(), 64, 96, h);
        Assert.True(second < 0.95 * plain, $"H-weighted error {second} with error feedback, {plain} nearest");
    }

    [Fact]
    public void Nearest_centroid_clustering_beats_a_random_codebook()
    {
        var (w, _) = GptqTests.Layer(seed: 3, rows: 48, columns: 64, tokens: 8);
        var fitted = VectorQuantizer.Quantize("w", w, 48, 64, default, null, new VectorQuantizerOptions { Dimension = 4, IndexBits = 6, MaxIterations = 20, Refit = false });
        var started = VectorQuantizer.Quantize("w", w, 48, 64, default, null, new VectorQuantizerOptions { Dimension = 4, IndexBits = 6, MaxIterations = 0, Refit = false });
        double Error(LinearWeight q) => q.Decode().Select((v, i) => ((double)v - w[i]) * ((double)v - w[i])).Sum();
        Assert.True(Error(fitted) < 0.8 * Error(started), $"k-means {Error(fitted)}, sampled start {Error(started)}");
        // Without a Hessian every vector takes its nearest centroid.
        for (int r = 0; r < 48; r++)
        {
            for (int v = 0; v < 16; v++)
            {
                double Distance(int k) => Enumerable.Range(0, 4).Sum(j => Math.Pow(w[r * 64 + v * 4 + j] - (double)Squeeze.Tensors.HalfConversions.F16ToF32(fitted.Codebook[k * 4 + j]), 2));
                int chosen = fitted.Indices[r * 16 + v];
                Assert.True(Distance(chosen) <= Enumerable.Range(0, 64).Min(Distance) + 1e-6, $"vector ({r}, {v})");
            }
        }
    }

    [Fact]
    public void Results_are_deterministic_for_a_seed_and_independent_of_the_thread_count()
    {
        var (w, h) = GptqTests.Layer(seed: 11, rows: 40, columns: 64, tokens: 256);
        var hessian = GptqHessian.Prepare(h, 64, 0.01, activationOrder: false, threads: 1);
        var options = new VectorQuantizerOptions { Dimension = 4, IndexBits = 7, RowScales = true, Seed = 5 };
        var one = VectorQuantizer.Quantize("w", w, 40, 64, default, hessian, options with { Threads = 1 });
        var three = VectorQuantizer.Quantize("w", w, 40, 64, default, hessian, options with { Threads = 3 });
        var again = VectorQuantizer.Quantize("w", w, 40, 64, default, hessian, options with { Threads = 1 });
        var other = VectorQuantizer.Quantize("w", w, 40, 64, default, hessian, options with { Seed = 6 });
        Assert.Equal(one.Codebook.ToArray(), three.Codebook.ToArray());
        Assert.Equal(one.Indices.ToArray(), three.Indices.ToArray());
        Assert.Equal(one.Scales.ToArray(), three.Scales.ToArray());
        Assert.Equal(one.Decode(), again.Decode());
        Assert.NotEqual(one.Codebook.ToArray(), other.Codebook.ToArray());
    }

    [Fact]
    public unsafe void Nearest_agrees_with_a_scalar_search_at_every_count()
    {
        var rng = new Random(2);
        foreach (int d in (int[])[1, 3, 8])
        {
            foreach (int count in (int[])[1, 7, 8, 9, 64, 250])
            {
                for (int trial = 0; trial < 20; trial++)
                {
                    var m = Enumerable.Range(0, d).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                    var norms = Enumerable.Range(0, count).Select(_ => (float)rng.NextDouble()).ToArray();
                    var table = Enumerable.Range(0, d * count).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                    if (trial % 5 == 0 && count > 9)
                        norms[count - 1] = norms[3] = -10; // a tie: the lower index wins (same column values)
                    if (trial % 5 == 0 && count > 9)
                    {
                        for (int j = 0; j < d; j++)
                            table[j * count + count - 1] = table[j * count + 3];
                    }
                    int expected = 0;
                    float best = float.PositiveInfinity;
                    for (int k = 0; k < count; k++)
                    {
                        float score = norms[k];
                        for (int j = 0; j < d; j++)
                            score = MathF.FusedMultiplyAdd(m[j], table[j * count + k], score);
                        if (score < best)
                        {
                            best = score;
                            expected = k;
                        }
                    }
                    fixed (float* pm = m)
                    fixed (float* pn = norms)
                    fixed (float* pt = table)
                        Assert.Equal(expected, VectorQuantizer.Nearest(pm, d, pn, pt, count));
                }
            }
        }
    }

    [Fact]
    public void Vector_levels_parse_and_print_back()
    {
        Assert.Equal(new VectorRepresentation(8, 12, 0, false), NativeRepresentation.Parse("vq:8:12"));
        Assert.Equal(new VectorRepresentation(4, 8, 0, true), NativeRepresentation.Parse("VQ:4:8:scaled"));
        Assert.Equal(new VectorRepresentation(8, 12, 6, true), NativeRepresentation.Parse("rvq:8:12:6:scaled"));
        Assert.Equal("rvq:6:10:4", NativeRepresentation.Parse("rvq:6:10:4").Spec);
        Assert.Throws<FormatException>(() => NativeRepresentation.Parse("rvq:6:10"));
        Assert.Equal("vq:6:10:scaled", NativeRepresentation.Parse("vq:6:10:scaled").Spec);
        Assert.True(new VectorRepresentation(6, 10, 0, false).Fits(768, 288));
        Assert.False(new VectorRepresentation(5, 10, 0, false).Fits(768, 288));
        Assert.True(new VectorRepresentation(6, 12, 0, false).Fits(32000, 288));
        Assert.False(new VectorRepresentation(6, 12, 0, false).Fits(768, 288)); // 36,864 vectors: under 16 per centroid
        Assert.False(new VectorRepresentation(4, 8, 12, false).Fits(768, 288));
        Assert.Throws<FormatException>(() => NativeRepresentation.Parse("vq:4:17"));
        Assert.Throws<FormatException>(() => NativeRepresentation.Parse("vq:0:8"));
        Assert.Throws<FormatException>(() => NativeRepresentation.Parse("vq:4:8:rows"));
        Assert.Throws<FormatException>(() => NativeRepresentation.Parse("vq:4"));
    }
}
