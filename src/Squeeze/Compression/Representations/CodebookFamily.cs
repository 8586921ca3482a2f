using System.Globalization;
using Squeeze.Formats.Native;

namespace Squeeze.Compression.Representations;

/// <summary>Non-uniform codebooks (<see cref="Weights.CodebookWeight"/>): 2^<paramref name="Bits"/> f16 values per group of
/// <paramref name="Group"/> (0: one codebook per row; with <paramref name="AtMost"/>, the largest divisor of the row
/// length that is at most <paramref name="Group"/>), fitted by sensitivity-weighted k-means inside GPTQ.</summary>
public sealed record CodebookRepresentation(int Bits, int Group, bool AtMost) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => $"codebook:{Bits}:{(Group == 0 ? "row" : (AtMost ? "~" : "") + Group.ToString(CultureInfo.InvariantCulture))}";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => GroupFor(columns) > 0;

    /// <summary>The group used for rows of <paramref name="columns"/> values (the row itself for per-row codebooks), or 0
    /// when none fits.</summary>
    public int GroupFor(int columns) => Group == 0 ? columns : Groups.For(columns, Group, AtMost);

    /// <inheritdoc/>
    public override long StoredBytesBound(int rows, int columns) => Weights.CodebookWeight.StoredBytesFor(rows, columns, Bits, GroupFor(columns));

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodeCodebook(name, Bits, GroupFor(encoder.Columns(name)));
    }
}

/// <summary><c>codebook:BITS:GROUP|row</c>: <see cref="CodebookRepresentation"/>, the native scheme <c>codebook</c>.
/// Defaults: per-row codebooks of 2, 3 and 4 bits.</summary>
public sealed class CodebookFamily : RepresentationFamily
{
    private CodebookFamily()
    {
    }

    /// <summary>The family.</summary>
    public static CodebookFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["codebook"];

    /// <inheritdoc/>
    public override string Syntax => "codebook:BITS:GROUP|row";

    /// <inheritdoc/>
    public override string Help => "2^BITS f16 values per group (~N as in uniform) or per row, indexed by BITS-bit codes, k-means inside GPTQ";

    /// <inheritdoc/>
    public override IReadOnlyList<NativeRepresentation> Defaults { get; } =
        [.. from bits in (int[])[2, 3, 4] select new CodebookRepresentation(bits, 0, AtMost: false)];

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [CodebookNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 3);
        int bits = spec.Number(1, "bits", 2, 8);
        if (spec.Parts[2] == "row")
            return new CodebookRepresentation(bits, 0, AtMost: false);
        var (group, atMost) = spec.Group(2);
        return new CodebookRepresentation(bits, group, atMost);
    }
}
