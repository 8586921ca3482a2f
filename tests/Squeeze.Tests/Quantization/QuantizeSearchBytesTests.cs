using System.Security.Cryptography;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Tests.Quantization;

/// <summary>The default (refined) search's bytes, pinned: a faster search must write the same file. Each type encodes
/// the same seeded rows, with and without importance, and the SHA-256 of all its bytes must be the one recorded when the
/// search was last changed on purpose (a change of search that is meant to change bytes updates these hashes).</summary>
public class QuantizeSearchBytesTests
{
    public static TheoryData<GgmlType, string> Hashes() => new()
    {
        { GgmlType.Q2_K, "617f64b851be25d4" },
        { GgmlType.Q3_K, "1bf77178149260d7" },
        { GgmlType.Q4_K, "028081904751e300" },
        { GgmlType.Q5_K, "1afa1905b94eda43" },
        { GgmlType.Q6_K, "b8b863bd405e0474" },
        { GgmlType.IQ4_NL, "aa008ba9dffabc06" },
    };

    // Rows from integer draws only (no library maths, so the values are the same on every runtime): near-Gaussian,
    // heavy-tailed, all-positive, mostly zero, tiny, constant, ±1 and ±0.
    private static float[] Row(Random random, int count, int kind)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
        {
            float g = (random.Next(-1000, 1001) + random.Next(-1000, 1001) + random.Next(-1000, 1001) + random.Next(-1000, 1001)) / 2000f;
            x[i] = kind switch
            {
                0 => 0.02f * g,
                1 => random.Next(50) == 0 ? 8 * g : g,
                2 => Math.Abs(g) + 0.5f,
                3 => random.Next(8) == 0 ? g : 0f,
                4 => 1e-6f * g,
                5 => 0.25f,
                6 => random.Next(4) switch { 0 => 1f, 1 => -1f, 2 => -0f, _ => 0f },
                _ => 0.3f * g * g * g,
            };
        }
        return x;
    }

    [Theory]
    [MemberData(nameof(Hashes))]
    public void Default_search_writes_the_pinned_bytes(GgmlType type, string expected)
    {
        var random = new Random(2026);
        const int columns = 1024;
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        var y = new byte[rowBytes];
        var scalar = new byte[rowBytes];
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var scalarSha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (int kind = 0; kind < 8; kind++)
        {
            for (int weighted = 0; weighted < 2; weighted++)
            {
                for (int row = 0; row < 2; row++)
                {
                    var x = Row(random, columns, kind);
                    float[] importance = weighted == 0 ? [] : Enumerable.Range(0, columns).Select(_ => random.Next(10) == 0 ? 0f : random.Next(1, 3001) / 1000f).ToArray();
                    Quantize.Row(type, x, importance, y);
                    sha.AppendData(y);
                    Quantize.ScalarRow(type, x, importance, scalar);
                    scalarSha.AppendData(scalar);
                }
            }
        }
        Assert.Equal(expected, Convert.ToHexStringLower(sha.GetHashAndReset())[..16]);
        Assert.Equal(expected, Convert.ToHexStringLower(scalarSha.GetHashAndReset())[..16]);
    }
}
