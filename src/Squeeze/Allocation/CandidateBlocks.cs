using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Allocation;

/// <summary>
/// How a candidate set walks a model one block at a time: for each block of statistics as it arrives (collected layer
/// by layer, or taken from a statistics file), an encoder with that block's statistics alone and the tensors of that
/// block; without statistics, one encoder for every tensor. A block's statistics (Gram matrices included) are garbage
/// once its tensors are encoded, so memory is one block's, whatever the model's depth.
/// </summary>
internal static class CandidateBlocks
{
    /// <summary>The encoder of each block, the block's statistics (null without), and the indices (into
    /// <paramref name="names"/>) of the tensors it encodes, in the order of <paramref name="names"/> within the block.</summary>
    /// <exception cref="InvalidOperationException">The blocks left a tensor unencoded.</exception>
    public static IEnumerable<(TensorEncoder Encoder, IReadOnlyDictionary<(int, LinearInput), ActivationStatistics>? Statistics, int[] Tensors)> Of(Model model, IReadOnlyList<string> names, IEnumerable<BlockStatistics>? blocks,
        CompressionOptions options, double[]? tokenUsage, CancellationToken cancellationToken)
    {
        if (blocks is null)
        {
            yield return (new TensorEncoder(model, null, options, cancellationToken, tokenUsage), null, [.. Enumerable.Range(0, names.Count)]);
            yield break;
        }
        int layers = model.Config.LayerCount;
        var byBlock = Enumerable.Range(0, names.Count).ToLookup(i => Compressor.LayerOf(names[i]) is var l && l < layers ? l : -1);
        var seen = new HashSet<int>();
        foreach (var block in blocks)
        {
            seen.Add(block.Layer);
            var statistics = block.Entries.ToDictionary(e => (e.Layer, e.Kind));
            yield return (new TensorEncoder(model, statistics, options, cancellationToken, tokenUsage), statistics, [.. byBlock[block.Layer]]);
        }
        var missed = byBlock.FirstOrDefault(g => !seen.Contains(g.Key));
        if (missed is not null)
            throw new InvalidOperationException($"no statistics block {missed.Key} reached tensor '{names[missed.First()]}'");
    }
}
