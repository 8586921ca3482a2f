using System.Globalization;
using Squeeze.Formats.Native;
using Squeeze.Pruning;

namespace Squeeze.Compression.Representations;

/// <summary>A pruned weight (<see cref="SparsityPattern"/>: N:M or unstructured), SparseGPT where the calibration
/// allows, the kept values in f16 (<paramref name="ValueBits"/> 0) or uniform codes.</summary>
public sealed record PrunedRepresentation(SparsityPattern Pattern, int ValueBits) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => Pattern switch
    {
        SparsityPattern.NOfM p => $"nm:{p.N}:{p.M}:{ValueSpec}",
        SparsityPattern.Unstructured u => $"unstructured:{u.Sparsity.ToString(CultureInfo.InvariantCulture)}:{ValueSpec}",
        _ => throw new InvalidOperationException($"no spec for {Pattern}"),
    };

    private string ValueSpec => ValueBits == 0 ? "f16" : ValueBits.ToString(CultureInfo.InvariantCulture);

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns)
    {
        try
        {
            Pattern.Validate(rows, columns);
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>The kept values (f16 or uniform codes, <see cref="TensorEncoder.PrunedValueScheme"/>) and where they sit:
    /// packed in-group positions for N:M, a bitmask for unstructured; every row keeps the same number.</summary>
    public override long StoredBytesBound(int rows, int columns)
    {
        var (kept, positions) = Pattern switch
        {
            SparsityPattern.NOfM p => (columns / p.M * p.N, (long)rows * Weights.NmSparseWeight.RowBytes(columns / p.M * p.N, p.M)),
            SparsityPattern.Unstructured u => (columns - u.PrunedPerRow(columns), (long)rows * Weights.MaskedSparseWeight.MaskRowBytesFor(columns)),
            _ => throw new InvalidOperationException($"no size for {Pattern}"),
        };
        long values = ValueBits == 0 ? rows * Tensors.GgmlTypes.RowBytes(Tensors.GgmlType.F16, kept) : TensorEncoder.PrunedValueScheme(ValueBits, kept).StoredBytes(rows, kept);
        return values + positions;
    }

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodePruned(name, Pattern, ValueBits);
    }
}

/// <summary><c>nm:N:M:VALUES</c>: <see cref="PrunedRepresentation"/> with N of every M consecutive weights of a row kept
/// (<see cref="SparsityPattern.NOfM"/>), the native scheme <c>nm</c>.</summary>
public sealed class NmFamily : RepresentationFamily
{
    private NmFamily()
    {
    }

    /// <summary>The family.</summary>
    public static NmFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["nm"];

    /// <inheritdoc/>
    public override string Syntax => "nm:N:M:VALUES";

    /// <inheritdoc/>
    public override string Help => "N of every M consecutive weights of a row kept (SparseGPT where calibrated, else Wanda or magnitude), the kept VALUES f16 or uniform codes of 2..8 bits";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [NmSparseNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 4);
        return new PrunedRepresentation(new SparsityPattern.NOfM(spec.Number(1, "N", 1, 16), spec.Number(2, "M", 2, 16)), ValueBits(spec, 3));
    }

    /// <summary>Part <paramref name="index"/> as the kept values' bits: <c>f16</c> (0) or 2..8.</summary>
    internal static int ValueBits(RepresentationSpec spec, int index) => spec.Parts[index] == "f16" ? 0 : spec.Number(index, "the value bits (or f16)", 2, 8);
}
