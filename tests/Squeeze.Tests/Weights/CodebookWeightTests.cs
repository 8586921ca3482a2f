using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public sealed class CodebookWeightTests
{
    /// <summary>A random codebook weight and its codes unpacked ([rows, columns]) for an independent reference.</summary>
    internal static (CodebookWeight Weight, byte[] Codes, ushort[] Table) Random(int rows, int columns, int bits, int group, int seed)
    {
        var rng = new Random(seed);
        int levels = 1 << bits, groups = columns / group;
        var codes = new byte[rows * columns];
        for (int i = 0; i < codes.Length; i++)
            codes[i] = (byte)rng.Next(levels);
        var table = new ushort[rows * groups * levels];
        for (int i = 0; i < table.Length; i++)
            table[i] = HalfConversions.F32ToF16((float)(rng.NextDouble() * 2 - 1) * 0.1f);
        int rowBytes = (columns * bits + 7) / 8;
        var packed = new byte[rows * rowBytes];
        for (int r = 0; r < rows; r++)
            UniformCodec.Pack(codes.AsSpan(r * columns, columns), bits, packed.AsSpan(r * rowBytes, rowBytes));
        return (new CodebookWeight("blk.0.ffn_up.weight", rows, columns, bits, group, packed, table), codes, table);
    }

    public static TheoryData<int, int, int, int> Shapes()
    {
        var data = new TheoryData<int, int, int, int>();
        for (int bits = 2; bits <= 8; bits++)
        {
            data.Add(3, 64, bits, 32);
            data.Add(9, 96, bits, 96);
            data.Add(5, 13, bits, 13);   // a row shorter than one 8-code step tail, odd width
            data.Add(17, 288, bits, 48);
            data.Add(2, 40, bits, 5);    // groups that do not start on 8-code boundaries
            data.Add(35, 288, bits, 144); // groups of whole runs of 16 codes, 2-4 bits: the fused product for few tokens
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void DecodeRow_looks_each_code_up_in_its_groups_table(int rows, int columns, int bits, int group)
    {
        var (weight, codes, table) = Random(rows, columns, bits, group, seed: bits * 1000 + columns);
        int levels = 1 << bits;
        var row = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            weight.DecodeRow(r, row);
            for (int c = 0; c < columns; c++)
            {
                float expected = HalfConversions.F16ToF32(table[(r * (columns / group) + c / group) * levels + codes[r * columns + c]]);
                Assert.Equal(expected, row[c]);
            }
        }
        Assert.Equal(rows * ((columns * bits + 7) / 8) + 2L * table.Length, weight.StoredBytes);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Multiply_matches_the_decoded_reference_at_every_thread_count(int rows, int columns, int bits, int group)
    {
        for (int seed = 0; seed < 3; seed++)
        {
            var (weight, _, _) = Random(rows, columns, bits, group, seed: seed * 7919 + bits);
            var rng = new Random(seed);
            foreach (int tokens in (int[])[1, 3, 8])
            {
                var x = new float[tokens * columns];
                for (int i = 0; i < x.Length; i++)
                    x[i] = (float)(rng.NextDouble() * 2 - 1);
                WeightTestData.AssertProductMatchesTheReference(weight, x, tokens, $"bits {bits} group {group} seed {seed}");
            }
        }
    }

    [Fact]
    public void Multiply_gives_the_bits_of_the_default_decoded_product_in_the_deterministic_mode()
    {
        var (weight, _, _) = Random(24, 96, 3, 32, seed: 5);
        var asPlain = new DecodedOnly(weight);
        var rng = new Random(1);
        var x = new float[4 * 96];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(rng.NextDouble() * 2 - 1);
        foreach (bool deterministic in (bool[])[false, true])
        {
            using var context = new ComputeContext(2) { Deterministic = deterministic };
            var fast = new float[4 * 24];
            var reference = new float[4 * 24];
            weight.Multiply(x, 4, context, fast);
            asPlain.Multiply(x, 4, context, reference);
            Assert.Equal(reference, fast);
        }
    }

    [Fact]
    public void Constructor_refuses_wrong_sizes_and_non_finite_tables()
    {
        var (weight, _, table) = Random(2, 64, 4, 32, seed: 3);
        var packed = weight.PackedCodes.ToArray();
        Assert.Throws<ArgumentException>(() => new CodebookWeight("w", 2, 64, 4, 32, packed.AsMemory(..^1), table));
        Assert.Throws<ArgumentException>(() => new CodebookWeight("w", 2, 64, 4, 32, packed, table.AsMemory(..^1)));
        Assert.Throws<ArgumentException>(() => new CodebookWeight("w", 2, 64, 4, 24, packed, table));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CodebookWeight("w", 2, 64, 1, 32, packed, table));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CodebookWeight("w", 2, 64, 9, 32, packed, table));
        var nan = table.ToArray();
        nan[5] = 0x7E00;
        Assert.Throws<ArgumentException>(() => new CodebookWeight("w", 2, 64, 4, 32, packed, nan));
    }

    // The same weight multiplied by LinearWeight's default decoded product.
    private sealed class DecodedOnly(LinearWeight inner) : LinearWeight(inner.Name, inner.Rows, inner.Columns)
    {
        public override long StoredBytes => inner.StoredBytes;

        public override string Scheme => inner.Scheme;

        public override void DecodeRow(int row, Span<float> destination) => inner.DecodeRow(row, destination);
    }
}
