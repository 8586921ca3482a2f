using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Tests.Weights;
using Squeeze.Weights;

namespace Squeeze.Tests.Quantization;

public class RotatedQuantizerTests
{
    /// <summary>H = XᵀX / n of <paramref name="tokens"/> random inputs with a few loud channels.</summary>
    private static double[] Hessian(int columns, int tokens, int seed)
    {
        var x = WeightTestData.Gaussian(tokens, columns, seed, scale: 1, outlierColumns: 4);
        var h = new double[columns * columns];
        for (int t = 0; t < tokens; t++)
        {
            for (int i = 0; i < columns; i++)
            {
                for (int j = 0; j < columns; j++)
                    h[i * columns + j] += (double)x[t * columns + i] * x[t * columns + j] / tokens;
            }
        }
        return h;
    }

    [Fact]
    public void Rotated_hessian_is_F_H_F_transposed()
    {
        int n = 48;
        var h = Hessian(n, 100, 1);
        var rotation = new RandomizedHadamard(n, 5, true);
        var rotated = RotatedQuantizer.RotateHessian(h, rotation);
        // Columns of F: F · e_k.
        var f = new double[n * n];
        var unit = new double[n];
        var column = new double[n];
        for (int k = 0; k < n; k++)
        {
            Array.Clear(unit);
            unit[k] = 1;
            rotation.Forward<double>(unit, column);
            for (int i = 0; i < n; i++)
                f[i * n + k] = column[i];
        }
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double expected = 0;
                for (int a = 0; a < n; a++)
                {
                    for (int b = 0; b < n; b++)
                        expected += f[i * n + a] * h[a * n + b] * f[j * n + b];
                }
                Assert.Equal(expected, rotated[i * n + j], 1e-9);
            }
        }
    }

    [Theory]
    [InlineData(3, false)]
    [InlineData(4, true)]
    public void Gptq_on_the_uniform_grid_packs_exactly_what_it_computed_and_beats_rounding(int bits, bool symmetric)
    {
        int rows = 16, columns = 96;
        var w = WeightTestData.Gaussian(rows, columns, bits);
        var h = Hessian(columns, 400, 2);
        var scheme = new UniformScheme(bits, 32, symmetric);
        var grid = new UniformSchemeGrid(scheme);
        var result = Gptq.Quantize(w, rows, columns, h, grid, new GptqOptions { Threads = 1 });
        var weight = grid.ToWeight("w", result.Data, rows, columns);
        Assert.Equal(result.Dequantized, weight.Decode());

        var rounded = RotatedQuantizer.QuantizeUniform("w", w, rows, columns, scheme, []).Decode();
        var gptq = RotatedQuantizer.QuantizeUniform("w", w, rows, columns, scheme, h, new GptqOptions { Threads = 1 }).Decode();
        Assert.True(Gptq.OutputError(w, gptq, rows, columns, h) < Gptq.OutputError(w, rounded, rows, columns, h));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Rotation_lowers_the_rounding_error_of_weights_with_outlier_columns(int bits)
    {
        int rows = 32, columns = 256;
        var w = WeightTestData.Gaussian(rows, columns, 11, outlierColumns: 6);
        var scheme = new UniformScheme(bits, 32, false);
        var plain = RotatedQuantizer.QuantizeUniform("w", w, rows, columns, scheme, []).Decode();
        var rotated = RotatedQuantizer.Quantize("w", w, rows, scheme, new RandomizedHadamard(columns, 1, false), []).Decode();
        double Error(float[] q) => w.Select((v, i) => (double)(v - q[i]) * (v - q[i])).Sum();
        Assert.True(Error(rotated) < 0.8 * Error(plain), $"rotated {Error(rotated)} vs plain {Error(plain)}");
    }
}
