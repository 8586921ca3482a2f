using Squeeze.Formats.Native;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public class UniformCodecTests
{
    private static readonly int[] Groups = [32, 48, 96, 144, 288];

    /// <summary>Largest |w - decode(encode(w))| for values in [-1, 1] with plain asymmetric min/max: half a step of a
    /// range of at most 2 over 2^bits - 1 steps, plus slack for the f16 rounding of scale and min (≤ 2^-11 relative).</summary>
    internal static double AsymmetricBound(int bits) => 1.0 / ((1 << bits) - 1) + 0.002;

    /// <summary>The same for symmetric absmax: half a step of absmax / (2^(bits-1) - 1), absmax ≤ 1.</summary>
    internal static double SymmetricBound(int bits) => 0.5 / ((1 << (bits - 1)) - 1) + 0.002;

    private static float[] RandomRow(Random random, int length)
    {
        var row = new float[length];
        for (int i = 0; i < length; i++)
            row[i] = (float)(random.NextDouble() * 2 - 1);
        return row;
    }

    [Fact]
    public void Pack_then_unpack_returns_the_codes_for_every_width_and_group()
    {
        var random = new Random(42);
        for (int bits = 2; bits <= 8; bits++)
        {
            foreach (int group in Groups)
            {
                foreach (int length in (int[])[group, 3 * group, 1, 5, 7, 13])
                {
                    var codes = new byte[length];
                    for (int i = 0; i < length; i++)
                        codes[i] = (byte)random.Next(1 << bits);
                    var packed = new byte[(length * bits + 7) / 8];
                    UniformCodec.Pack(codes, bits, packed);
                    var back = new byte[length];
                    UniformCodec.Unpack(packed, bits, back);
                    Assert.Equal(codes, back);
                }
            }
        }
    }

    [Fact]
    public void Pack_puts_code_i_at_bit_i_times_bits_least_significant_first()
    {
        // 3-bit codes 1..8 (mod 8) → stream 001 010 011 100 101 110 111 000 read LSB first.
        byte[] codes = [1, 2, 3, 4, 5, 6, 7, 0];
        var packed = new byte[3];
        UniformCodec.Pack(codes, 3, packed);
        // bits 0-7: 1 | 2<<3 | (3 & 3)<<6 = 0b11_010_001 = 0xD1; bits 8-15: 3>>2 | 4<<1 | 5<<4 | (6&1)<<7 = 0x58;
        // bits 16-23: 6>>1 | 7<<2 | 0<<5 = 0x1F.
        Assert.Equal(new byte[] { 0xD1, 0x58, 0x1F }, packed);
        var five = new byte[5];
        UniformCodec.Pack([31, 0, 31, 0, 31, 0, 31, 0], 5, five);
        Assert.Equal(new byte[] { 0x1F, 0x7C, 0xF0, 0xC1, 0x07 }, five);
    }

    [Fact]
    public void Pack_rejects_a_code_wider_than_the_width()
    {
        var e = Assert.Throws<ArgumentException>(() => UniformCodec.Pack([0, 8], 3, new byte[1]));
        Assert.Contains("code 1 is 8", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Decode_error_stays_below_the_named_bound_and_halves_per_extra_bit()
    {
        var random = new Random(42);
        foreach (bool symmetric in (bool[])[false, true])
        {
            double previousRms = double.NaN;
            for (int bits = 2; bits <= 8; bits++)
            {
                double sumSquares = 0;
                long count = 0;
                foreach (int group in Groups)
                {
                    var scheme = new UniformScheme(bits, group, symmetric);
                    int length = 2 * 288;
                    for (int trial = 0; trial < 4; trial++)
                    {
                        var row = RandomRow(random, length);
                        var decoded = RoundTrip(row, [], scheme, search: false);
                        double bound = symmetric ? SymmetricBound(bits) : AsymmetricBound(bits);
                        for (int i = 0; i < length; i++)
                        {
                            double d = Math.Abs(row[i] - decoded[i]);
                            Assert.True(d <= bound, $"{scheme}: |{row[i]} - {decoded[i]}| = {d} > {bound} at {i}");
                            sumSquares += d * d;
                        }
                        count += length;
                    }
                }
                double rms = Math.Sqrt(sumSquares / count);
                if (!double.IsNaN(previousRms))
                {
                    // The rms error is a fixed fraction of the step, so it shrinks by the ratio of the step sizes:
                    // (2^b - 1) / (2^(b-1) - 1) asymmetric, (2^(b-1) - 1) / (2^(b-2) - 1) symmetric; about 2 from 4 bits on
                    // (symmetric 2 → 3 bits is 3: 2-bit absmax has only the levels -2, -1, 0, 1 steps).
                    double steps = symmetric
                        ? ((1 << (bits - 1)) - 1) / (double)((1 << (bits - 2)) - 1)
                        : ((1 << bits) - 1) / (double)((1 << (bits - 1)) - 1);
                    double ratio = previousRms / rms;
                    string what = $"{(symmetric ? "sym" : "asym")} {bits - 1}→{bits} bits: rms {previousRms} → {rms}, ratio {ratio}, step ratio {steps}";
                    Assert.True(Math.Abs(ratio / steps - 1) < 0.15, what);
                    if (bits >= 4)
                        Assert.True(ratio is > 1.8 and < 2.5, what);
                }
                previousRms = rms;
            }
        }
    }

    [Fact]
    public void Odd_group_sizes_whose_groups_do_not_start_on_byte_boundaries_decode_within_the_bound()
    {
        var random = new Random(11);
        for (int bits = 2; bits <= 8; bits++)
        {
            foreach (int group in (int[])[1, 3, 5, 7, 9, 33])
            {
                var scheme = new UniformScheme(bits, group, symmetric: false);
                var row = RandomRow(random, group * 7);
                var decoded = RoundTrip(row, [], scheme, search: false);
                for (int i = 0; i < row.Length; i++)
                    Assert.True(Math.Abs(row[i] - decoded[i]) <= AsymmetricBound(bits), $"{scheme} at {i}: {row[i]} vs {decoded[i]}");
            }
        }
    }

    [Fact]
    public void Importance_weighted_search_is_never_worse_than_plain_min_max_and_sometimes_better()
    {
        var random = new Random(7);
        int better = 0, groupsSeen = 0;
        foreach (bool symmetric in (bool[])[false, true])
        {
            for (int bits = 2; bits <= 8; bits++)
            {
                foreach (int group in Groups)
                {
                    var scheme = new UniformScheme(bits, group, symmetric);
                    var row = RandomRow(random, 288);
                    // Heavy-tailed rows: a few outliers make shrinking the range worthwhile.
                    for (int i = 0; i < 288; i += 37)
                        row[i] *= 6;
                    var importance = new float[288];
                    for (int i = 0; i < 288; i++)
                        importance[i] = (float)(random.NextDouble() * random.NextDouble() * 10);
                    var plain = RoundTrip(row, [], scheme, search: false);
                    var searched = RoundTrip(row, importance, scheme, search: true);
                    for (int k = 0; k < 288 / group; k++)
                    {
                        double ePlain = 0, eSearched = 0;
                        for (int i = k * group; i < (k + 1) * group; i++)
                        {
                            ePlain += importance[i] * (double)(row[i] - plain[i]) * (row[i] - plain[i]);
                            eSearched += importance[i] * (double)(row[i] - searched[i]) * (row[i] - searched[i]);
                        }
                        Assert.True(eSearched <= ePlain * (1 + 1e-12), $"{scheme} group {k}: searched {eSearched} > plain {ePlain}");
                        if (eSearched < ePlain * 0.999)
                            better++;
                        groupsSeen++;
                    }
                }
            }
        }
        Assert.True(better > groupsSeen / 4, $"the search improved only {better} of {groupsSeen} groups");
    }

    [Fact]
    public void NaN_or_infinite_input_is_an_ArgumentException()
    {
        var scheme = new UniformScheme(4, 32, symmetric: false);
        foreach (float bad in (float[])[float.NaN, float.PositiveInfinity, float.NegativeInfinity])
        {
            var row = new float[64];
            row[40] = bad;
            var e = Assert.Throws<ArgumentException>(() => UniformCodec.EncodeRow(row, [], scheme, false, new byte[64], new ushort[2], new ushort[2]));
            Assert.Contains("value 40", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Bits_outside_2_to_8_and_a_group_that_does_not_divide_the_row_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new UniformScheme(1, 32, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new UniformScheme(9, 32, false));
        Assert.Throws<ArgumentOutOfRangeException>(() => new UniformScheme(4, 0, false));
        var scheme = new UniformScheme(4, 48, false);
        var e = Assert.Throws<ArgumentException>(() => UniformCodec.EncodeRow(new float[64], [], scheme, false, new byte[64], new ushort[1], new ushort[1]));
        Assert.Contains("does not divide", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_constant_group_decodes_exactly_asymmetric_and_zeros_decode_to_zero()
    {
        // Asymmetric: scale 0, min = the value (an f16), so the group is exact.
        var row = Enumerable.Repeat(0.5f, 32).ToArray();
        Assert.Equal(row, RoundTrip(row, [], new UniformScheme(3, 32, symmetric: false), search: true));
        foreach (bool symmetric in (bool[])[false, true])
        {
            var zeros = new float[32];
            Assert.Equal(zeros, RoundTrip(zeros, [], new UniformScheme(3, 32, symmetric), search: false));
        }
    }

    internal static float[] RoundTrip(float[] row, float[] importance, UniformScheme scheme, bool search)
    {
        int groups = row.Length / scheme.Group;
        var codes = new byte[row.Length];
        var scales = new ushort[groups];
        var mins = new ushort[scheme.Symmetric ? 0 : groups];
        UniformCodec.EncodeRow(row, importance, scheme, search, codes, scales, mins);
        var packed = new byte[scheme.RowBytes(row.Length)];
        UniformCodec.Pack(codes, scheme.Bits, packed);
        var decoded = new float[row.Length];
        UniformCodec.DecodeRow(packed, scales, mins, scheme, decoded);
        return decoded;
    }
}
