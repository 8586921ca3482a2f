using Squeeze.Coding;
using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Weights;

public unsafe class LosslessWeightTests
{
    [Fact]
    public void DFloat11_split_and_join_give_back_every_bf16_bit_pattern()
    {
        var all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var signMantissa = new byte[all.Length];
        var exponents = new byte[all.Length];
        DFloat11.Split(all, signMantissa, exponents);
        var back = new ushort[all.Length];
        DFloat11.Join(signMantissa, exponents, back);
        Assert.Equal(all, back);
    }

    [Theory]
    [InlineData(1, 0)]
    [InlineData(4, 0)]
    [InlineData(300, 7)]
    public void DFloat11_weight_round_trips_bit_for_bit_and_is_smaller(int rows, int chunkRows)
    {
        int columns = 288;
        var weight = WeightTestData.Bf16("w", WeightTestData.Gaussian(rows, columns, rows), rows, columns);
        var coded = DFloat11Weight.Encode(weight, chunkRows, threads: 2);
        var (signMantissa, exponents) = coded.Code(threads: 1);
        var decoded = DFloat11Weight.Decode("w", rows, columns, signMantissa, exponents, coded.ChunkRows, threads: 2);
        Assert.Equal(new ReadOnlySpan<byte>(weight.Tensor.Data, (int)weight.StoredBytes).ToArray(),
            new ReadOnlySpan<byte>(decoded.Decoded.Tensor.Data, (int)weight.StoredBytes).ToArray());
        Assert.Equal(coded.StoredBytes, decoded.StoredBytes);
        if (rows >= 100) // smaller tensors pay mostly for the 512-byte frequency table
            Assert.InRange((double)coded.StoredBytes / weight.StoredBytes, 0.6, 0.8);

        using var context = new ComputeContext(1);
        var x = WeightTestData.Gaussian(2, columns, 3, scale: 1);
        var expected = new float[2 * rows];
        var actual = new float[2 * rows];
        weight.Multiply(x, 2, context, expected);
        decoded.Multiply(x, 2, context, actual);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void DFloat11_refuses_other_types()
        => Assert.Throws<ArgumentException>(() => DFloat11Weight.Encode(WeightTestData.F32("w", new float[32], 1, 32)));

    [Theory]
    [InlineData(2, false)]
    [InlineData(3, false)]
    [InlineData(4, true)]
    [InlineData(8, false)]
    public void Entropy_coded_uniform_weight_round_trips_its_codes_and_takes_fewer_bytes(int bits, bool symmetric)
    {
        int rows = 64, columns = 288;
        var scheme = new UniformScheme(bits, 32, symmetric);
        var uniform = UniformWeight.Encode("w", WeightTestData.Gaussian(rows, columns, bits), rows, columns, scheme);
        var coded = EntropyCodedWeight.Encode(uniform, chunkRows: 10, threads: 2);
        var streams = coded.Code(threads: 1);
        Assert.Equal(7, streams.ChunkLengths.Length);
        var decoded = EntropyCodedWeight.Decode("w", rows, columns, scheme, streams, 10, uniform.Scales.ToArray(), symmetric ? null : uniform.Mins.ToArray(), threads: 2);
        Assert.Equal(uniform.Codes.ToArray(), decoded.Decoded.Codes.ToArray());
        Assert.Equal(uniform.Decode(), decoded.Decode());
        Assert.Equal(coded.StoredBytes, decoded.StoredBytes);
        Assert.True(coded.StoredBytes < uniform.StoredBytes, $"{coded.StoredBytes} coded vs {uniform.StoredBytes} packed");
        Assert.StartsWith("entropy uniform", coded.Scheme, StringComparison.Ordinal);
    }

    [Fact]
    public void Entropy_decode_refuses_streams_of_another_shape()
    {
        var scheme = new UniformScheme(3, 32, false);
        var uniform = UniformWeight.Encode("w", WeightTestData.Gaussian(8, 64, 1), 8, 64, scheme);
        var streams = EntropyCodedWeight.Encode(uniform, 4).Code(1);
        Assert.Throws<InvalidDataException>(() => EntropyCodedWeight.Decode("w", 8, 64, new UniformScheme(4, 32, false), streams, 4, uniform.Scales.ToArray(), uniform.Mins.ToArray(), 1));
        Assert.Throws<InvalidDataException>(() => EntropyCodedWeight.Decode("w", 8, 64, scheme, streams, 2, uniform.Scales.ToArray(), uniform.Mins.ToArray(), 1));
    }
}
