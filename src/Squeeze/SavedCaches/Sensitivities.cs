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
internal sealed class Sensitivities(Model model, int positions, int window) : IActivationObserver
{
    private readonly ModelConfig config = model.Config;
    private readonly double[][] squares = [.. Enumerable.Range(0, model.Config.LayerCount).Select(_ => new double[model.Config.QDim])]; // [layers][qDim]
    private readonly long[] rows = new long[model.Config.LayerCount];
    private readonly int first = Math.Max(0, positions - window); // the window: positions [first, positions)
    private readonly float[][] queries = [.. Enumerable.Range(0, model.Config.LayerCount).Select(_ => new float[(positions - Math.Max(0, positions - window)) * model.Config.QDim])]; // [layers][window, qDim] before RoPE

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
                float q = TensorPrimitives.Dot(input.Slice(t * w.Length, w.Length), w);
                sums[r] += (double)q * q;
                long pos = rows[layer] + t;
                if (pos >= first)
                    queries[layer][(pos - first) * config.QDim + r] = q;
            }
        }
        rows[layer] += tokens;
    }

    /// <inheritdoc/>
    /// <remarks>The experts' inputs say nothing about the keys.</remarks>
    public void ObserveExpert(int layer, LinearInput kind, int expert, ReadOnlySpan<float> input, int tokens)
    {
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

    /// <summary>
    /// How much each saved position of <paramref name="layer"/> is attended: for every key/value head, the mean over
    /// the window's queries (rotated as the runtime rotates them, with <paramref name="cos"/> / <paramref name="sin"/>)
    /// and the query heads of its group of the squared attention weight a² the position gets (an error in a position's
    /// key or value moves the attention's output in proportion to a), [kvHeads, positions], from the
    /// <paramref name="keys"/> after RoPE [positions, kvDim]. SnapKV's observation: the attention of the prompt's last
    /// positions predicts what generation will attend to.
    /// </summary>
    public double[] Attention(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int headDim = config.HeadDim, half = headDim / 2, qDim = config.QDim, kvDim = config.KvDim;
        int count = keys.Length / kvDim, group = config.HeadCount / config.KvHeadCount;
        float scale = config.QueryScale ?? 1f / MathF.Sqrt(headDim);
        var weights = new double[config.KvHeadCount * count];
        var q = new float[headDim];
        var scores = new float[count];
        int windowRows = queries[layer].Length / qDim;
        for (int i = 0; i < windowRows; i++)
        {
            int pos = first + i;
            float positionScale = config.AttentionTemperatureScale == 0 ? scale : scale * Transformer.AttentionTemperature(config, pos, deterministic: false);
            for (int h = 0; h < config.HeadCount; h++)
            {
                queries[layer].AsSpan(i * qDim + h * headDim, headDim).CopyTo(q);
                Transformer.Rope(q, cos.Slice(pos * half, half), sin.Slice(pos * half, half), config.RopeStyle);
                int kv = h / group, visible = Math.Min(pos + 1, count);
                for (int t = 0; t < visible; t++)
                    scores[t] = positionScale * TensorPrimitives.Dot(q, keys.Slice(t * kvDim + kv * headDim, headDim));
                TensorPrimitives.SoftMax(scores.AsSpan(0, visible), scores.AsSpan(0, visible));
                for (int t = 0; t < visible; t++)
                    weights[kv * count + t] += (double)scores[t] * scores[t] / (windowRows * group);
            }
        }
        return weights;
    }
}
