using System.Runtime.CompilerServices;
using Squeeze.Calibration;
using Squeeze.LowRank;
using Squeeze.Weights;

namespace Squeeze.Compression;

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
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var values = encoder.Values(name);
        int columns = encoder.Columns(name), rows = values.Length / columns;
        var whitening = LowRankWhitenings.For(encoder.Input(name), name, eigen: false);
        var weight = LowRankEncoder.Truncate(name, values, rows, columns, Rank, whitening, factorBits: FactorBits);
        return new NativeEncoded(weight, whitening is null ? "svd" : "activation-aware svd", encoder.RelativeError(name, weight));
    }
}

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

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return Compensate(encoder, name, Base.Encode(encoder, name), Rank, FactorBits);
    }

    /// <summary><paramref name="baseline"/> plus a rank-<paramref name="rank"/> EoRA correction of its error, fitted in the
    /// eigenspace of the input's XᵀX (the identity without statistics), stored as a sum.</summary>
    internal static NativeEncoded Compensate(NativeTensorEncoder encoder, string name, NativeEncoded baseline, int rank, int factorBits)
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

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return CompensatedRepresentation.Compensate(encoder, name, Pruned.Encode(encoder, name), Rank, FactorBits);
    }
}

/// <summary>Whitenings of layer inputs for the low-rank levels, computed once per statistics entry.</summary>
internal static class LowRankWhitenings
{
    private const double Damping = 0.01;
    private static readonly ConditionalWeakTable<ActivationStatistics, Whitening> Cholesky = [];
    private static readonly ConditionalWeakTable<ActivationStatistics, Whitening> Eigen = [];

    /// <summary>The whitening of <paramref name="name"/>'s input: from its Gram matrix when it is a linear layer's and
    /// was collected, else from the importance (a diagonal XᵀX); null without statistics.</summary>
    public static Whitening? For(ActivationStatistics? input, string name, bool eigen)
    {
        if (input is null)
            return null;
        var table = eigen ? Eigen : Cholesky;
        bool full = input.Gram is not null && LinearInputs.TryGet(name, out _, out _);
        if (full && table.TryGetValue(input, out var cached))
            return cached;
        double[] h;
        if (full)
        {
            h = input.Hessian();
        }
        else
        {
            int n = input.Width;
            var importance = input.Importance();
            h = new double[(long)n * n];
            for (int i = 0; i < n; i++)
                h[(long)i * n + i] = importance[i];
        }
        var whitening = eigen ? Whitening.Eigen(h, input.Width, Damping) : Whitening.Cholesky(h, input.Width, Damping);
        if (full)
            table.AddOrUpdate(input, whitening);
        return whitening;
    }
}
