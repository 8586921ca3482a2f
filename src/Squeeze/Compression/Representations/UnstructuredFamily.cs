using System.Globalization;
using Squeeze.Formats.Native;
using Squeeze.Pruning;

namespace Squeeze.Compression.Representations;

/// <summary><c>unstructured:FRACTION:VALUES</c>: <see cref="PrunedRepresentation"/> with that fraction of each row's
/// weights removed (<see cref="SparsityPattern.Unstructured"/>), the native scheme <c>masked</c>.</summary>
public sealed class UnstructuredFamily : RepresentationFamily
{
    private UnstructuredFamily()
    {
    }

    /// <summary>The family.</summary>
    public static UnstructuredFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["unstructured"];

    /// <inheritdoc/>
    public override string Syntax => "unstructured:FRACTION:VALUES";

    /// <inheritdoc/>
    public override string Help => "FRACTION (0..1) of each row's weights removed, a bitmask and the kept VALUES (f16 or uniform codes of 2..8 bits)";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [MaskedSparseNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 3);
        if (!double.TryParse(spec.Parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double fraction) || !(fraction > 0 && fraction < 1))
            throw spec.Fail("the pruned fraction must be a number between 0 and 1");
        return new PrunedRepresentation(new SparsityPattern.Unstructured(fraction), NmFamily.ValueBits(spec, 2));
    }
}
