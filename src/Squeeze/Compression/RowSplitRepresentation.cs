using System.Globalization;
using Squeeze.Models;
using Squeeze.Weights;

namespace Squeeze.Compression;

/// <summary>
/// A token-indexed matrix (the token embedding, the classifier) with its rows split by use (<see cref="RowSplitWeight"/>,
/// the native scheme <c>split</c>): the <paramref name="HotRows"/> rows of the tokens the calibration text uses most
/// (ties by token id) in <paramref name="Hot"/>, the others in <paramref name="Cold"/>. Spec
/// <c>split:HOTROWS:HOTSPEC/COLDSPEC</c>, e.g. <c>split:4096:uniform:6:~64/uniform:3:~64</c>. It needs the calibration
/// text's token counts (<see cref="NativeTensorEncoder.TokenCounts"/>); without them it fits no tensor.
/// </summary>
public sealed record RowSplitRepresentation(int HotRows, NativeRepresentation Hot, NativeRepresentation Cold) : NativeRepresentation
{
    public override string Spec => $"split:{HotRows.ToString(CultureInfo.InvariantCulture)}:{Hot.Spec}/{Cold.Spec}";

    public override bool Fits(int rows, int columns) => rows > HotRows && Hot.Fits(HotRows, columns) && Cold.Fits(rows - HotRows, columns);

    public override bool Fits(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.TokenCounts is { } counts && name is TensorNames.TokenEmbedding or TensorNames.Output
            && encoder.Rows(name) == counts.Length && Fits(encoder.Rows(name), encoder.Columns(name));
    }

    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        if (!Fits(encoder, name))
            throw new ArgumentException($"{name}: {Spec} needs a token-indexed matrix of more than {HotRows} rows and the calibration text's token counts");
        var counts = encoder.TokenCounts!;
        var hot = new bool[counts.Length];
        foreach (int t in ByUse(counts).AsSpan(0, HotRows))
            hot[t] = true;
        int[] hotRows = [.. Enumerable.Range(0, hot.Length).Where(r => hot[r])];
        int[] coldRows = [.. Enumerable.Range(0, hot.Length).Where(r => !hot[r])];
        var hotEncoded = Hot.Encode(encoder.ForRows(name, hotRows), name);
        var coldEncoded = Cold.Encode(encoder.ForRows(name, coldRows), name);
        var weight = new RowSplitWeight(name, hot, hotEncoded.Weight, coldEncoded.Weight);
        return new NativeEncoded(weight, $"{hotEncoded.Encoding} / {coldEncoded.Encoding}", encoder.RelativeError(name, weight));
    }

    /// <summary>Token ids by use: the most used first, ties by id (the order hot rows are taken in).</summary>
    public static int[] ByUse(long[] counts)
    {
        ArgumentNullException.ThrowIfNull(counts);
        return [.. Enumerable.Range(0, counts.Length).OrderByDescending(t => counts[t]).ThenBy(t => t)];
    }

    /// <summary>How often <paramref name="text"/> (tokenized with BOS, its first <paramref name="maxTokens"/> tokens; 0:
    /// all) uses each token of <paramref name="model"/>'s vocabulary.</summary>
    public static long[] CountTokens(Model model, string text, long maxTokens = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(text);
        var counts = new long[model.Config.VocabSize];
        int[] tokens = model.Tokenizer.Encode(text, addBos: true);
        foreach (int t in maxTokens > 0 && tokens.Length > maxTokens ? tokens[..(int)maxTokens] : tokens)
        {
            if ((uint)t < (uint)counts.Length)
                counts[t]++;
        }
        return counts;
    }

    /// <summary>Parses <c>split:HOTROWS:HOTSPEC/COLDSPEC</c> (the prefix <c>split:</c> already recognized).</summary>
    internal static RowSplitRepresentation ParseSplit(string spec)
    {
        var rest = spec["split:".Length..];
        int colon = rest.IndexOf(':', StringComparison.Ordinal);
        var halves = colon < 0 ? [] : rest[(colon + 1)..].Split('/');
        if (colon < 0 || !int.TryParse(rest[..colon], NumberStyles.None, CultureInfo.InvariantCulture, out int hotRows) || hotRows < 1 || halves.Length != 2)
            throw new FormatException($"representation '{spec}' is not split:HOTROWS:HOTSPEC/COLDSPEC (HOTROWS ≥ 1)");
        return new RowSplitRepresentation(hotRows, NativeRepresentation.Parse(halves[0]), NativeRepresentation.Parse(halves[1]));
    }
}
