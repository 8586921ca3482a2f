using System.IO.Hashing;
using Squeeze.Cluster;

namespace Squeeze.Tests.Cluster;

public sealed class PayloadTests
{
    private const int Part = 1024;

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(Part - 1)]
    [InlineData(Part)]
    [InlineData(Part + 1)]
    [InlineData(2 * Part)]
    [InlineData(7 * Part + 13)]
    public void BytesRoundTripThroughPartsOfAtMostThePartSize(int length)
    {
        var bytes = new byte[length];
        new Random(length).NextBytes(bytes);
        var payload = Payload.Write(Part, w => w.Write(bytes));
        Assert.Equal(length, payload.Length);
        Assert.Equal(Math.Max(1, (length + Part - 1) / Part), payload.PartCount);
        var parts = Enumerable.Range(0, payload.PartCount).Select(payload.Part).ToArray();
        Assert.All(parts[..^1], p => Assert.Equal(Part, p.Length));
        Assert.Equal(bytes, parts.SelectMany(p => p));
        Assert.Equal(XxHash64.HashToUInt64(bytes), payload.Checksum());

        // As they arrive on the other side, read back exactly; reading lets go of the parts.
        var arrived = Payload.Of(parts);
        Assert.Equal(bytes, arrived.Read(r => r.ReadBytes(length)));
        if (length > 0)
            Assert.Throws<InvalidOperationException>(() => arrived.Part(0));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(Part / sizeof(double) - 1)]
    [InlineData(Part / sizeof(double))]
    [InlineData(5 * Part / sizeof(double) + 3)]
    [InlineData((1 << 20) / sizeof(double) + 5)]
    public void ArraysOfValuesSplitAcrossPartsComeBackTheSame(int count)
    {
        // The last count crosses a slice of the arrays' bytes (how arrays over 2 GB as bytes are written).
        Assert.Equal(1 << 17, Wire.Slice<double>());
        var random = new Random(count);
        double[] doubles = [.. Enumerable.Range(0, count).Select(_ => random.NextDouble() - 0.5)];
        float[] floats = [.. doubles.Select(d => (float)d)];
        int[] ints = [.. Enumerable.Range(0, count).Select(_ => random.Next())];
        long[] longs = [.. ints.Select(i => (long)i << 20)];
        var payload = Payload.Write(Part, w =>
        {
            w.Write("names and shapes");
            w.Doubles(doubles);
            w.Floats(floats);
            w.Ints(ints);
            w.Longs(longs);
            w.Bytes([.. ints.Select(i => (byte)i)]);
        });
        var back = Payload.Of([.. Enumerable.Range(0, payload.PartCount).Select(payload.Part)])
            .Read(r => (r.ReadString(), r.Doubles(), r.Floats(), r.Ints(), r.Longs(), r.Bytes()));
        Assert.Equal("names and shapes", back.Item1);
        Assert.Equal(doubles, back.Item2);
        Assert.Equal(floats, back.Item3);
        Assert.Equal(ints, back.Item4);
        Assert.Equal(longs, back.Item5);
        Assert.Equal(ints.Select(i => (byte)i), back.Item6);
    }

    [Fact]
    public void APayloadReadShortOrPastItsEndIsRefused()
    {
        var payload = Payload.Write(Part, w => w.Doubles(new double[300]));
        var parts = Enumerable.Range(0, payload.PartCount).Select(payload.Part).ToArray();
        Assert.Equal(3, parts.Length);
        var leftOver = Assert.Throws<InvalidDataException>(() => Payload.Of(parts).Read(r => r.ReadInt32()));
        Assert.Contains("2400 bytes left over", leftOver.Message, StringComparison.Ordinal);
        // A part missing: the array's length no longer fits what is there.
        Assert.Throws<InvalidDataException>(() => Payload.Of(parts[..2]).Read(r => r.Doubles()));
        Assert.Throws<InvalidDataException>(() => Payload.Of(parts).Read(r => (r.Doubles(), r.ReadInt32())));
    }
}
