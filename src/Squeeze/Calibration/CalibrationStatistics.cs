using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Calibration;

/// <summary>
/// The result of a calibration run: which model and text it came from, and the activation statistics of every
/// collected <c>(layer, kind)</c>, ordered by layer then kind.
/// </summary>
public sealed class CalibrationStatistics
{
    public CalibrationStatistics(ModelIdentity model, ulong textHash, long tokenCount, int contextLength, IReadOnlyList<ActivationStatistics> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        Model = model;
        TextHash = textHash;
        TokenCount = tokenCount;
        ContextLength = contextLength;
        Entries = entries;
    }

    /// <summary>The model the statistics were collected on.</summary>
    public ModelIdentity Model { get; }

    /// <summary>XxHash64 of the calibration text's UTF-8 bytes.</summary>
    public ulong TextHash { get; }

    /// <summary>Tokens run through the model (whole chunks).</summary>
    public long TokenCount { get; }

    /// <summary>Tokens per chunk.</summary>
    public int ContextLength { get; }

    public IReadOnlyList<ActivationStatistics> Entries { get; }

    /// <summary>The statistics of one layer input, or null when not collected.</summary>
    public ActivationStatistics? Find(int layer, LinearInput kind) => Entries.FirstOrDefault(e => e.Layer == layer && e.Kind == kind);

    /// <summary>The statistics of one layer input; throws when not collected.</summary>
    public ActivationStatistics Get(int layer, LinearInput kind) => Find(layer, kind)
        ?? throw new KeyNotFoundException($"no calibration statistics for layer {layer} {kind}");

    /// <summary>Throws a <see cref="ModelFormatException"/> naming <paramref name="path"/> and both models when the
    /// statistics were collected on a model other than <paramref name="model"/>.</summary>
    public void EnsureMatches(Model model, string path)
    {
        var identity = ModelIdentity.Of(model);
        if (identity.Hash != Model.Hash)
            throw new ModelFormatException(path, $"calibration statistics of {Model}, not of {identity}");
    }
}
