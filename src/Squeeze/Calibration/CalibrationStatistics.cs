using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tensors;

namespace Squeeze.Calibration;

/// <summary>
/// The result of a calibration run: which model and text it came from, and the activation statistics of every
/// collected <c>(layer, kind)</c>, ordered by layer then kind.
/// </summary>
public sealed class CalibrationStatistics
{
    /// <summary>Wraps statistics of <paramref name="model"/> collected on a text with hash <paramref name="textHash"/>.</summary>
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

    /// <summary>The statistics of each collected input, ordered by layer then kind.</summary>
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

/// <summary>Which calibration input feeds which weight tensor (llama.cpp's GGUF names).</summary>
public static class LinearInputs
{
    /// <summary>The <c>(layer, kind)</c> whose statistics describe the input of <paramref name="tensorName"/>: attn_q/k/v →
    /// Attention, attn_output → AttentionOutput, ffn_gate/up (and the router, the shared expert's gate/up) → FeedForward, ffn_down → FeedForwardDown, the routed experts'
    /// ffn_gate_exps/ffn_up_exps → ExpertFeedForward and ffn_down_exps → ExpertFeedForwardDown (per expert inside), the
    /// shared expert's ffn_down_shexp → SharedExpertDown, output.weight →
    /// (−1, Output). False for tensors that are not linear layers (norms, embeddings).</summary>
    public static bool TryGet(string tensorName, out int layer, out LinearInput kind)
    {
        ArgumentNullException.ThrowIfNull(tensorName);
        layer = -1;
        kind = LinearInput.Output;
        if (tensorName == TensorNames.Output)
            return true;
        if (!tensorName.StartsWith("blk.", StringComparison.Ordinal))
            return false;
        int dot = tensorName.IndexOf('.', 4);
        if (dot < 0 || !int.TryParse(tensorName.AsSpan(4, dot - 4), System.Globalization.NumberStyles.None, null, out layer))
            return false;
        string rest = tensorName[(dot + 1)..];
        LinearInput? found = rest switch
        {
            "attn_q.weight" or "attn_k.weight" or "attn_v.weight" => LinearInput.Attention,
            "attn_output.weight" => LinearInput.AttentionOutput,
            "ffn_gate.weight" or "ffn_up.weight" => LinearInput.FeedForward,
            "ffn_down.weight" => LinearInput.FeedForwardDown,
            "ffn_gate_inp.weight" or "ffn_gate_shexp.weight" or "ffn_up_shexp.weight" => LinearInput.FeedForward,
            "ffn_gate_exps.weight" or "ffn_up_exps.weight" => LinearInput.ExpertFeedForward,
            "ffn_down_exps.weight" => LinearInput.ExpertFeedForwardDown,
            "ffn_down_shexp.weight" => LinearInput.SharedExpertDown,
            _ => null,
        };
        if (found is null)
        {
            layer = -1;
            return false;
        }
        kind = found.Value;
        return true;
    }
}
