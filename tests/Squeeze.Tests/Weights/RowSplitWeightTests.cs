using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public sealed class RowSplitWeightTests
{
    /// <summary>A split of Gaussian [rows, columns] values: a seeded random set of <paramref name="hotCount"/> rows
    /// as uniform codes of <paramref name="hotBits"/> bits, the rest of <paramref name="coldBits"/>, groups of
    /// <paramref name="group"/>; also returns the values.</summary>
    internal static (RowSplitWeight Weight, float[] Values) Random(int rows, int columns, int hotCount, int hotBits, int coldBits, int group, int seed)
    {
        var values = WeightTestData.Gaussian(rows, columns, seed, outlierColumns: 2);
        var rng = new Random(seed);
        var hot = new bool[rows];
        foreach (int r in Enumerable.Range(0, rows).OrderBy(_ => rng.Next()).Take(hotCount))
            hot[r] = true;
        float[] Gather(bool which) => [.. Enumerable.Range(0, rows).Where(r => hot[r] == which).SelectMany(r => values.AsSpan(r * columns, columns).ToArray())];
        const string name = "token_embd.weight";
        var hotRows = UniformWeight.Encode(name, Gather(true), hotCount, columns, new UniformScheme(hotBits, group, symmetric: true));
        var coldRows = UniformWeight.Encode(name, Gather(false), rows - hotCount, columns, new UniformScheme(coldBits, group, symmetric: false));
        return (new RowSplitWeight(name, hot, hotRows, coldRows), values);
    }

    public static TheoryData<int, int, int, int, int, int> Shapes() => new()
    {
        // rows, columns, hot rows, hot bits, cold bits, group
        { 2, 32, 1, 8, 2, 32 },
        { 9, 64, 3, 6, 3, 32 },
        { 37, 96, 30, 4, 3, 96 },
        { 64, 48, 1, 5, 2, 16 },
        { 130, 288, 64, 8, 3, 96 },
        { 301, 40, 299, 4, 2, 8 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void DecodeRow_takes_each_row_from_its_group_in_order(int rows, int columns, int hotCount, int hotBits, int coldBits, int group)
    {
        var (weight, _) = Random(rows, columns, hotCount, hotBits, coldBits, group, seed: rows);
        var row = new float[columns];
        var expected = new float[columns];
        int h = 0, c = 0;
        for (int r = 0; r < rows; r++)
        {
            weight.DecodeRow(r, row);
            if (weight.Hot[r])
                weight.HotRows.DecodeRow(h++, expected);
            else
                weight.ColdRows.DecodeRow(c++, expected);
            Assert.Equal(expected, row);
        }
        Assert.Equal(hotCount, h);
        Assert.Equal(rows - hotCount, c);
        Assert.Equal((rows + 7) / 8 + weight.HotRows.StoredBytes + weight.ColdRows.StoredBytes, weight.StoredBytes);
        Assert.Equal($"split(hot {hotCount}: {weight.HotRows.Scheme}; cold: {weight.ColdRows.Scheme})", weight.Scheme);
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Multiply_matches_the_decoded_reference_at_every_thread_count(int rows, int columns, int hotCount, int hotBits, int coldBits, int group)
    {
        for (int seed = 0; seed < 2; seed++)
        {
            var (weight, _) = Random(rows, columns, hotCount, hotBits, coldBits, group, seed: seed * 7919 + rows);
            var rng = new Random(seed);
            foreach (int tokens in (int[])[1, 2, 3, 8, 17])
            {
                var x = new float[tokens * columns];
                for (int i = 0; i < x.Length; i++)
                    x[i] = (float)(rng.NextDouble() * 2 - 1);
                WeightTestData.AssertProductMatchesTheReference(weight, x, tokens, $"[{rows}, {columns}] hot {hotCount} seed {seed}", quantizedActivations: true);
            }
        }
    }

    /// <summary>The product is the groups' own products scattered: the same bits, in the normal and the deterministic mode.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Multiply_scatters_the_groups_products_exactly(bool deterministic)
    {
        var (weight, _) = Random(77, 96, 20, 6, 3, 32, seed: 5);
        const int tokens = 5;
        var rng = new Random(3);
        var x = Enumerable.Range(0, tokens * 96).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        using var context = new ComputeContext(2) { Deterministic = deterministic };
        var y = new float[tokens * 77];
        weight.Multiply(x, tokens, context, y);
        var hotY = new float[tokens * weight.HotRows.Rows];
        var coldY = new float[tokens * weight.ColdRows.Rows];
        weight.HotRows.Multiply(x, tokens, context, hotY);
        weight.ColdRows.Multiply(x, tokens, context, coldY);
        for (int t = 0; t < tokens; t++)
        {
            int h = 0, c = 0;
            for (int r = 0; r < 77; r++)
            {
                float expected = weight.Hot[r] ? hotY[t * weight.HotRows.Rows + h++] : coldY[t * weight.ColdRows.Rows + c++];
                Assert.Equal(expected, y[t * 77 + r]);
            }
        }
    }

    [Fact]
    public void Hot_rows_keep_more_precision_than_cold_rows()
    {
        var (weight, values) = Random(40, 64, 10, 8, 2, 32, seed: 11);
        double hotError = 0, coldError = 0;
        var row = new float[64];
        for (int r = 0; r < 40; r++)
        {
            weight.DecodeRow(r, row);
            double error = 0;
            for (int c = 0; c < 64; c++)
                error += Math.Pow(row[c] - values[r * 64 + c], 2);
            if (weight.Hot[r])
                hotError += error / 10;
            else
                coldError += error / 30;
        }
        Assert.True(hotError * 100 < coldError, $"hot rows' mean squared error {hotError}, cold rows' {coldError}");
    }

    [Fact]
    public void Mismatched_parts_are_refused()
    {
        var values = WeightTestData.Gaussian(4, 32, 1);
        LinearWeight Rows(int count, int columns = 32) => WeightTestData.F32("w", values[..(count * columns)], count, columns);
        void Refused(Func<RowSplitWeight> make, string expected)
        {
            var e = Assert.Throws<ArgumentException>(make);
            Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        }
        Refused(() => new RowSplitWeight("w", [true, false, false], Rows(2), Rows(2)), "the mask has 1 hot rows, the hot weight");
        Refused(() => new RowSplitWeight("w", [true, true, false], Rows(2), Rows(2)), "the mask has 1 cold rows, the cold weight");
        Refused(() => new RowSplitWeight("w", [true, true], Rows(1), Rows(1)), "2 of 2 rows are hot; a split needs at least one hot and one cold row");
        Refused(() => new RowSplitWeight("w", [false, false], Rows(1), Rows(1)), "0 of 2 rows are hot");
        Refused(() => new RowSplitWeight("w", [true, false], Rows(1), Rows(1, 16)), "have different columns");
        Refused(() => new RowSplitWeight("w", [], Rows(1), Rows(1)), "the row mask is empty");
    }
}
