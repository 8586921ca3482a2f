using Squeeze.Formats.Native;

namespace Squeeze.Compression.Representations;

/// <summary>The matrix dropped (<see cref="Weights.ZeroWeight"/>, nothing stored): as the output projection of an
/// attention or feed-forward sub-layer (<c>attn_output</c>, <c>ffn_down</c>) it removes that sub-layer, which the
/// runtime then skips (EvoPress-style depth pruning, chosen per sub-layer by the allocator).</summary>
public sealed record DroppedRepresentation : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => "zero";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => true;

    /// <summary>Nothing is stored.</summary>
    public override long StoredBytesBound(int rows, int columns) => 0;

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var weight = new Weights.ZeroWeight(name, encoder.Rows(name), encoder.Columns(name));
        return new NativeEncoded(weight, "dropped", encoder.RelativeError(name, weight));
    }
}

/// <summary><c>zero</c>: <see cref="DroppedRepresentation"/>, the native scheme <c>zero</c>.</summary>
public sealed class ZeroFamily : RepresentationFamily
{
    private ZeroFamily()
    {
    }

    /// <summary>The family.</summary>
    public static ZeroFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["zero"];

    /// <inheritdoc/>
    public override string Syntax => "zero";

    /// <inheritdoc/>
    public override string Help => "the matrix dropped (nothing stored); as attn_output or ffn_down it removes that sub-layer";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [ZeroNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 1);
        return new DroppedRepresentation();
    }
}
