using System.Globalization;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Tuning;
using Squeeze.Weights;

namespace Squeeze.Compression.Representations;

/// <summary>
/// A token-indexed matrix (the token embedding, the classifier) with its rows split by use (<see cref="RowSplitWeight"/>,
/// the native scheme <c>split</c>): the <paramref name="HotRows"/> rows of the tokens the model uses most on the
/// calibration text (<see cref="TokenUsage.Measure"/>; ties by token id) in <paramref name="Hot"/>, the others in
/// <paramref name="Cold"/>, which may itself be a split of those rows (tiers). Spec <c>split:HOTROWS:HOTSPEC/COLDSPEC</c>,
/// e.g. <c>split:4096:uniform:6:~64/uniform:3:~64</c> or, in three tiers,
/// <c>split:2048:uniform:5:~64/split:4096:uniform:3:~64/vq:8:10</c>. It needs the token usage
/// (<see cref="TensorEncoder.TokenUsage"/>); without it it fits no tensor.
/// </summary>
public sealed record RowSplitRepresentation(int HotRows, NativeRepresentation Hot, NativeRepresentation Cold) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => $"split:{HotRows.ToString(CultureInfo.InvariantCulture)}:{Hot.Spec}/{Cold.Spec}";

    /// <inheritdoc/>
    public override bool NeedsTokenUsage => true;

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => rows > HotRows && Hot.Fits(HotRows, columns) && Cold.Fits(rows - HotRows, columns);

    /// <summary>A token-indexed matrix (the token embedding, the classifier) whose shape <see cref="Fits(int, int)"/>.</summary>
    public override bool MayFit(string name, int rows, int columns) => name is TensorNames.TokenEmbedding or TensorNames.Output && Fits(rows, columns);

    /// <inheritdoc/>
    public override IReadOnlyList<string> KeptPerInput => [.. Hot.KeptPerInput.Union(Cold.KeptPerInput)];

    /// <summary>Each half's encoder (<see cref="TensorEncoder.ForRows"/>) holds its rows' f32 values and their decoded
    /// values (two copies of the whole tensor between them), and a nested split its own halves' while it is encoded: 5.8
    /// times the embedding's f32 size (0.22 GB) for stories15M's four-tier defaults, whose job measured 0.14 GB above an
    /// estimate without this term.</summary>
    public override long NestedValuesBytes(int rows, int columns)
        => 2L * rows * columns * sizeof(float) + Math.Max(Hot.NestedValuesBytes(HotRows, columns), Cold.NestedValuesBytes(rows - HotRows, columns));

    /// <summary>The row mask and both groups' bounds.</summary>
    public override long StoredBytesBound(int rows, int columns)
        => RowSplitWeight.MaskBytes(rows) + Hot.StoredBytesBound(HotRows, columns) + Cold.StoredBytesBound(rows - HotRows, columns);

    /// <inheritdoc/>
    public override bool Fits(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        if (encoder.TokenUsage is not { } usage || name is not (TensorNames.TokenEmbedding or TensorNames.Output)
            || encoder.Rows(name) != usage.Length || !Fits(usage.Length, encoder.Columns(name)))
            return false;
        var (_, hotRows, coldRows) = Groups(usage);
        return Hot.Fits(encoder.ForRows(name, hotRows), name) && Cold.Fits(encoder.ForRows(name, coldRows), name);
    }

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        if (!Fits(encoder, name))
            throw new ArgumentException($"{name}: {Spec} needs a token-indexed matrix of more than {HotRows} rows and the calibration text's token usage");
        var (hot, hotRows, coldRows) = Groups(encoder.TokenUsage!);
        var hotEncoded = Hot.Encode(encoder.ForRows(name, hotRows), name);
        var coldEncoded = Cold.Encode(encoder.ForRows(name, coldRows), name);
        var weight = new RowSplitWeight(name, hot, hotEncoded.Weight, coldEncoded.Weight);
        return new NativeEncoded(weight, $"{hotEncoded.Encoding} / {coldEncoded.Encoding}", encoder.RelativeError(name, weight));
    }

    /// <summary>Which rows are hot (the <see cref="HotRows"/> most used), and the hot rows and the cold rest, each ascending.</summary>
    private (bool[] IsHot, int[] Hot, int[] Cold) Groups(double[] usage)
    {
        var hot = new bool[usage.Length];
        foreach (int t in ByUse(usage).AsSpan(0, HotRows))
            hot[t] = true;
        return (hot, [.. Enumerable.Range(0, hot.Length).Where(r => hot[r])], [.. Enumerable.Range(0, hot.Length).Where(r => !hot[r])]);
    }

    /// <summary>Token ids by use: the most used first, ties by id (the order hot rows are taken in).</summary>
    public static int[] ByUse(double[] usage)
    {
        ArgumentNullException.ThrowIfNull(usage);
        return [.. Enumerable.Range(0, usage.Length).OrderByDescending(t => usage[t]).ThenBy(t => t)];
    }
}

/// <summary><c>split:HOTROWS:HOTSPEC/COLDSPEC</c>: <see cref="RowSplitRepresentation"/>, the native scheme <c>split</c>,
/// each half tunable as its own representation. Defaults, for the token embedding or classifier: seven splits of the rows
/// into tiers by token usage: the 512 to 2,048 most used tokens in 4- to 8-bit uniform codes, the next few thousand in 2-
/// to 6-bit codes, and the rest (tokens the model hardly uses, whose rows only have to keep their logits low) in 16-dim
/// vector codes of 0.375 or 0.5 bits per weight; the tiers that measured best for stories15M (docs/BENCHMARKS.md).</summary>
public sealed class SplitFamily : RepresentationFamily
{
    private static readonly string[] DefaultSpecs =
    [
        "split:512:uniform:4:~64/split:1536:uniform:3:~64/split:4096:uniform:2:~64/vq:16:6",
        "split:512:uniform:5:~64/split:1536:uniform:4:~64/split:4096:uniform:2:~64/vq:16:6",
        "split:1024:uniform:5:~64/split:3072:uniform:4:~64/split:4096:uniform:2:~64/vq:16:6",
        "split:2048:uniform:5:~64/split:4096:uniform:4:~64/vq:16:6",
        "split:1024:uniform:6:~64/split:3072:uniform:5:~64/split:4096:uniform:3:~64/vq:16:6",
        "split:2048:uniform:6:~64/split:4096:uniform:5:~64/split:8192:uniform:3:~64/vq:16:8",
        "split:2048:uniform:8:~64/split:6144:uniform:6:~64/split:8192:uniform:4:~64/vq:16:8",
    ];

    private IReadOnlyList<NativeRepresentation>? defaults;

    private SplitFamily()
    {
    }

    /// <summary>The family.</summary>
    public static SplitFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["split"];

    /// <inheritdoc/>
    public override string Syntax => "split:HOTROWS:HOTSPEC/COLDSPEC";

    /// <inheritdoc/>
    public override string Help => "the embedding or classifier: the rows of the HOTROWS tokens the calibration text uses most in HOTSPEC, the rest in COLDSPEC (which may be another split)";

    // Parsed on first use: parsing goes through the registry, which holds this family.
    /// <inheritdoc/>
    public override IReadOnlyList<NativeRepresentation> Defaults => defaults ??= [.. DefaultSpecs.Select(NativeRepresentation.Parse)];

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [SplitNativeScheme.Instance];

    /// <inheritdoc/>
    public override IReadOnlyList<TunableFactory> Tunables => [TunableWeight.Split];

    /// <summary>HOTSPEC ends at the first <c>/</c>, so COLDSPEC may be another split and HOTSPEC may not.</summary>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string rest = spec.Rest;
        int colon = rest.IndexOf(':', StringComparison.Ordinal);
        int slash = rest.IndexOf('/', StringComparison.Ordinal);
        if (colon < 0 || slash < colon || !int.TryParse(rest[..colon], NumberStyles.None, CultureInfo.InvariantCulture, out int hotRows) || hotRows < 1)
            throw spec.Fail($"expected {Syntax} (HOTROWS ≥ 1)");
        return new RowSplitRepresentation(hotRows, NativeRepresentation.Parse(rest[(colon + 1)..slash]), NativeRepresentation.Parse(rest[(slash + 1)..]));
    }
}
