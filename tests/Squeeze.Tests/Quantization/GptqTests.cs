using Squeeze.Calibration;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Xunit.Abstractions;

namespace Squeeze.Tests.Quantization;

public sealed class GptqTests(ITestOutputHelper output)
{
    private const int Rows = 64, Columns = 256, Tokens = 512;

    internal static double Gaussian(Random random) => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    /// <summary>A seeded layer W [rows, columns] and H = XᵀX / n for correlated inputs X = Z·A (Z Gaussian, A random), so H is far from diagonal.</summary>
    internal static (float[] W, double[] H) Layer(int seed, int rows = Rows, int columns = Columns, int tokens = Tokens, int[]? deadColumns = null)
    {
        var random = new Random(seed);
        var w = new float[rows * columns];
        for (int i = 0; i < w.Length; i++)
            w[i] = (float)(0.05 * Gaussian(random));
        var a = new double[columns * columns];
        for (int i = 0; i < a.Length; i++)
            a[i] = Gaussian(random) / Math.Sqrt(columns);
        for (int i = 0; i < columns; i++)
            a[i * columns + i] += 0.5;
        var x = new double[tokens * columns];
        var z = new double[columns];
        for (int t = 0; t < tokens; t++)
        {
            for (int k = 0; k < columns; k++)
                z[k] = Gaussian(random);
            for (int k = 0; k < columns; k++)
            {
                double zk = z[k];
                for (int j = 0; j < columns; j++)
                    x[t * columns + j] += zk * a[k * columns + j];
            }
            if (deadColumns is not null)
            {
                foreach (int d in deadColumns)
                    x[t * columns + d] = 0;
            }
        }
        var h = new double[columns * columns];
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < columns; i++)
            {
                double xi = x[t * columns + i];
                for (int j = 0; j < columns; j++)
                    h[i * columns + j] += xi * x[t * columns + j];
            }
        for (int i = 0; i < h.Length; i++)
            h[i] /= tokens;
        return (w, h);
    }

    private static float[] Diagonal(double[] h, int n)
    {
        var d = new float[n];
        for (int i = 0; i < n; i++)
            d[i] = (float)h[i * n + i];
        return d;
    }

    public static TheoryData<GgmlType, double> Formats => new()
    {
        // Named limits: GPTQ's output error must be at most this fraction of round-to-nearest's on the same grid.
        { GgmlType.Q4_0, 0.7 },
        { GgmlType.Q4_1, 0.7 },
        { GgmlType.Q5_0, 0.7 },
        { GgmlType.Q5_1, 0.7 },
        { GgmlType.IQ4_NL, 0.7 },
        { GgmlType.Q8_0, 0.7 },
        { GgmlType.Q2_K, 0.8 }, // 2 bits: large errors, many codes clamp at the grid ends, so feedback helps less (0.744 measured)
        { GgmlType.Q3_K, 0.7 },
        { GgmlType.Q4_K, 0.7 },
        { GgmlType.Q5_K, 0.7 },
        { GgmlType.Q6_K, 0.7 },
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void Gptq_beats_round_to_nearest_and_packs_what_it_rounded_to(GgmlType type, double limit)
    {
        var (w, h) = Layer(seed: 7);
        var grid = BlockGrid.For(type);
        var rtn = Gptq.RoundToNearest(w, Rows, Columns, grid, Diagonal(h, Columns), out _);
        double rtnError = Gptq.OutputError(w, rtn, Rows, Columns, h);
        foreach (bool actOrder in new[] { false, true })
        {
            var result = Gptq.Quantize(w, Rows, Columns, h, grid, new GptqOptions { ActivationOrder = actOrder, Threads = 2 });
            double error = Gptq.OutputError(w, result.Dequantized, Rows, Columns, h);
            output.WriteLine($"{type} act-order={actOrder}: GPTQ {error:0.000000e+0}  RTN {rtnError:0.000000e+0}  ratio {error / rtnError:0.000}");
            Assert.True(error < limit * rtnError, $"{type} act-order={actOrder}: GPTQ error {error} is not below {limit} x RTN {rtnError}");

            // The packed bytes decode to exactly the grid values GPTQ used (act-order's permutation undone).
            int rowBytes = (int)GgmlTypes.RowBytes(type, Columns);
            Assert.Equal(Rows * rowBytes, result.Data.Length);
            var decoded = new float[Columns];
            for (int r = 0; r < Rows; r++)
            {
                Dequantize.Row(type, result.Data.AsSpan(r * rowBytes, rowBytes), decoded);
                for (int c = 0; c < Columns; c++)
                    Assert.Equal(BitConverter.SingleToInt32Bits(result.Dequantized[r * Columns + c]), BitConverter.SingleToInt32Bits(decoded[c]));
            }
        }
    }

    public static TheoryData<GgmlType> GridTypes => [.. Formats.Select(row => (GgmlType)row[0])];

    [Theory]
    [MemberData(nameof(GridTypes))]
    public void Refinement_lowers_the_output_error_and_packs_what_it_chose(GgmlType type)
    {
        var (w, h) = Layer(seed: 11);
        var grid = BlockGrid.For(type);
        var plain = Gptq.Quantize(w, Rows, Columns, h, grid, new GptqOptions { ActivationOrder = true, Threads = 2 });
        var refined = Gptq.Quantize(w, Rows, Columns, h, grid, new GptqOptions { ActivationOrder = true, RefinePasses = 4, Threads = 2 });
        double before = Gptq.OutputError(w, plain.Dequantized, Rows, Columns, h);
        double after = Gptq.OutputError(w, refined.Dequantized, Rows, Columns, h);
        output.WriteLine($"{type}: GPTQ {before:0.000000e+0}  refined {after:0.000000e+0}  ratio {after / before:0.000}");
        Assert.True(after < before, $"{type}: refined error {after} is not below GPTQ's {before}");
        int rowBytes = (int)GgmlTypes.RowBytes(type, Columns);
        var decoded = new float[Columns];
        for (int r = 0; r < Rows; r++)
        {
            Dequantize.Row(type, refined.Data.AsSpan(r * rowBytes, rowBytes), decoded);
            for (int c = 0; c < Columns; c++)
                Assert.Equal(BitConverter.SingleToInt32Bits(refined.Dequantized[r * Columns + c]), BitConverter.SingleToInt32Bits(decoded[c]));
        }
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.IQ4_NL)]
    public void Refitted_scales_cannot_be_improved_by_rescaling_a_block(GgmlType type)
    {
        // After refinement, scaling any one block's values by a factor near 1 (its codes fixed) does not lower the error
        // beyond what f16 rounding of the scale allows: the scales sit at the least-squares optimum.
        var (w, h) = Layer(seed: 5, rows: 4);
        var refined = Gptq.Quantize(w, 4, Columns, h, BlockGrid.For(type), new GptqOptions { RefinePasses = 4, Threads = 1 });
        double best = Gptq.OutputError(w, refined.Dequantized, 4, Columns, h);
        foreach (double factor in new[] { 0.98, 0.995, 1.005, 1.02 })
        {
            for (int b = 0; b < Columns / 32; b++)
            {
                var scaled = (float[])refined.Dequantized.Clone();
                for (int r = 0; r < 4; r++)
                    for (int j = 32 * b; j < 32 * b + 32; j++)
                        scaled[r * Columns + j] = (float)(scaled[r * Columns + j] * factor);
                Assert.True(Gptq.OutputError(w, scaled, 4, Columns, h) > best * (1 - 1e-3), $"block {b} x {factor}");
            }
        }
    }

    /// <summary>Plain GPTQ as the paper writes it: explicit inverse, Cholesky, one column at a time, no batching, no blocks.</summary>
    private static float[] ReferenceGptq(float[] w, double[] hessian, int rows, int n, UniformGrid grid, double dampingFraction)
    {
        var h = (double[])hessian.Clone();
        var weights = (float[])w.Clone();
        for (int i = 0; i < n; i++)
        {
            if (h[i * n + i] == 0)
            {
                h[i * n + i] = 1;
                for (int r = 0; r < rows; r++)
                    weights[r * n + i] = 0;
            }
        }
        double mean = 0;
        for (int i = 0; i < n; i++)
            mean += h[i * n + i];
        for (int i = 0; i < n; i++)
            h[i * n + i] += dampingFraction * mean / n;

        // Gauss-Jordan inverse with partial pivoting.
        var a = (double[])h.Clone();
        var inv = new double[n * n];
        for (int i = 0; i < n; i++)
            inv[i * n + i] = 1;
        for (int col = 0; col < n; col++)
        {
            int pivot = col;
            for (int r = col + 1; r < n; r++)
                if (Math.Abs(a[r * n + col]) > Math.Abs(a[pivot * n + col]))
                    pivot = r;
            for (int k = 0; k < n; k++)
            {
                (a[col * n + k], a[pivot * n + k]) = (a[pivot * n + k], a[col * n + k]);
                (inv[col * n + k], inv[pivot * n + k]) = (inv[pivot * n + k], inv[col * n + k]);
            }
            double p = a[col * n + col];
            for (int k = 0; k < n; k++)
            {
                a[col * n + k] /= p;
                inv[col * n + k] /= p;
            }
            for (int r = 0; r < n; r++)
            {
                if (r == col)
                    continue;
                double f = a[r * n + col];
                for (int k = 0; k < n; k++)
                {
                    a[r * n + k] -= f * a[col * n + k];
                    inv[r * n + k] -= f * inv[col * n + k];
                }
            }
        }
        // Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), computed row by row.
        var u = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            double s = inv[i * n + i];
            for (int k = 0; k < i; k++)
                s -= u[k * n + i] * u[k * n + i];
            u[i * n + i] = Math.Sqrt(s);
            for (int j = i + 1; j < n; j++)
            {
                double t = inv[i * n + j];
                for (int k = 0; k < i; k++)
                    t -= u[k * n + i] * u[k * n + j];
                u[i * n + j] = t / u[i * n + i];
            }
        }
        var q = new float[rows * n];
        var row = new double[n];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++)
                row[j] = weights[r * n + j];
            for (int i = 0; i < n; i++)
            {
                float best = grid.Value([], i, 0);
                for (int code = 1; code < grid.Levels; code++)
                {
                    float v = grid.Value([], i, code);
                    if (Math.Abs(v - row[i]) < Math.Abs(best - row[i]))
                        best = v;
                }
                q[r * n + i] = best;
                double err = (row[i] - best) / u[i * n + i];
                for (int j = i + 1; j < n; j++)
                    row[j] -= err * u[i * n + j];
            }
        }
        return q;
    }

    [Fact]
    public void Matches_a_plain_reference_gptq_on_a_fixed_uniform_grid()
    {
        var (w, h) = Layer(seed: 11, rows: 24, columns: 96, tokens: 300);
        var grid = new UniformGrid(0.02f, 16, 32);
        var expected = ReferenceGptq(w, h, 24, 96, grid, 0.01);
        var actual = Gptq.Quantize(w, 24, 96, h, grid, new GptqOptions { BatchSize = 32, Threads = 2 });
        Assert.Equal(expected, actual.Dequantized);
        // Not a trivial agreement: error feedback changed many roundings compared with plain rounding.
        var rtn = Gptq.RoundToNearest(w, 24, 96, grid, [], out _);
        int changed = expected.Zip(rtn).Count(p => p.First != p.Second);
        Assert.True(changed > 100, $"only {changed} values differ from round-to-nearest");
    }

    [Fact]
    public void Activation_order_is_the_reference_on_permuted_columns_with_the_permutation_undone()
    {
        int rows = 16, n = 64;
        var (w, h) = Layer(seed: 5, rows: rows, columns: n, tokens: 200);
        var grid = new UniformGrid(0.03f, 8, 1);
        var perm = Enumerable.Range(0, n).OrderByDescending(i => h[i * n + i]).ThenBy(i => i).ToArray();
        var wp = new float[rows * n];
        var hp = new double[n * n];
        for (int p = 0; p < n; p++)
        {
            for (int r = 0; r < rows; r++)
                wp[r * n + p] = w[r * n + perm[p]];
            for (int q = 0; q < n; q++)
                hp[p * n + q] = h[perm[p] * n + perm[q]];
        }
        Assert.NotEqual(Enumerable.Range(0, n), perm);
        var expectedPermuted = ReferenceGptq(wp, hp, rows, n, grid, 0.01);
        var actual = Gptq.Quantize(w, rows, n, h, grid, new GptqOptions { ActivationOrder = true, Threads = 1 });
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < n; p++)
                Assert.Equal(expectedPermuted[r * n + p], actual.Dequantized[r * n + perm[p]]);
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.IQ4_NL)]
    public void Lazy_batches_do_not_change_the_result(GgmlType type)
    {
        // With act-order a block is fitted while later batches still owe pending updates; the fit must see them
        // applied, so one batch covering every column and batches of 32 give the same codes.
        var (w, h) = Layer(seed: 21, rows: 16, columns: 128, tokens: 256);
        var grid = BlockGrid.For(type);
        foreach (bool actOrder in new[] { false, true })
        {
            var whole = Gptq.Quantize(w, 16, 128, h, grid, new GptqOptions { BatchSize = 128, ActivationOrder = actOrder, Threads = 1 });
            var lazy = Gptq.Quantize(w, 16, 128, h, grid, new GptqOptions { BatchSize = 32, ActivationOrder = actOrder, Threads = 1 });
            Assert.Equal(whole.Data, lazy.Data);
        }
    }

    [Fact]
    public void Dead_inputs_and_a_singular_hessian_give_finite_output()
    {
        // 40 tokens for 128 columns: H has rank at most 40; columns 3 and 77 never see an input.
        int[] dead = [3, 77];
        var (w, h) = Layer(seed: 3, rows: 8, columns: 128, tokens: 40, deadColumns: dead);
        foreach (var grid in new IBlockGrid[] { BlockGrid.For(GgmlType.Q4_0), new UniformGrid(0.02f, 16, 32) })
        {
            foreach (double damping in new[] { 0.01, 0.0 })
            {
                var result = Gptq.Quantize(w, 8, 128, h, grid, new GptqOptions { DampingFraction = damping, ActivationOrder = damping == 0 });
                Assert.Equal(2, result.DeadColumns);
                Assert.All(result.Dequantized, v => Assert.True(float.IsFinite(v)));
                Assert.True(result.Damping > 0);
                for (int r = 0; r < 8; r++)
                    foreach (int d in dead)
                        Assert.Equal(0f, result.Dequantized[r * 128 + d]);
            }
        }
        // An all-zero Hessian: every input is dead; every weight becomes zero.
        var zero = Gptq.Quantize(w, 8, 128, new double[128 * 128], BlockGrid.For(GgmlType.Q8_0));
        Assert.All(zero.Dequantized, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Results_do_not_depend_on_the_thread_count()
    {
        var (w, h) = Layer(seed: 9, rows: 40, columns: 64, tokens: 128);
        var grid = BlockGrid.For(GgmlType.Q4_1);
        var one = Gptq.Quantize(w, 40, 64, h, grid, new GptqOptions { Threads = 1 });
        var four = Gptq.Quantize(w, 40, 64, h, grid, new GptqOptions { Threads = 4 });
        Assert.Equal(one.Data, four.Data);
    }

    [Fact]
    public void A_prepared_hessian_shared_by_several_matrices_gives_the_same_result()
    {
        var (w, h) = Layer(seed: 13, rows: 24, columns: 64, tokens: 128);
        var grid = BlockGrid.For(GgmlType.Q5_1);
        var options = new GptqOptions { ActivationOrder = true, DampingFraction = 0.05, Threads = 1 };
        var prepared = GptqHessian.Prepare(h, 64, 0.05, activationOrder: true);
        Assert.True(prepared.ActivationOrder);
        Assert.Equal(0, prepared.DeadColumns);
        var direct = Gptq.Quantize(w, 24, 64, h, grid, options);
        var first = Gptq.Quantize(w, 24, prepared, grid, options);
        var second = Gptq.Quantize(w.AsSpan(0, 8 * 64), 8, prepared, grid, options);
        Assert.Equal(direct.Data, first.Data);
        Assert.Equal(direct.Damping, prepared.Damping);
        Assert.Equal(first.Data.AsSpan(0, second.Data.Length).ToArray(), second.Data);
    }

    [Fact]
    public void Bad_shapes_are_refused()
    {
        var grid = BlockGrid.For(GgmlType.Q4_0);
        Assert.Throws<ArgumentException>(() => Gptq.Quantize(new float[2 * 48], 2, 48, new double[48 * 48], grid));
        Assert.Throws<ArgumentException>(() => Gptq.Quantize(new float[2 * 32], 2, 32, new double[31 * 31], grid));
        var nan = new float[64];
        nan[5] = float.NaN;
        Assert.Throws<ArgumentException>(() => Gptq.Quantize(nan, 2, 32, new double[32 * 32], grid));
        Assert.Throws<NotSupportedException>(() => BlockGrid.For(GgmlType.F16));
    }
}
