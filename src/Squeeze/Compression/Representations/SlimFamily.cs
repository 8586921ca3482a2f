using Squeeze.Formats.Native;

namespace Squeeze.Compression.Representations;

/// <summary>
/// SLiM-style quantization + sparsity + low rank as one level (spec <c>slim:N:M:VALUES:RANK[:FACTORBITS]</c>): the
/// pruned weight of <paramref name="Pruned"/> (SparseGPT N:M, kept values in uniform codes) plus an EoRA correction of
/// the whole error (pruning and quantization) of rank <paramref name="Rank"/>, stored as a sum.
/// </summary>
public sealed record SparseCompensatedRepresentation(PrunedRepresentation Pruned, int Rank, int FactorBits = 16) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => $"slim:{Pruned.Spec["nm:".Length..]}:{Rank}{(FactorBits == 16 ? "" : $":{FactorBits}")}";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => Pruned.Fits(rows, columns) && Rank <= Math.Min(rows, columns);

    /// <summary>The correction's eigenspace whitening.</summary>
    public override IReadOnlyList<string> KeptPerInput => [LowRankWhitenings.EigenWhitening];

    /// <summary>The pruned weight's bytes and the correction's factors.</summary>
    public override long StoredBytesBound(int rows, int columns) => Pruned.StoredBytesBound(rows, columns) + LowRank.RankSelection.FactorBytes(rows, columns, Rank, FactorBits);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return CompensatedRepresentation.Compensate(encoder, name, Pruned.Encode(encoder, name), Rank, FactorBits);
    }
}

/// <summary><c>slim:N:M:VALUES:RANK[:FACTORBITS]</c>: <see cref="SparseCompensatedRepresentation"/>, stored as a <c>sum</c> of <c>nm</c> and <c>lowrank</c>.</summary>
public sealed class SlimFamily : RepresentationFamily
{
    private SlimFamily()
    {
    }

    /// <summary>The family.</summary>
    public static SlimFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["slim"];

    /// <inheritdoc/>
    public override string Syntax => "slim:N:M:VALUES:RANK[:FACTORBITS]";

    /// <inheritdoc/>
    public override string Help => "nm:N:M:VALUES plus a rank-RANK EoRA correction of the whole error (SLiM)";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [SumNativeScheme.Instance, NmSparseNativeScheme.Instance, LowRankNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 5, 6);
        var pruned = (PrunedRepresentation)NativeRepresentation.Parse($"nm:{spec.Parts[1]}:{spec.Parts[2]}:{spec.Parts[3]}");
        return new SparseCompensatedRepresentation(pruned, spec.Number(4, "the rank", 1, 1 << 16), SvdFamily.FactorBits(spec, 5));
    }

}
