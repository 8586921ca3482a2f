using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Tests.Quantization;

/// <summary>The vector searches against their scalar definitions: byte-identical blocks for every type, over many row
/// lengths, seeds, value distributions and with and without importance.</summary>
public class QuantizeVectorTests
{
    public static TheoryData<GgmlType> Types() => new()
    {
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.IQ4_NL,
        GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0,
    };

    // Gaussian, heavy-tailed (a few large outliers), all-positive, mostly zero, tiny, constant rows, and rows of ±1 and ±0
    // (ties of magnitude and signed zeros: the first of equal values decides a sign), and rows of ±0 alone.
    private static float[] Row(Random random, int count, int kind)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
        {
            double g = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            x[i] = kind switch
            {
                0 => (float)(0.02 * g),
                1 => (float)(random.Next(50) == 0 ? 8 * g : g),
                2 => (float)Math.Abs(g) + 0.5f,
                3 => random.Next(8) == 0 ? (float)g : 0f,
                4 => (float)(1e-6 * g),
                5 => 0.25f,
                6 => random.Next(4) switch { 0 => 1f, 1 => -1f, 2 => -0f, _ => 0f },
                _ => random.Next(2) == 0 ? -0f : 0f,
            };
        }
        return x;
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Vector_search_gives_the_scalar_definitions_bytes(GgmlType type)
    {
        var random = new Random(42);
        int block = GgmlTypes.BlockSize(type);
        foreach (int blocks in new[] { 1, 2, 3, 5, 8 })
        {
            for (int seed = 0; seed < 16; seed++)
            {
                int count = block == 32 ? 32 * blocks : 256 * blocks;
                var x = Row(random, count, seed % 8);
                float[] importance = seed % 2 == 0 ? [] : Enumerable.Range(0, count).Select(_ => (float)random.NextDouble() * (random.Next(10) == 0 ? 0 : 3)).ToArray();
                int bytes = checked((int)GgmlTypes.RowBytes(type, count));
                var vector = new byte[bytes];
                var scalar = new byte[bytes];
                Quantize.Row(type, x, importance, vector);
                Quantize.ScalarRow(type, x, importance, scalar);
                Assert.True(vector.AsSpan().SequenceEqual(scalar),
                    $"{type}, {count} values, seed {seed}, importance {importance.Length > 0}: first different byte {vector.AsSpan().CommonPrefixLength(scalar)}");
            }
        }
    }
}
