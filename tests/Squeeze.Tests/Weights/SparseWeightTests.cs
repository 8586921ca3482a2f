using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public sealed class SparseWeightTests
{
    /// <summary>A random sparse weight with about <paramref name="density"/> of its entries set, and its dense matrix.</summary>
    internal static (SparseWeight Weight, float[] Dense) Random(int rows, int columns, double density, int seed)
    {
        var rng = new Random(seed);
        var dense = new float[rows * columns];
        var offsets = new int[rows + 1];
        var indices = new List<int>();
        var values = new List<ushort>();
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < columns; c++)
            {
                if (rng.NextDouble() >= density)
                    continue;
                ushort h = HalfConversions.F32ToF16((float)(rng.NextDouble() * 4 - 2));
                indices.Add(c);
                values.Add(h);
                dense[r * columns + c] = HalfConversions.F16ToF32(h);
            }
            offsets[r + 1] = indices.Count;
        }
        return (new SparseWeight("blk.1.attn_q.weight", rows, columns, offsets, [.. indices], [.. values]), dense);
    }

    [Theory]
    [InlineData(1, 1, 1.0)]
    [InlineData(7, 33, 0.1)]
    [InlineData(64, 288, 0.01)]
    [InlineData(300, 97, 0.3)]
    [InlineData(5, 40, 0.0)]
    public void DecodeRow_and_Multiply_match_the_dense_matrix(int rows, int columns, double density)
    {
        for (int seed = 0; seed < 4; seed++)
        {
            var (weight, dense) = Random(rows, columns, density, seed);
            Assert.Equal(dense, weight.Decode());
            var rng = new Random(seed + 100);
            foreach (int tokens in (int[])[1, 2, 9])
            {
                var x = new float[tokens * columns];
                for (int i = 0; i < x.Length; i++)
                    x[i] = (float)(rng.NextDouble() * 2 - 1);
                var (expected, magnitude) = WeightTestData.ReferenceProduct(dense, rows, columns, x, tokens);
                float[]? first = null;
                foreach (int threads in (int[])[1, 3])
                {
                    using var context = new ComputeContext(threads);
                    var y = new float[tokens * rows];
                    weight.Multiply(x, tokens, context, y);
                    for (int i = 0; i < y.Length; i++)
                        Assert.True(Math.Abs(y[i] - expected[i]) <= 1e-6 * magnitude[i] + 1e-9, $"y[{i / rows}, {i % rows}] = {y[i]}, reference {expected[i]}");
                    if (first is null)
                        first = y;
                    else
                        Assert.Equal(first, y);
                }
            }
        }
    }

    [Fact]
    public void StoredBytes_counts_u16_indices_up_to_65536_columns_and_int32_beyond()
    {
        var narrow = new SparseWeight("w", 2, 65536, [0, 1, 3], [65535, 0, 7], [1, 2, 3]);
        Assert.Equal(4 * 3 + 3 * (2 + 2), narrow.StoredBytes);
        var wide = new SparseWeight("w", 2, 65537, [0, 1, 3], [65536, 0, 7], [1, 2, 3]);
        Assert.Equal(4 * 3 + 3 * (4 + 2), wide.StoredBytes);
    }

    [Fact]
    public void Constructor_refuses_bad_csr()
    {
        ushort one = HalfConversions.F32ToF16(1);
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 1], [0], [one]));                 // too few offsets
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [1, 1, 1], [0], [one]));              // first offset not 0
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 2, 1], [0], [one]));              // decreasing
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 1, 2], [0], [one]));              // last offset ≠ entries
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 1, 1], [4], [one]));              // column out of range
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 1, 1], [-1], [one]));             // negative column
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 2, 2], [1, 1], [one, one]));      // duplicate column
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 2, 2], [2, 1], [one, one]));      // not increasing
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 1, 1], [0], [(ushort)0x7C00]));   // infinite value
        Assert.Throws<ArgumentException>(() => new SparseWeight("w", 2, 4, [0, 1, 1], [0], [one, one]));        // values ≠ indices
    }
}
