using Squeeze.Formats.Native;
using Squeeze.LowRank;

namespace Squeeze.Compression.Representations;

/// <summary>
/// EoRA as an allocation level (spec <c>eora:BITS:GROUP:RANK[:FACTORBITS]</c>, GROUP as in <c>uniform</c>): the
/// uniform base the encoder makes (GPTQ where it can) plus a rank-<paramref name="Rank"/> correction of its error fitted
/// in the eigenspace of the input's XᵀX, stored as a sum.
/// </summary>
public sealed record CompensatedRepresentation(UniformRepresentation Base, int Rank, int FactorBits = 16) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => $"eora:{Base.Spec["uniform:".Length..]}:{Rank}{(FactorBits == 16 ? "" : $":{FactorBits}")}";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => Base.Fits(rows, columns) && Rank <= Math.Min(rows, columns);

    /// <summary>The base's (GPTQ's, for uniform codes) and the correction's eigenspace whitening.</summary>
    public override IReadOnlyList<string> KeptPerInput => [.. Base.KeptPerInput.Append(LowRankWhitenings.EigenWhitening)];

    /// <summary>The base's bytes and the correction's factors.</summary>
    public override long StoredBytesBound(int rows, int columns) => Base.StoredBytesBound(rows, columns) + RankSelection.FactorBytes(rows, columns, Rank, FactorBits);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return Compensate(encoder, name, Base.Encode(encoder, name), Rank, FactorBits);
    }

    /// <summary><paramref name="baseline"/> plus a rank-<paramref name="rank"/> EoRA correction of its error, fitted in the
    /// eigenspace of the input's XᵀX (the identity without statistics), stored as a sum.</summary>
    internal static NativeEncoded Compensate(TensorEncoder encoder, string name, NativeEncoded baseline, int rank, int factorBits)
    {
        var values = encoder.Values(name);
        var eigen = LowRankWhitenings.For(encoder.Input(name), name, eigen: true) ?? Whitening.Eigen(Identity(encoder.Columns(name)), encoder.Columns(name), 0);
        var weight = LowRankEncoder.Compensate(baseline.Weight, values, rank, eigen, factorBits: factorBits);
        return new NativeEncoded(weight, $"{baseline.Encoding} + eora r{rank}", encoder.RelativeError(name, weight));
    }

    private static double[] Identity(int n)
    {
        var h = new double[n * n];
        for (int i = 0; i < n; i++)
            h[i * n + i] = 1;
        return h;
    }
}

/// <summary><c>eora:BITS:GROUP:RANK[:FACTORBITS]</c>: <see cref="CompensatedRepresentation"/>, stored as a <c>sum</c> of <c>uniform</c> and <c>lowrank</c>.</summary>
public sealed class EoraFamily : RepresentationFamily
{
    private EoraFamily()
    {
    }

    /// <summary>The family.</summary>
    public static EoraFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["eora"];

    /// <inheritdoc/>
    public override string Syntax => "eora:BITS:GROUP:RANK[:FACTORBITS]";

    /// <inheritdoc/>
    public override string Help => "uniform:BITS:GROUP plus a rank-RANK correction of its error fitted in the eigenspace of the input's XᵀX (EoRA)";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [SumNativeScheme.Instance, UniformNativeScheme.Instance, LowRankNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 4, 5);
        var baseline = (UniformRepresentation)NativeRepresentation.Parse($"uniform:{spec.Parts[1]}:{spec.Parts[2]}");
        return new CompensatedRepresentation(baseline, spec.Number(3, "the rank", 1, 1 << 16), SvdFamily.FactorBits(spec, 4));
    }

}
