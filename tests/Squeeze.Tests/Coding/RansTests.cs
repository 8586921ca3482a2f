using Squeeze.Coding;

namespace Squeeze.Tests.Coding;

public class RansTests
{
    /// <summary>Symbols drawn from a geometric-like distribution over <paramref name="alphabet"/> symbols.</summary>
    private static byte[] Skewed(int count, int alphabet, double decay, int seed)
    {
        var rng = new Random(seed);
        var symbols = new byte[count];
        for (int i = 0; i < count; i++)
        {
            int s = 0;
            while (s < alphabet - 1 && rng.NextDouble() < decay)
                s++;
            symbols[i] = (byte)s;
        }
        return symbols;
    }

    private static long[] Counts(byte[] symbols, int alphabet)
    {
        var counts = new long[alphabet];
        foreach (byte s in symbols)
            counts[s]++;
        return counts;
    }

    [Fact]
    public void Round_trips_exactly_over_lengths_alphabets_and_seeds()
    {
        foreach (int alphabet in new[] { 1, 2, 4, 8, 16, 256 })
        {
            foreach (int count in new[] { 0, 1, 2, 3, 7, 100, 1000, 20000 })
            {
                for (int seed = 0; seed < 3; seed++)
                {
                    var symbols = Skewed(count, alphabet, 0.6, seed * 31 + count);
                    var table = RansTable.FromCounts(Counts(symbols, alphabet));
                    var stream = Rans.Encode(symbols, table);
                    var decoded = new byte[count];
                    Rans.Decode(stream, table, decoded);
                    Assert.Equal(symbols, decoded);
                }
            }
        }
    }

    [Fact]
    public void Coded_size_is_within_a_fraction_of_a_percent_of_the_entropy()
    {
        var symbols = Skewed(200_000, 16, 0.5, 7);
        var counts = Counts(symbols, 16);
        double entropyBits = 0;
        foreach (long c in counts)
        {
            if (c > 0)
                entropyBits -= c * Math.Log2((double)c / symbols.Length);
        }
        var table = RansTable.FromCounts(counts);
        var stream = Rans.Encode(symbols, table);
        Assert.InRange(stream.Length * 8.0, entropyBits, entropyBits * 1.005 + 64);
    }

    [Fact]
    public void Table_from_counts_sums_to_the_total_and_keeps_every_symbol_that_occurs()
    {
        var rng = new Random(3);
        for (int trial = 0; trial < 200; trial++)
        {
            int alphabet = rng.Next(1, 257);
            var counts = new long[alphabet];
            for (int s = 0; s < alphabet; s++)
                counts[s] = rng.Next(4) == 0 ? 0 : (long)Math.Pow(10, rng.NextDouble() * 7);
            var table = RansTable.FromCounts(counts);
            Assert.Equal(RansTable.Total, table.Frequencies.ToArray().Sum(f => f));
            bool none = counts.All(c => c == 0); // then symbol 0 takes the whole range
            for (int s = 0; s < alphabet; s++)
                Assert.Equal(counts[s] > 0 || (none && s == 0), table.Frequencies[s] > 0);
        }
    }

    [Fact]
    public void Refuses_a_symbol_without_frequency()
    {
        var table = RansTable.FromCounts([5, 0, 5]);
        Assert.Throws<ArgumentException>(() => Rans.Encode([0, 1, 2], table));
    }

    [Fact]
    public void Refuses_tables_that_do_not_sum_to_the_total()
    {
        Assert.Throws<InvalidDataException>(() => RansTable.FromFrequencies([1, 2, 3]));
        Assert.Throws<InvalidDataException>(() => RansTable.FromFrequencies([]));
        Assert.Throws<InvalidDataException>(() => RansTable.FromFrequencies(new ushort[257]));
    }

    [Fact]
    public void Every_single_byte_corruption_is_detected_or_harmless_and_never_reads_out_of_bounds()
    {
        var symbols = Skewed(3000, 16, 0.55, 11);
        var table = RansTable.FromCounts(Counts(symbols, 16));
        var stream = Rans.Encode(symbols, table);
        var rng = new Random(5);
        int detected = 0;
        for (int i = 0; i < stream.Length; i++)
        {
            var bad = stream.ToArray();
            bad[i] ^= (byte)rng.Next(1, 256);
            var decoded = new byte[symbols.Length];
            try
            {
                Rans.Decode(bad, table, decoded);
                Assert.NotEqual(symbols, decoded); // a changed stream that decodes cannot give the same symbols back
            }
            catch (InvalidDataException)
            {
                detected++;
            }
        }
        Assert.True(detected > stream.Length / 2, $"only {detected} of {stream.Length} corruptions detected by the final state");
        Assert.Throws<InvalidDataException>(() => Rans.Decode(stream.AsSpan(0, stream.Length - 1), table, new byte[symbols.Length]));
        Assert.Throws<InvalidDataException>(() => Rans.Decode([.. stream, 0], table, new byte[symbols.Length]));
        Assert.Throws<InvalidDataException>(() => Rans.Decode([1, 2], table, new byte[symbols.Length]));
    }

    [Fact]
    public void Chunked_streams_round_trip_whatever_the_thread_count_and_name_a_corrupt_chunk()
    {
        var symbols = Skewed(10_001, 8, 0.4, 2);
        var one = ChunkedRans.Encode(symbols, 8, 1000, threads: 1);
        var two = ChunkedRans.Encode(symbols, 8, 1000, threads: 2);
        Assert.Equal(one.Streams, two.Streams);
        Assert.Equal(11, one.ChunkLengths.Length);
        Assert.Equal(symbols, one.Decode(threads: 2));

        var stored = new ChunkedRans(RansTable.FromFrequencies(one.Table.Frequencies), one.SymbolCount, one.ChunkSymbols,
            one.Streams.ToArray(), one.ChunkLengths, one.ChunkChecksums);
        stored.Streams[(int)one.ChunkLengths[0] + 5] ^= 0x10;
        var error = Assert.Throws<InvalidDataException>(() => stored.Decode(threads: 2));
        Assert.Contains("chunk 1 ", error.Message);

        Assert.Throws<InvalidDataException>(() => new ChunkedRans(one.Table, one.SymbolCount + 1000, one.ChunkSymbols, one.Streams, one.ChunkLengths, one.ChunkChecksums));
        Assert.Throws<InvalidDataException>(() => new ChunkedRans(one.Table, one.SymbolCount, one.ChunkSymbols, one.Streams[1..], one.ChunkLengths, one.ChunkChecksums));
    }
}
