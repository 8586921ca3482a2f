using Squeeze.Formats.Native;
using Squeeze.LowRank;

namespace Squeeze.Compression.Representations;

/// <summary>
/// Activation-aware low-rank factors as an allocation level (spec <c>svd:RANK[:FACTORBITS]</c>): the weight replaced
/// by A·B of <paramref name="Rank"/>, truncated in the whitened space of its input's XᵀX (the diagonal of it when
/// only the importance is known; plain SVD without statistics); factors f16 (16) or uniform codes of 2..8 bits.
/// </summary>
public sealed record LowRankRepresentation(int Rank, int FactorBits = 16) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => $"svd:{Rank}{(FactorBits == 16 ? "" : $":{FactorBits}")}";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => Rank <= Math.Min(rows, columns);

    /// <inheritdoc/>
    public override IReadOnlyList<string> KeptPerInput => [LowRankWhitenings.CholeskyWhitening];

    /// <inheritdoc/>
    public override long StoredBytesBound(int rows, int columns) => RankSelection.FactorBytes(rows, columns, Rank, FactorBits);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var values = encoder.Values(name);
        int columns = encoder.Columns(name), rows = values.Length / columns;
        var whitening = LowRankWhitenings.For(encoder.Input(name), name, eigen: false);
        var weight = LowRankEncoder.Truncate(name, values, rows, columns, Rank, whitening, factorBits: FactorBits);
        return new NativeEncoded(weight, whitening is null ? "svd" : "activation-aware svd", encoder.RelativeError(name, weight));
    }
}

/// <summary><c>svd:RANK[:FACTORBITS]</c>: <see cref="LowRankRepresentation"/>, the native scheme <c>lowrank</c>.</summary>
public sealed class SvdFamily : RepresentationFamily
{
    private SvdFamily()
    {
    }

    /// <summary>The family.</summary>
    public static SvdFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["svd"];

    /// <inheritdoc/>
    public override string Syntax => "svd:RANK[:FACTORBITS]";

    /// <inheritdoc/>
    public override string Help => "the weight replaced by rank-RANK factors A·B, truncated in the whitened space of its input (activation-aware SVD); factors f16 or uniform codes of FACTORBITS";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [LowRankNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 2, 3);
        return new LowRankRepresentation(spec.Number(1, "the rank", 1, 1 << 16), FactorBits(spec, 2));
    }

    /// <summary>Part <paramref name="index"/>, when present, as the factors' bits: 16 (f16) or 2..8; 16 when absent.</summary>
    internal static int FactorBits(RepresentationSpec spec, int index)
    {
        if (index >= spec.Count)
            return 16;
        int bits = spec.Number(index, "the factor bits", 2, 16);
        return bits is <= 8 or 16 ? bits : throw spec.Fail("factors are 16 (f16) or 2..8 bits");
    }
}
