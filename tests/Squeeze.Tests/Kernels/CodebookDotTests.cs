using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Tests.Weights;

namespace Squeeze.Tests.Kernels;

public unsafe class CodebookDotTests
{
    // Σ in a different order: relative to Σ|w·x|
    private const double SumOrderLimit = 1e-5;

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void The_vector_kernel_and_the_scalar_reference_match_the_decoded_rows(int bits)
    {
        int compared = 0;
        foreach (var (columns, group) in new[] { (16, 16), (48, 16), (64, 64), (96, 32), (288, 48), (288, 144), (288, 288), (768, 256), (2048, 128) })
        {
            for (int seed = 0; seed < 3; seed++)
            {
                int rows = 1 + seed * 4; // 1, 5, 9: the last rows reach the end of the codes (the scalar tail)
                var (weight, _, _) = CodebookWeightTests.Random(rows, columns, bits, group, seed * 31 + columns);
                var x = LinearWeightTests.RandomValues(columns, seed + 5);
                var (expected, magnitude) = WeightTestData.ReferenceProduct(weight.Decode(), rows, columns, x, 1);
                var scalar = new float[rows];
                var vector = new float[rows + 1];
                vector[rows] = -7; // past the range: untouched
                fixed (byte* codes = weight.PackedCodes)
                fixed (ushort* tables = weight.Table)
                fixed (float* px = x, py = vector)
                {
                    for (int r = 0; r < rows; r++)
                        scalar[r] = CodebookDot.DotScalar(codes, weight.RowBytes, tables, bits, group, columns, r, px);
                    if (CodebookDot.Supports(bits, group))
                        CodebookDot.RowsAvx512(codes, codes + weight.PackedCodes.Length, weight.RowBytes, tables, bits, group, columns, 0, rows, px, py);
                }
                Assert.Equal(-7, vector[rows]);
                for (int r = 0; r < rows; r++)
                {
                    Assert.True(Math.Abs(scalar[r] - expected[r]) <= SumOrderLimit * magnitude[r] + 1e-7, $"b{bits} g{group} [{rows}, {columns}] row {r}: scalar {scalar[r]} vs {expected[r]}");
                    if (CodebookDot.Supports(bits, group))
                    {
                        Assert.True(Math.Abs(vector[r] - expected[r]) <= SumOrderLimit * magnitude[r] + 1e-7, $"b{bits} g{group} [{rows}, {columns}] row {r}: AVX-512 {vector[r]} vs {expected[r]}");
                        compared++;
                    }
                }
            }
        }
        Assert.True(compared > 0 || !CodebookDot.Supports(bits, 16));
    }

    [Fact]
    public void Only_codes_of_at_most_4_bits_in_whole_runs_of_16_have_the_vector_kernel()
    {
        Assert.False(CodebookDot.Supports(5, 64));
        Assert.False(CodebookDot.Supports(4, 40));
        Assert.Equal(VecDot.Best == SimdLevel.Avx512 && System.Runtime.Intrinsics.X86.Avx512Vbmi.IsSupported, CodebookDot.Supports(4, 64));
    }
}
