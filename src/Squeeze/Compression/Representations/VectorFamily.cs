using Squeeze.Formats.Native;
using Squeeze.Tuning;

namespace Squeeze.Compression.Representations;

/// <summary>Vector quantization (<see cref="Weights.VectorCodebookWeight"/>): vectors of <paramref name="Dimension"/>
/// consecutive values of a row coded by <paramref name="IndexBits"/>-bit indices into one codebook for the tensor, with an
/// f16 scale per row when <paramref name="RowScales"/>; k-means weighted by the importance, then GPTQ's second-order
/// assignment where the calibration has the input's Gram matrix (<see cref="Quantization.VectorQuantizer"/>). With
/// <paramref name="ResidualBits"/> &gt; 0, a second codebook of 2^ResidualBits centroids (same dimension) codes the first
/// stage's residual and the weight is their sum (stored as a <c>sum</c> of two <c>vq</c> terms).</summary>
public sealed record VectorRepresentation(int Dimension, int IndexBits, int ResidualBits, bool RowScales) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => (ResidualBits > 0 ? $"rvq:{Dimension}:{IndexBits}:{ResidualBits}" : $"vq:{Dimension}:{IndexBits}") + (RowScales ? ":scaled" : "");

    /// <summary>The dimension divides the row and every codebook takes at most 1 bit per weight (at least 16 vectors per
    /// centroid): a larger codebook costs more than it can save, and k-means with fewer vectors per centroid only
    /// memorizes them (so 12-bit codebooks of 6-dim vectors fit the 32000 × 288 embedding, not a 768 × 288 matrix).</summary>
    public override bool Fits(int rows, int columns)
        => columns % Dimension == 0 && (long)rows * (columns / Dimension) >= 16L << Math.Max(IndexBits, ResidualBits);

    /// <summary>GPTQ's assignment reads the input's Hessian prepared in natural column order (<see cref="TensorEncoder.EncodeVector"/>).</summary>
    public override IReadOnlyList<string> KeptPerInput => [TensorEncoder.NaturalOrderHessian];

    /// <summary>The codebook, indices and row scales of each stage.</summary>
    public override long StoredBytesBound(int rows, int columns)
        => Weights.VectorCodebookWeight.StoredBytesFor(rows, columns, Dimension, IndexBits, RowScales)
            + (ResidualBits > 0 ? Weights.VectorCodebookWeight.StoredBytesFor(rows, columns, Dimension, ResidualBits, RowScales) : 0);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var first = new Quantization.VectorQuantizerOptions { Dimension = Dimension, IndexBits = IndexBits, RowScales = RowScales };
        return encoder.EncodeVector(name, first, ResidualBits > 0 ? first with { IndexBits = ResidualBits } : null);
    }
}

/// <summary><c>vq:DIM:INDEXBITS[:scaled]</c> and <c>rvq:DIM:INDEXBITS:RESIDUALBITS[:scaled]</c>:
/// <see cref="VectorRepresentation"/>, the native schemes <c>vq</c> and <c>sum</c>, codebooks and row scales tunable.
/// Defaults: 6-dim vectors with 12- and 13-bit indices (only large tensors such as the embedding fit them), row-scaled
/// 4-dim vectors with 7- to 10-bit indices.</summary>
public sealed class VectorFamily : RepresentationFamily
{
    private VectorFamily()
    {
    }

    /// <summary>The family.</summary>
    public static VectorFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["vq", "rvq"];

    /// <inheritdoc/>
    public override string Syntax => "vq:DIM:INDEXBITS[:scaled], rvq:DIM:INDEXBITS:RESIDUALBITS[:scaled]";

    /// <inheritdoc/>
    public override string Help => "vectors of DIM consecutive values as INDEXBITS-bit indices into one f16 codebook per tensor (scaled: an f16 scale per row; rvq: a second codebook codes the residual)";

    /// <inheritdoc/>
    public override IReadOnlyList<NativeRepresentation> Defaults { get; } =
    [
        new VectorRepresentation(6, 12, 0, RowScales: false),
        new VectorRepresentation(6, 13, 0, RowScales: false),
        .. from bits in (int[])[7, 8, 9, 10] select new VectorRepresentation(4, bits, 0, RowScales: true),
    ];

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [VectorNativeScheme.Instance, SumNativeScheme.Instance];

    /// <inheritdoc/>
    public override IReadOnlyList<TunableFactory> Tunables => [TunableWeight.Vectors];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        bool residual = spec.Keyword == "rvq";
        spec.Expect(residual ? "rvq:DIM:INDEXBITS:RESIDUALBITS[:scaled]" : "vq:DIM:INDEXBITS[:scaled]", residual ? [4, 5] : [3, 4]);
        bool scaled = spec.Optional(residual ? 4 : 3, "scaled");
        return new VectorRepresentation(spec.Number(1, "the vector dimension", 1, 16), spec.Number(2, "the index bits", 1, 16),
            residual ? spec.Number(3, "the residual index bits", 1, 16) : 0, scaled);
    }
}
