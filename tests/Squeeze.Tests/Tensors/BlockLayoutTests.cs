using System.Runtime.CompilerServices;
using Squeeze.Tensors;
using Squeeze.Tensors.Blocks;

namespace Squeeze.Tests.Tensors;

/// <summary>Each block struct has exactly ggml's size (the static_asserts of ggml-common.h).</summary>
public class BlockLayoutTests
{
    [Fact]
    public void Block_structs_have_ggml_sizes()
    {
        Assert.Equal(18, Unsafe.SizeOf<BlockQ4_0>());
        Assert.Equal(20, Unsafe.SizeOf<BlockQ4_1>());
        Assert.Equal(22, Unsafe.SizeOf<BlockQ5_0>());
        Assert.Equal(24, Unsafe.SizeOf<BlockQ5_1>());
        Assert.Equal(34, Unsafe.SizeOf<BlockQ8_0>());
        Assert.Equal(36, Unsafe.SizeOf<BlockQ8_1>());
        Assert.Equal(18, Unsafe.SizeOf<BlockIQ4_NL>());
        Assert.Equal(84, Unsafe.SizeOf<BlockQ2_K>());
        Assert.Equal(110, Unsafe.SizeOf<BlockQ3_K>());
        Assert.Equal(144, Unsafe.SizeOf<BlockQ4_K>());
        Assert.Equal(176, Unsafe.SizeOf<BlockQ5_K>());
        Assert.Equal(210, Unsafe.SizeOf<BlockQ6_K>());
        Assert.Equal(292, Unsafe.SizeOf<BlockQ8_K>());
    }

    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q4_1)]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.Q5_1)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q8_1)]
    [InlineData(GgmlType.IQ4_NL)]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.Q3_K)]
    [InlineData(GgmlType.Q4_K)]
    [InlineData(GgmlType.Q5_K)]
    [InlineData(GgmlType.Q6_K)]
    [InlineData(GgmlType.Q8_K)]
    public void Block_struct_size_matches_GgmlTypes(GgmlType type)
    {
        int size = type switch
        {
            GgmlType.Q4_0 => Unsafe.SizeOf<BlockQ4_0>(),
            GgmlType.Q4_1 => Unsafe.SizeOf<BlockQ4_1>(),
            GgmlType.Q5_0 => Unsafe.SizeOf<BlockQ5_0>(),
            GgmlType.Q5_1 => Unsafe.SizeOf<BlockQ5_1>(),
            GgmlType.Q8_0 => Unsafe.SizeOf<BlockQ8_0>(),
            GgmlType.Q8_1 => Unsafe.SizeOf<BlockQ8_1>(),
            GgmlType.IQ4_NL => Unsafe.SizeOf<BlockIQ4_NL>(),
            GgmlType.Q2_K => Unsafe.SizeOf<BlockQ2_K>(),
            GgmlType.Q3_K => Unsafe.SizeOf<BlockQ3_K>(),
            GgmlType.Q4_K => Unsafe.SizeOf<BlockQ4_K>(),
            GgmlType.Q5_K => Unsafe.SizeOf<BlockQ5_K>(),
            GgmlType.Q6_K => Unsafe.SizeOf<BlockQ6_K>(),
            _ => Unsafe.SizeOf<BlockQ8_K>(),
        };
        Assert.Equal(GgmlTypes.BlockBytes(type), size);
    }
}
