using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Tests.Weights;
using Squeeze.Weights;

namespace Squeeze.Tests.Kernels;

public unsafe class UniformDotTests
{
    // Σ in a different order: relative to Σ|w·x| (float rounding of a few thousand terms, with margin)
    private const double SumOrderLimit = 1e-5;

    internal static readonly (int Columns, int Group)[] Shapes =
    [
        (32, 16), (32, 32), (64, 16), (96, 48), (96, 96), (160, 80), (288, 48), (288, 144), (288, 288), (768, 64), (768, 256),
        (2048, 128), (5632, 64), (5632, 176),
    ];

    /// <summary>Weights decoded, activations dequantized from the prepared row: Σ_c w_c · d_b · a_c in double, and the
    /// magnitude the f32 sums round against: Σ |w_c · d_b · a_c|, with an asymmetric group's s·q and min apart
    /// (|s·q| + |m| ≤ |w| + 2|m|: the kernels sum the two terms separately).</summary>
    internal static (double Sum, double Magnitude) Exact(UniformWeight weight, int row, byte* prepared)
    {
        var decoded = new float[weight.Columns];
        weight.DecodeRow(row, decoded);
        int columns = weight.Columns;
        double sum = 0, magnitude = 0;
        int group = weight.UniformScheme.Group;
        for (int c = 0; c < columns; c++)
        {
            double activation = UniformDot.PreparedActivation(prepared, columns, group, c);
            double min = weight.UniformScheme.Symmetric ? 0 : HalfConversions.F16ToF32(weight.Mins[row * (columns / group) + c / group]);
            sum += decoded[c] * activation;
            magnitude += (Math.Abs(decoded[c]) + 2 * Math.Abs(min)) * Math.Abs(activation);
        }
        return (sum, magnitude);
    }

    internal static UniformRows Rows(UniformWeight weight, byte* codes, ushort* scales, ushort* mins)
    {
        var scheme = weight.UniformScheme;
        return new UniformRows(codes, codes + weight.Codes.Length, scheme.RowBytes(weight.Columns), scales, scheme.Symmetric ? null : mins,
            scheme.Bits, scheme.Group, weight.Columns);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void Every_level_matches_the_decoded_row_times_the_quantized_activations(int bits)
    {
        int compared = 0;
        foreach (var (columns, group) in Shapes)
        {
            foreach (bool symmetric in new[] { false, true })
            {
                for (int seed = 0; seed < 3; seed++)
                {
                    const int rows = 7; // four at once and one at a time; the last row reaches the end of the codes: the kernels' tail paths
                    var values = WeightTestData.Gaussian(rows, columns, seed * 131 + bits, outlierColumns: 2);
                    var weight = UniformWeight.Encode("u", values, rows, columns, new UniformScheme(bits, group, symmetric));
                    var x = LinearWeightTests.RandomValues(columns, seed + columns);
                    var prepared = new byte[UniformDot.ActivationRowBytes(columns, group) + 64];
                    var scratch = new byte[UniformDot.PrepareScratchBytes(columns)];
                    fixed (byte* codes = weight.Codes, p0 = prepared, s = scratch)
                    fixed (ushort* scales = weight.Scales, mins = weight.Mins)
                    fixed (float* px = x)
                    {
                        byte* p = (byte*)(((nint)p0 + 63) & ~63);
                        UniformDot.PrepareActivations(px, columns, group, 1, s, p);
                        var w = Rows(weight, codes, scales, mins);
                        foreach (SimdLevel level in new[] { SimdLevel.Scalar, SimdLevel.Avx2, SimdLevel.Avx512 }.Where(VecDot.IsSupported))
                        {
                            var y = new float[rows + 1];
                            y[rows] = -7; // past the range: untouched
                            fixed (float* py = y)
                                UniformDot.For(bits, level)(in w, 0, rows, p, py);
                            Assert.Equal(-7, y[rows]);
                            for (int r = 0; r < rows; r++)
                            {
                                var (sum, magnitude) = Exact(weight, r, p);
                                Assert.True(Math.Abs(y[r] - sum) <= SumOrderLimit * magnitude + 1e-30,
                                    $"{weight.Scheme} [{rows}, {columns}] seed {seed} row {r} at {level}: {y[r]} vs {sum} (Σ|·| {magnitude})");
                                compared++;
                            }
                        }
                    }
                }
            }
        }
        Assert.True(compared > 0);
    }

    [Fact]
    public void Only_whole_pairs_of_runs_of_eight_codes_in_whole_blocks_of_32_are_fused()
    {
        Assert.True(UniformDot.Supports(16, 32));
        Assert.True(UniformDot.Supports(48, 288));
        Assert.False(UniformDot.Supports(72, 288)); // a pair of runs would straddle two blocks of 32 (codes 88–103)
        Assert.False(UniformDot.Supports(12, 96));  // groups split runs of 8 codes
        Assert.False(UniformDot.Supports(16, 40));  // the row is not whole Q8_0 blocks
        Assert.False(UniformDot.Supports(64, 96));  // the group does not divide the row
    }

    [Theory]
    [InlineData(96, 32)]
    [InlineData(288, 48)]
    [InlineData(288, 144)]
    [InlineData(768, 256)]
    public void Prepared_activations_are_the_Q8_0_codes_with_per_lane_scales_and_sums(int columns, int group)
    {
        var x = LinearWeightTests.RandomValues(columns, 5);
        var q8 = new byte[VecDot.ActivationRowBytes(GgmlType.Q8_0, columns)];
        long rowBytes = UniformDot.ActivationRowBytes(columns, group);
        var prepared = new byte[rowBytes];
        var scratch = new byte[UniformDot.PrepareScratchBytes(columns)];
        fixed (float* px = x)
        fixed (byte* pq = q8, p = prepared, s = scratch)
        {
            VecDot.PrepareActivations(GgmlType.Q8_0, px, columns, 1, pq);
            UniformDot.PrepareActivations(px, columns, group, 1, s, p);
            float* blockScales = (float*)(pq + GgmlTypes.RowBytes(GgmlType.Q8_0, columns));
            // every value's activation is its Q8_0 code times its block's scale
            double expectedSum = 0;
            long codeSum = 0;
            for (int c = 0; c < columns; c++)
            {
                sbyte code = ((sbyte*)(pq + c / 32 * 34 + 2))[c % 32];
                Assert.Equal(blockScales[c / 32] * code, UniformDot.PreparedActivation(p, columns, group, c));
                expectedSum += (double)blockScales[c / 32] * code;
                codeSum += code;
            }
            // the codes region holds each code once (the rest is padding), and the lanes' sums are their codes'
            long laneScales = UniformDot.LaneScalesOffset(columns, group), laneSums = UniformDot.LaneSumsOffset(columns, group);
            long laneCounts = UniformDot.LaneCountsOffset(columns, group);
            long byteSum = 0, countSum = 0;
            double sumsSum = 0;
            for (long b = 0; b < laneScales; b++)
                byteSum += ((sbyte*)p)[b];
            for (long l = 0; l < (laneSums - laneScales) / 4; l++)
            {
                int count = ((int*)(p + laneCounts))[l];
                Assert.Equal(((float*)(p + laneScales))[l] * count, ((float*)(p + laneSums))[l]);
                countSum += count;
                sumsSum += ((float*)(p + laneSums))[l];
            }
            Assert.Equal(codeSum, byteSum);
            Assert.Equal(codeSum, countSum);
            Assert.Equal(expectedSum, sumsSum, 1e-3);
        }
    }
}
