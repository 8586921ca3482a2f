using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Tests.Quantization;

namespace Squeeze.Tests.Kernels;

public sealed class LinearAlgebraTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(96)]
    [InlineData(301)]
    public void Inverse_cholesky_upper_factors_the_inverse_and_ignores_the_thread_count(int n)
    {
        var (_, h) = GptqTests.Layer(seed: n, rows: 1, columns: n, tokens: n + 40);
        var u1 = LinearAlgebra.InverseCholeskyUpper((double[])h.Clone(), n, threads: 1)!;
        var u4 = LinearAlgebra.InverseCholeskyUpper((double[])h.Clone(), n, threads: 4)!;
        Assert.Equal(u1, u4);
        // U is upper triangular with a positive diagonal, and (UᵀU)·H = I.
        double worst = 0;
        for (int i = 0; i < n; i++)
        {
            Assert.True(u1[i * n + i] > 0);
            for (int j = 0; j < i; j++)
                Assert.Equal(0, u1[i * n + j]);
        }
        var hinv = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k <= Math.Min(i, j); k++)
                    s += u1[k * n + i] * u1[k * n + j];
                hinv[i * n + j] = s;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++)
                    s += hinv[i * n + k] * h[k * n + j];
                worst = Math.Max(worst, Math.Abs(s - (i == j ? 1 : 0)));
            }
        Assert.True(worst < 1e-8, $"max |(UᵀU·H − I)| = {worst}");
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(5, 2)]
    [InlineData(31, 1)]
    [InlineData(32, 4)]
    [InlineData(33, 2)]
    [InlineData(67, 3)]
    [InlineData(130, 4)]
    [InlineData(301, 2)]
    public void Blocked_cholesky_and_triangular_inverse_equal_their_definitions_bit_for_bit(int n, int threads)
    {
        var (_, h) = GptqTests.Layer(seed: 7 * n + threads, rows: 1, columns: n, tokens: n + 40);
        var blocked = (double[])h.Clone();
        var plain = (double[])h.Clone();
        Assert.True(LinearAlgebra.CholeskyLower(blocked, n, threads));
        Assert.True(LinearAlgebra.CholeskyLowerReference(plain, n));
        Assert.Equal(plain, blocked);
        var upper = LinearAlgebra.Transpose(plain, n, n);
        Assert.Equal(LinearAlgebra.InvertUpperReference(upper, n), LinearAlgebra.InvertUpper(upper, n, threads));
    }

    [Fact]
    public void Blocked_cholesky_refuses_an_indefinite_matrix_as_its_definition_does()
    {
        var (_, h) = GptqTests.Layer(seed: 3, rows: 1, columns: 70, tokens: 110);
        h[50 * 70 + 50] = -1;
        Assert.False(LinearAlgebra.CholeskyLower((double[])h.Clone(), 70, 2));
        Assert.False(LinearAlgebra.CholeskyLowerReference((double[])h.Clone(), 70));
    }

    [Fact]
    public void An_indefinite_matrix_has_no_factor() => Assert.Null(LinearAlgebra.InverseCholeskyUpper([1, 2, 2, 1], 2, 1));

    [Fact]
    public void Dot_sums_in_four_fixed_lanes()
    {
        var a = Enumerable.Range(0, 37).Select(i => 1.0 / (i + 1)).ToArray();
        var b = Enumerable.Range(0, 37).Select(i => Math.Sqrt(i + 2)).ToArray();
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= 37; i += 4)
        {
            s0 += a[i] * b[i];
            s1 += a[i + 1] * b[i + 1];
            s2 += a[i + 2] * b[i + 2];
            s3 += a[i + 3] * b[i + 3];
        }
        for (; i < 37; i++)
            s0 += a[i] * b[i];
        Assert.Equal((s0 + s1) + (s2 + s3), LinearAlgebra.Dot(a, b));
    }

    [Fact]
    public void Row_group_products_are_bit_identical_to_one_axpy_or_dot_per_row()
    {
        // Rows 1 … 9 cover whole and partial groups of four; lengths 0 … 40 and a few long ones cover every vector tail;
        // 1030 with 70 rows of x covers several of DotRows' blocks both ways.
        int[] lengths = [.. Enumerable.Range(0, 41), 63, 64, 65, 127, 200, 1030];
        foreach (int length in lengths)
        {
            for (int rows = 1; rows <= 9; rows++)
            {
                int count = length > 1000 ? 70 : 1 + (length + rows) % 7, seed = length * 31 + rows;
                var random = new Random(seed);
                double Next() => random.NextDouble() * 2 - 1;
                int cOffset = random.Next(3), cStride = count + random.Next(3);
                int xOffset = random.Next(3), xStride = length + random.Next(3);
                int yOffset = random.Next(3), yStride = length + random.Next(3);
                var c = Enumerable.Range(0, cOffset + rows * cStride).Select(_ => Next()).ToArray();
                for (int k = 0; k < count; k += 3)
                    for (int r = 0; r < rows; r++)
                        c[cOffset + r * cStride + k] = 0; // coefficients zero for every row: skipped
                var x = Enumerable.Range(0, xOffset + count * xStride + 1).Select(_ => Next()).ToArray();
                var y = Enumerable.Range(0, yOffset + rows * yStride + 1).Select(_ => Next()).ToArray();
                var expected = (double[])y.Clone();
                LinearAlgebra.SubtractProductsReference(c, cOffset, cStride, x, xOffset, xStride, rows, count, length, expected, yOffset, yStride);
                LinearAlgebra.SubtractProducts(c, cOffset, cStride, x, xOffset, xStride, rows, count, length, y, yOffset, yStride);
                Assert.Equal(expected, y);

                var dotsExpected = new double[rows * (count + 1)];
                var dots = new double[rows * (count + 1)];
                LinearAlgebra.DotRowsReference(y, yOffset, yStride, x, xOffset, xStride, rows, count, length, dotsExpected, 1, count);
                LinearAlgebra.DotRows(y, yOffset, yStride, x, xOffset, xStride, rows, count, length, dots, 1, count);
                Assert.Equal(dotsExpected, dots);
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 15)]
    [InlineData(4, 16)]
    [InlineData(9, 17)]
    [InlineData(6, 70)]
    [InlineData(13, 130)]
    [InlineData(5, 2100)]
    public void Quadratic_forms_in_f32_agree_with_their_definition_and_ignore_the_thread_count(int rows, int n)
    {
        var (_, h) = GptqTests.Layer(seed: rows * 1000 + n, rows: 1, columns: n, tokens: n + 40);
        var random = new Random(n);
        var w = new float[rows * n];
        var q = new float[rows * n];
        for (int i = 0; i < w.Length; i++)
        {
            w[i] = (float)(random.NextDouble() * 2 - 1);
            q[i] = w[i] + (float)(random.NextDouble() - 0.5) * 0.05f;
        }
        foreach (var quantized in new[] { null, q })
        {
            // The definition in double, a row at a time.
            var expected = new double[rows];
            for (int r = 0; r < rows; r++)
                expected[r] = Gptq.OutputError(w.AsSpan(r * n, n), quantized is null ? new float[n] : quantized.AsSpan(r * n, n), 1, n, h);
            var one = new double[rows];
            var three = new double[rows];
            LinearAlgebra.QuadraticForms(h, n, w, quantized, rows, one, threads: 1);
            LinearAlgebra.QuadraticForms(h, n, w, quantized, rows, three, threads: 3);
            Assert.Equal(one, three);
            for (int r = 0; r < rows; r++)
                Assert.True(Math.Abs(one[r] - expected[r]) <= 1e-5 * expected[r], $"row {r}: {one[r]} against {expected[r]}");
        }
    }
}
