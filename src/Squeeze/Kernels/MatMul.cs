using Squeeze.Tensors;

namespace Squeeze.Kernels;

/// <summary>Products of a weight matrix in any <see cref="GgmlType"/> with f32 activations.</summary>
public static class MatMul
{
    /// <summary><c>y[t, r] = Σ_c weight[r, c] · x[t, c]</c> for every token t: <paramref name="x"/> is
    /// [tokens, weight.Columns], <paramref name="y"/> is [tokens, weight.Rows], both row-major.</summary>
    public static void Multiply(Tensor weight, ReadOnlySpan<float> x, int tokens, ComputeContext context, Span<float> y)
        => throw new NotImplementedException("being written on branch kernels");
}
