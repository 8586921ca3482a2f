using Squeeze.Tensors;

namespace Squeeze.Tests.Tensors;

public class GgmlTypeTests
{
    [Theory]
    [InlineData(GgmlType.Q4_0, 32, 18)]
    [InlineData(GgmlType.Q4_1, 32, 20)]
    [InlineData(GgmlType.Q5_0, 32, 22)]
    [InlineData(GgmlType.Q5_1, 32, 24)]
    [InlineData(GgmlType.Q8_0, 32, 34)]
    [InlineData(GgmlType.IQ4_NL, 32, 18)]
    [InlineData(GgmlType.Q2_K, 256, 84)]
    [InlineData(GgmlType.Q3_K, 256, 110)]
    [InlineData(GgmlType.Q4_K, 256, 144)]
    [InlineData(GgmlType.Q5_K, 256, 176)]
    [InlineData(GgmlType.Q6_K, 256, 210)]
    [InlineData(GgmlType.Q8_K, 256, 292)]
    public void Block_geometry_matches_ggml(GgmlType type, int blockSize, int blockBytes)
    {
        Assert.Equal(blockSize, GgmlTypes.BlockSize(type));
        Assert.Equal(blockBytes, GgmlTypes.BlockBytes(type));
    }

    [Fact]
    public void Row_length_that_does_not_fit_the_block_is_rejected()
    {
        var e = Assert.Throws<ArgumentException>(() => GgmlTypes.RowBytes(GgmlType.Q4_K, 288));
        Assert.Contains("288", e.Message);
    }
}
