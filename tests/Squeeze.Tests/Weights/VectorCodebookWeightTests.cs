using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public sealed class VectorCodebookWeightTests
{
    /// <summary>A random vector-quantized weight: Gaussian f16 centroids, uniform indices, optional positive row scales.</summary>
    internal static VectorCodebookWeight Random(int rows, int columns, int dimension, int bits, bool scaled, int seed)
    {
        var rng = new Random(seed);
        var codebook = new ushort[(1 << bits) * dimension];
        for (int i = 0; i < codebook.Length; i++)
            codebook[i] = HalfConversions.F32ToF16((float)(rng.NextDouble() * 2 - 1));
        var indices = new ushort[rows * (columns / dimension)];
        for (int i = 0; i < indices.Length; i++)
            indices[i] = (ushort)rng.Next(1 << bits);
        ushort[]? scales = scaled ? [.. Enumerable.Range(0, rows).Select(_ => HalfConversions.F32ToF16((float)(0.01 + rng.NextDouble())))] : null;
        return new VectorCodebookWeight("blk.0.ffn_up.weight", rows, columns, dimension, bits, codebook, indices, scales);
    }

    public static TheoryData<int, int, int, int, bool> Shapes()
    {
        var data = new TheoryData<int, int, int, int, bool>();
        foreach (bool scaled in (bool[])[false, true])
        {
            data.Add(3, 64, 2, 4, scaled);
            data.Add(9, 96, 4, 8, scaled);
            data.Add(5, 18, 6, 5, scaled);
            data.Add(17, 288, 8, 12, scaled);
            data.Add(2, 21, 1, 3, scaled);
            data.Add(4, 48, 16, 16, scaled);
            // Rows at least twice the centroids: the per-token dot-product tables.
            data.Add(64, 48, 4, 4, scaled);
            data.Add(300, 96, 8, 7, scaled);
            data.Add(40, 18, 6, 3, scaled);
            data.Add(33, 9, 1, 4, scaled);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void DecodeRow_looks_each_vector_up_in_the_codebook(int rows, int columns, int dimension, int bits, bool scaled)
    {
        var weight = Random(rows, columns, dimension, bits, scaled, seed: bits * 100 + dimension);
        var row = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            weight.DecodeRow(r, row);
            for (int c = 0; c < columns; c++)
            {
                int k = weight.Indices[r * (columns / dimension) + c / dimension];
                float value = HalfConversions.F16ToF32(weight.Codebook[k * dimension + c % dimension]);
                Assert.Equal(scaled ? value * HalfConversions.F16ToF32(weight.Scales[r]) : value, row[c]);
            }
        }
        long expected = 2L * (1 << bits) * dimension + (long)rows * ((columns / dimension * bits + 7) / 8) + (scaled ? 2 * rows : 0);
        Assert.Equal(expected, weight.StoredBytes);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Multiply_matches_the_decoded_reference_at_every_thread_count(int rows, int columns, int dimension, int bits, bool scaled)
    {
        for (int seed = 0; seed < 3; seed++)
        {
            var weight = Random(rows, columns, dimension, bits, scaled, seed: seed * 7919 + bits);
            var rng = new Random(seed);
            foreach (int tokens in (int[])[1, 2, 3, 8])
            {
                var x = new float[tokens * columns];
                for (int i = 0; i < x.Length; i++)
                    x[i] = (float)(rng.NextDouble() * 2 - 1);
                Assert.Equal(rows >= 2 << bits, weight.UsesLookupTables);
                WeightTestData.AssertProductMatchesTheReference(weight, x, tokens, $"dim {dimension} bits {bits} seed {seed}");
            }
        }
    }

    [Theory]
    [InlineData(24, false)]
    [InlineData(24, true)]
    [InlineData(160, false)]
    [InlineData(160, true)]
    public void Multiply_gives_the_bits_of_the_default_decoded_product_unless_it_uses_tables(int rows, bool scaled)
    {
        var weight = Random(rows, 96, 4, 6, scaled, seed: 5);
        Assert.Equal(rows >= 128, weight.UsesLookupTables);
        var asPlain = new DecodedOnly(weight);
        var rng = new Random(1);
        var x = new float[4 * 96];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        foreach (bool deterministic in (bool[])[false, true])
        {
            foreach (int tokens in (int[])[1, 4])
            {
                using var context = new ComputeContext(2) { Deterministic = deterministic };
                var fast = new float[tokens * rows];
                var reference = new float[tokens * rows];
                weight.Multiply(x, tokens, context, fast);
                asPlain.Multiply(x, tokens, context, reference);
                if (deterministic || !weight.UsesLookupTables || tokens > VectorCodebookWeight.LookupMaxTokens)
                    Assert.Equal(reference, fast);
                else
                    Assert.NotEqual(reference, fast); // the tables sum in another order: the same values up to rounding (tested above)
            }
        }
    }

    [Fact]
    public void Indices_pack_least_significant_bit_first_and_unpack_back()
    {
        var packed = new byte[VectorCodebookWeight.PackedRowBytes(3, 12)];
        VectorCodebookWeight.PackRow([0xABC, 0x123, 0xFFF], 12, packed);
        Assert.Equal(new byte[] { 0xBC, 0x3A, 0x12, 0xFF, 0x0F }, packed);
        var rng = new Random(4);
        for (int bits = VectorCodebookWeight.MinIndexBits; bits <= VectorCodebookWeight.MaxIndexBits; bits++)
        {
            foreach (int count in (int[])[1, 5, 36, 37])
            {
                var indices = Enumerable.Range(0, count).Select(_ => (ushort)rng.Next(1 << bits)).ToArray();
                var row = new byte[VectorCodebookWeight.PackedRowBytes(count, bits)];
                VectorCodebookWeight.PackRow(indices, bits, row);
                var back = new ushort[count];
                Assert.True(VectorCodebookWeight.UnpackRow(row, bits, back));
                Assert.Equal(indices, back);
                if (count * bits % 8 != 0)
                {
                    row[^1] |= 0x80;
                    Assert.False(VectorCodebookWeight.UnpackRow(row, bits, back));
                }
            }
        }
        Assert.Throws<ArgumentException>(() => VectorCodebookWeight.PackRow([4], 2, new byte[1]));
    }

    [Fact]
    public void Constructor_refuses_wrong_sizes_out_of_range_indices_and_non_finite_values()
    {
        var weight = Random(2, 64, 4, 5, scaled: true, seed: 3);
        var codebook = weight.Codebook.ToArray();
        var indices = weight.Indices.ToArray();
        var scales = weight.Scales.ToArray();
        Assert.Throws<ArgumentException>(() => new VectorCodebookWeight("w", 2, 64, 4, 5, codebook[..^1], indices, scales));
        Assert.Throws<ArgumentException>(() => new VectorCodebookWeight("w", 2, 64, 4, 5, codebook, indices[..^1], scales));
        Assert.Throws<ArgumentException>(() => new VectorCodebookWeight("w", 2, 64, 4, 5, codebook, indices, scales[..^1]));
        Assert.Throws<ArgumentException>(() => new VectorCodebookWeight("w", 2, 66, 4, 5, codebook, indices, scales));
        Assert.Throws<ArgumentOutOfRangeException>(() => new VectorCodebookWeight("w", 2, 64, 4, 0, codebook, indices, scales));
        Assert.Throws<ArgumentOutOfRangeException>(() => new VectorCodebookWeight("w", 2, 64, 32, 5, codebook, indices, scales));
        var high = indices.ToArray();
        high[3] = 32;
        Assert.Throws<ArgumentException>(() => new VectorCodebookWeight("w", 2, 64, 4, 5, codebook, high, scales));
        var nan = codebook.ToArray();
        nan[5] = 0x7E00;
        Assert.Throws<ArgumentException>(() => new VectorCodebookWeight("w", 2, 64, 4, 5, nan, indices, scales));
        var infinite = scales.ToArray();
        infinite[1] = 0x7C00;
        Assert.Throws<ArgumentException>(() => new VectorCodebookWeight("w", 2, 64, 4, 5, codebook, indices, infinite));
    }

    // The same weight multiplied by LinearWeight's default decoded product.
    private sealed class DecodedOnly(LinearWeight inner) : LinearWeight(inner.Name, inner.Rows, inner.Columns)
    {
        public override long StoredBytes => inner.StoredBytes;

        public override string Scheme => inner.Scheme;

        public override void DecodeRow(int row, Span<float> destination) => inner.DecodeRow(row, destination);
    }
}
