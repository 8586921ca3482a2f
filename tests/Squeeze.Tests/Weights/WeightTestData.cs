using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

/// <summary>Random weights with LLM-like statistics and the dense reference product.</summary>
internal static unsafe class WeightTestData
{
    /// <summary>[rows, columns] Gaussian values of standard deviation <paramref name="scale"/>, with a few columns
    /// (outlier input features) 20 times larger.</summary>
    public static float[] Gaussian(int rows, int columns, int seed, float scale = 0.05f, int outlierColumns = 0)
    {
        var rng = new Random(seed);
        var values = new float[rows * columns];
        var outliers = Enumerable.Range(0, outlierColumns).Select(_ => rng.Next(columns)).ToHashSet();
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
                double g = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
                values[r * columns + c] = (float)(g * scale * (outliers.Contains(c) ? 20 : 1));
            }
        }
        return values;
    }

    /// <summary>An F32 <see cref="BlockWeight"/> holding <paramref name="values"/> ([rows, columns]).</summary>
    public static BlockWeight F32(string name, float[] values, int rows, int columns)
    {
        var buffer = NativeBuffer.Allocate(4L * values.Length);
        values.AsSpan().CopyTo(new Span<float>(buffer.Pointer, values.Length));
        return new BlockWeight(new Tensor(name, GgmlType.F32, [rows, columns], buffer, 0));
    }

    /// <summary>A BF16 <see cref="BlockWeight"/> holding <paramref name="values"/> rounded to BF16.</summary>
    public static BlockWeight Bf16(string name, float[] values, int rows, int columns)
    {
        var buffer = NativeBuffer.Allocate(2L * values.Length);
        var bits = new Span<ushort>(buffer.Pointer, values.Length);
        for (int i = 0; i < values.Length; i++)
            bits[i] = HalfConversions.F32ToBf16(values[i]);
        return new BlockWeight(new Tensor(name, GgmlType.BF16, [rows, columns], buffer, 0));
    }

    /// <summary>Multiplies <paramref name="x"/> ([tokens, Columns]) with 1, 2 and 3 threads and asserts every output
    /// within 1e-5 of its binary64 reference's magnitude (+ 1e-7) and the same bits at every thread count;
    /// <paramref name="label"/> names the case in a failure. With <paramref name="quantizedActivations"/> (a product that
    /// rounds the activations to 8 bits per block of 32, as the fused uniform product does) each output may also be off
    /// by what that rounding can move it: Σ_c |w[r, c]| · (the block's max |x| / 254), plus 1 % for the f16 block scales.</summary>
    public static void AssertProductMatchesTheReference(LinearWeight weight, float[] x, int tokens, string label, bool quantizedActivations = false)
    {
        int rows = weight.Rows, columns = weight.Columns;
        var decoded = weight.Decode();
        var (expected, magnitude) = ReferenceProduct(decoded, rows, columns, x, tokens);
        var rounding = new double[tokens * rows];
        for (int t = 0; quantizedActivations && t < tokens; t++)
        {
            for (int r = 0; r < rows; r++)
            {
                for (int c = 0; c < columns; c++)
                {
                    float blockMax = 0;
                    for (int k = c / 32 * 32; k < Math.Min(columns, c / 32 * 32 + 32); k++)
                        blockMax = Math.Max(blockMax, Math.Abs(x[t * columns + k]));
                    rounding[t * rows + r] += Math.Abs(decoded[r * columns + c]) * blockMax / 254 * 1.01;
                }
            }
        }
        float[]? first = null;
        foreach (int threads in (int[])[1, 2, 3])
        {
            using var context = new ComputeContext(threads);
            var y = new float[tokens * rows];
            weight.Multiply(x, tokens, context, y);
            for (int i = 0; i < y.Length; i++)
            {
                Assert.True(Math.Abs(y[i] - expected[i]) <= 1e-5 * magnitude[i] + 1e-7 + rounding[i],
                    $"{label} tokens {tokens}: y[{i / rows}, {i % rows}] = {y[i]}, reference {expected[i]}");
            }
            if (first is null)
                first = y;
            else
                Assert.Equal(first, y);
        }
    }

    /// <summary>y[t, r] = Σ_c W[r, c] · x[t, c] in binary64 from <see cref="LinearWeight.DecodeRow"/>.</summary>
    public static double[] ReferenceProduct(LinearWeight weight, float[] x, int tokens)
        => ReferenceProduct(weight.Decode(), weight.Rows, weight.Columns, x, tokens).Y;

    /// <summary>y[t, r] = Σ_c w[r, c] · x[t, c] in binary64 over decoded values <paramref name="w"/> ([rows, columns]),
    /// and Σ_c |w[r, c] · x[t, c]| (the scale of the rounding error an f32 product may make).</summary>
    public static (double[] Y, double[] Magnitude) ReferenceProduct(float[] w, int rows, int columns, float[] x, int tokens)
    {
        var y = new double[tokens * rows];
        var magnitude = new double[tokens * rows];
        for (int r = 0; r < rows; r++)
        {
            for (int t = 0; t < tokens; t++)
            {
                double sum = 0, size = 0;
                for (int c = 0; c < columns; c++)
                {
                    double product = (double)w[r * columns + c] * x[t * columns + c];
                    sum += product;
                    size += Math.Abs(product);
                }
                y[t * rows + r] = sum;
                magnitude[t * rows + r] = size;
            }
        }
        return (y, magnitude);
    }
}
