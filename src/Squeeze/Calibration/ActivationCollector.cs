using Squeeze.Runtime;

namespace Squeeze.Calibration;

/// <summary>
/// An <see cref="IActivationObserver"/> that accumulates <see cref="ActivationStatistics"/> for every observed
/// <c>(layer, kind)</c>, or only for the layers in <see cref="Layers"/> (so a large model's Gram matrices can be
/// collected one layer at a time, one pass per set of layers).
/// </summary>
public sealed class ActivationCollector : IActivationObserver
{
    private readonly SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics> entries = [];

    /// <summary>Collects for the given layers (−1 is the output classifier), or all when null.</summary>
    public ActivationCollector(bool collectGram, IReadOnlySet<int>? layers = null, int threads = 1)
    {
        CollectGram = collectGram;
        Layers = layers;
        Threads = Math.Max(1, threads);
    }

    /// <summary>True when the Gram matrix XᵀX is accumulated too.</summary>
    public bool CollectGram { get; }

    /// <summary>Layers collected (−1 is the output classifier); null means all.</summary>
    public IReadOnlySet<int>? Layers { get; }

    /// <summary>Threads for the Gram matrix products (the result does not depend on it).</summary>
    public int Threads { get; }

    /// <summary>The statistics collected so far, ordered by layer then kind.</summary>
    public IReadOnlyList<ActivationStatistics> Entries => [.. entries.Values];

    /// <summary>True when <paramref name="layer"/> is collected.</summary>
    public bool Wants(int layer) => Layers is null || Layers.Contains(layer);

    /// <inheritdoc />
    public void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens)
    {
        if (!Wants(layer) || tokens == 0)
            return;
        Entry(layer, kind, input, tokens).Accumulate(input, tokens, Threads);
    }

    /// <inheritdoc />
    public void ObserveExpert(int layer, LinearInput kind, int expert, ReadOnlySpan<float> input, int tokens)
    {
        if (!Wants(layer) || tokens == 0)
            return;
        Entry(layer, kind, input, tokens).AccumulateExpert(expert, input, tokens, Threads);
    }

    private ActivationStatistics Entry(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens)
    {
        if (input.Length % tokens != 0)
            throw new ArgumentException($"layer {layer} {kind}: {input.Length} values are not {tokens} whole rows", nameof(input));
        int width = input.Length / tokens;
        if (!entries.TryGetValue((layer, kind), out var stats))
        {
            stats = new ActivationStatistics(layer, kind, width, CollectGram);
            entries.Add((layer, kind), stats);
        }
        else if (stats.Width != width)
        {
            throw new ArgumentException($"layer {layer} {kind}: rows of {width} after rows of {stats.Width}", nameof(input));
        }
        return stats;
    }
}
