using Squeeze.Coding;
using Squeeze.Zip;

namespace Squeeze.Tests.Coding;

public class RangeCoderTests
{
    /// <summary>Codes <paramref name="symbols"/> with per-symbol frequency tables, decodes them back and returns the
    /// stream length and the ideal code length Σ −log2(f/total) in bytes.</summary>
    private static (int Bytes, double Ideal) RoundTrip(List<uint[]> tables, List<int> symbols)
    {
        var encoder = new RangeEncoder();
        double ideal = 0;
        for (int i = 0; i < symbols.Count; i++)
        {
            uint[] cumulative = tables[i];
            int s = symbols[i];
            encoder.Encode(cumulative[s], cumulative[s + 1] - cumulative[s], cumulative[^1]);
            ideal -= Math.Log2((double)(cumulative[s + 1] - cumulative[s]) / cumulative[^1]);
        }
        byte[] stream = encoder.Finish();
        var decoder = new RangeDecoder(stream);
        for (int i = 0; i < symbols.Count; i++)
        {
            uint[] cumulative = tables[i];
            int s = TokenFrequencies.Find(cumulative, decoder.Target(cumulative[^1]));
            Assert.Equal(symbols[i], s);
            decoder.Consume(cumulative[s], cumulative[s + 1] - cumulative[s]);
        }
        return (stream.Length, ideal / 8);
    }

    private static uint[] Cumulative(IEnumerable<uint> frequencies)
    {
        var list = new List<uint> { 0 };
        foreach (uint f in frequencies)
            list.Add(list[^1] + f);
        return [.. list];
    }

    private static int Sample(uint[] cumulative, Random rng)
        => TokenFrequencies.Find(cumulative, (uint)rng.NextInt64(cumulative[^1]));

    [Fact]
    public void Empty_stream_is_empty()
    {
        Assert.Empty(new RangeEncoder().Finish());
        Assert.Equal(0, RoundTrip([], []).Bytes);
    }

    [Theory]
    [InlineData(1, 2)]
    [InlineData(50, 2)]
    [InlineData(2000, 300)]
    [InlineData(300, 32001)]
    public void Random_distributions_round_trip_near_the_ideal_length(int count, int alphabet)
    {
        var rng = new Random(42 + count);
        var tables = new List<uint[]>();
        var symbols = new List<int>();
        for (int i = 0; i < count; i++)
        {
            // a new random distribution every symbol, from flat to very peaked
            double sharpness = rng.NextDouble() * 12;
            double[] weights = Enumerable.Range(0, alphabet).Select(_ => Math.Exp(rng.NextDouble() * sharpness)).ToArray();
            double sum = weights.Sum();
            var table = Cumulative(weights.Select(w => 1 + (uint)(w / sum * TokenFrequencies.Budget)));
            tables.Add(table);
            symbols.Add(Sample(table, rng));
        }
        var (bytes, ideal) = RoundTrip(tables, symbols);
        Assert.InRange(bytes, ideal - 1, ideal * 1.0001 + 2);
    }

    [Fact]
    public void Extreme_skew_and_the_largest_total_round_trip()
    {
        var rng = new Random(3);
        uint big = RangeEncoder.MaxTotal - 2;
        uint[] skewed = [0, 1, 1 + big, RangeEncoder.MaxTotal]; // symbols of frequency 1, 2^30 − 2, 1
        var tables = new List<uint[]>();
        var symbols = new List<int>();
        for (int i = 0; i < 20000; i++)
        {
            tables.Add(skewed);
            symbols.Add(i % 997 == 0 ? (i % 2 == 0 ? 0 : 2) : 1); // mostly the likely symbol, sometimes a 2^-30 one
        }
        for (int i = 0; i < 500; i++)
        {
            uint[] uniform = [0, 1, 2];
            tables.Add(uniform);
            symbols.Add(rng.Next(2));
        }
        var (bytes, ideal) = RoundTrip(tables, symbols);
        Assert.InRange(bytes, ideal - 1, ideal + 3);
    }

    [Fact]
    public void Carries_propagate_through_runs_of_ff_bytes()
    {
        // Always coding the top symbol of a two-symbol table pushes low up against the range's end: many carries.
        uint[] table = [0, 1, 1u << 20];
        var tables = Enumerable.Repeat(table, 5000).ToList();
        var symbols = Enumerable.Range(0, 5000).Select(i => i % 7 == 0 ? 0 : 1).ToList();
        RoundTrip(tables, symbols);
    }

    [Fact]
    public void Uniform_bits_round_trip()
    {
        var encoder = new RangeEncoder();
        for (uint b = 0; b < 256; b++)
            encoder.EncodeUniform(b, 8);
        var decoder = new RangeDecoder(encoder.Finish());
        for (uint b = 0; b < 256; b++)
            Assert.Equal(b, decoder.DecodeUniform(8));
    }

    [Fact]
    public void Invalid_symbols_are_refused()
    {
        var encoder = new RangeEncoder();
        Assert.Throws<ArgumentOutOfRangeException>(() => encoder.Encode(0, 0, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => encoder.Encode(9, 2, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => encoder.Encode(0, 1, RangeEncoder.MaxTotal + 1));
    }
}
