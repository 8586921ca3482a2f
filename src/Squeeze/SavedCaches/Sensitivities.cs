using System.Numerics.Tensors;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.SavedCaches;

/// <summary>
/// How much an error in each key channel of a layer moves the attention scores, for the <c>pre</c> storage's key steps.
/// Seen as an <see cref="IActivationObserver"/> during the prompt's prefill, it computes the queries before RoPE (the
/// attention's input times attn_q; biases, query norms and query scales left out) and keeps each query channel's sum of
/// squares, [layers][qDim]. A key channel's weight is the mean square of the query channels that read it, times
/// 1 / headDim (the attention's scale squared), summed over the query heads of its group and averaged over its rotary
/// pair (a key before RoPE meets its query at every relative angle). The cost is one more attn_q product per layer.
/// </summary>
internal sealed class Sensitivities(Model model) : IActivationObserver
{
    private readonly ModelConfig config = model.Config;
    private readonly double[][] squares = [.. Enumerable.Range(0, model.Config.LayerCount).Select(_ => new double[model.Config.QDim])]; // [layers][qDim]
    private readonly long[] rows = new long[model.Config.LayerCount];

    /// <inheritdoc/>
    public void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens)
    {
        if (kind != LinearInput.Attention)
            return;
        var query = model.Weight(TensorNames.Query(layer)); // [qDim, dim]
        var w = new float[query.Columns];
        var sums = squares[layer];
        for (int r = 0; r < query.Rows; r++)
        {
            query.DecodeRow(r, w);
            for (int t = 0; t < tokens; t++)
            {
                double q = TensorPrimitives.Dot(input.Slice(t * w.Length, w.Length), w);
                sums[r] += q * q;
            }
        }
        rows[layer] += tokens;
    }

    /// <summary>The key channels' weights of <paramref name="layer"/>, [kvDim].</summary>
    public double[] Keys(int layer)
    {
        int headDim = config.HeadDim, group = config.HeadCount / config.KvHeadCount;
        var weights = new double[config.KvDim];
        for (int r = 0; r < config.QDim; r++)
            weights[r / headDim / group * headDim + r % headDim] += squares[layer][r] / Math.Max(1, rows[layer]) / headDim;
        int half = headDim / 2;
        for (int h = 0; h < config.KvHeadCount; h++)
        {
            for (int i = 0; i < half; i++)
            {
                // the pair rotated together: (2i, 2i + 1) interleaved, (i, i + half) NeoX
                int a = h * headDim + (config.RopeStyle == RopeStyle.Interleaved ? 2 * i : i);
                int b = a + (config.RopeStyle == RopeStyle.Interleaved ? 1 : half);
                weights[a] = weights[b] = (weights[a] + weights[b]) / 2;
            }
        }
        return weights;
    }
}
