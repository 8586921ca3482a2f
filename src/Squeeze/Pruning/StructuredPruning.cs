using Squeeze.Calibration;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Pruning;

/// <summary>
/// Structured pruning of one block's matrices together, so that the removed structure saves bytes and work in every
/// matrix it touches: whole attention heads (column groups of <c>attn_output</c> chosen by the method, then the rows of
/// those heads in <c>attn_q</c>, and in <c>attn_k</c>/<c>attn_v</c> the rows of key/value heads all of whose query heads
/// went), and whole feed-forward units (columns of <c>ffn_down</c>, then the same rows of <c>ffn_gate</c> and
/// <c>ffn_up</c>). The method scores, and for SparseGPT compensates, in the output projection; the input projections'
/// rows are removed as they are.
/// </summary>
public static class StructuredPruning
{
    /// <summary>Removes <c>round(fraction · heads)</c> attention heads of block <paramref name="layer"/>.</summary>
    public static IReadOnlyList<(string Name, PruningResult Result)> Heads(Model model, int layer, double fraction, PruningMethod method,
        CalibrationStatistics? stats = null, PruningOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var config = model.Config;
        string output = TensorNames.AttentionOutput(layer);
        var result = PruneColumns(model, output, new SparsityPattern.Columns(fraction, config.HeadDim), method, stats?.Get(layer, LinearInput.AttentionOutput), options);
        var headGone = new bool[config.HeadCount];
        for (int h = 0; h < config.HeadCount; h++)
            headGone[h] = !result.Mask[h * config.HeadDim];
        int group = config.HeadCount / config.KvHeadCount;
        var kvGone = new bool[config.KvHeadCount];
        for (int g = 0; g < config.KvHeadCount; g++)
            kvGone[g] = headGone.Skip(g * group).Take(group).All(gone => gone);
        return
        [
            (output, result),
            (TensorNames.Query(layer), WithoutRows(model, TensorNames.Query(layer), headGone, config.HeadDim)),
            (TensorNames.Key(layer), WithoutRows(model, TensorNames.Key(layer), kvGone, config.HeadDim)),
            (TensorNames.Value(layer), WithoutRows(model, TensorNames.Value(layer), kvGone, config.HeadDim)),
        ];
    }

    /// <summary>Removes <c>round(fraction · hidden)</c> feed-forward units of block <paramref name="layer"/>.</summary>
    public static IReadOnlyList<(string Name, PruningResult Result)> FeedForwardUnits(Model model, int layer, double fraction, PruningMethod method,
        CalibrationStatistics? stats = null, PruningOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        string down = TensorNames.Down(layer);
        var result = PruneColumns(model, down, new SparsityPattern.Columns(fraction), method, stats?.Get(layer, LinearInput.FeedForwardDown), options);
        var unitGone = new bool[model.Config.HiddenDim];
        for (int u = 0; u < unitGone.Length; u++)
            unitGone[u] = !result.Mask[u];
        return
        [
            (down, result),
            (TensorNames.Gate(layer), WithoutRows(model, TensorNames.Gate(layer), unitGone, 1)),
            (TensorNames.Up(layer), WithoutRows(model, TensorNames.Up(layer), unitGone, 1)),
        ];
    }

    private static PruningResult PruneColumns(Model model, string name, SparsityPattern.Columns pattern, PruningMethod method, ActivationStatistics? input, PruningOptions? options)
    {
        var w = model.Weight(name);
        return Pruner.Prune(w.Decode(), w.Rows, w.Columns, pattern, method, input, options);
    }

    // The weight with rows [g·groupSize, (g + 1)·groupSize) removed wherever gone[g].
    private static PruningResult WithoutRows(Model model, string name, bool[] gone, int groupSize)
    {
        var w = model.Weight(name);
        var values = w.Decode();
        var mask = new bool[values.Length];
        int columns = w.Columns;
        for (int r = 0; r < w.Rows; r++)
        {
            bool keep = !gone[r / groupSize];
            mask.AsSpan(r * columns, columns).Fill(keep);
            if (!keep)
                values.AsSpan(r * columns, columns).Clear();
        }
        return new PruningResult(values, mask, w.Rows, columns);
    }
}
