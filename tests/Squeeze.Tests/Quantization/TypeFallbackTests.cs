using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Tests.Quantization;

/// <summary>llama.cpp's fallback table for rows a type's block does not divide.</summary>
public class TypeFallbackTests
{
    [Theory]
    [InlineData(GgmlType.Q2_K, 288, GgmlType.IQ4_NL)]
    [InlineData(GgmlType.Q3_K, 288, GgmlType.IQ4_NL)]
    [InlineData(GgmlType.Q4_K, 288, GgmlType.Q5_0)]
    [InlineData(GgmlType.Q5_K, 288, GgmlType.Q5_1)]
    [InlineData(GgmlType.Q6_K, 288, GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_K, 48, GgmlType.F16)]
    [InlineData(GgmlType.Q6_K, 100, GgmlType.F16)]
    [InlineData(GgmlType.Q4_0, 48, GgmlType.F16)]
    [InlineData(GgmlType.IQ4_NL, 16, GgmlType.F16)]
    public void Rows_that_do_not_fit_fall_back_with_a_reason(GgmlType wanted, long columns, GgmlType expected)
    {
        var choice = TypeFallback.Resolve(wanted, columns);
        Assert.Equal(expected, choice.Type);
        Assert.Contains(columns.ToString(), choice.Reason);
        Assert.Contains(wanted.ToString(), choice.Reason);
    }

    [Theory]
    [InlineData(GgmlType.Q4_K, 768)]
    [InlineData(GgmlType.Q2_K, 256)]
    [InlineData(GgmlType.Q4_0, 288)]
    [InlineData(GgmlType.F16, 7)]
    public void Rows_that_fit_keep_the_type(GgmlType wanted, long columns)
    {
        var choice = TypeFallback.Resolve(wanted, columns);
        Assert.Equal(wanted, choice.Type);
        Assert.Equal("", choice.Reason);
    }
}
