using Squeeze.Formats.Native;

namespace Squeeze.Compression.Representations;

/// <summary>The weight in f16, stored plain.</summary>
public sealed record Float16Representation : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => "f16";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => true;

    /// <inheritdoc/>
    public override long StoredBytesBound(int rows, int columns) => rows * Tensors.GgmlTypes.RowBytes(Tensors.GgmlType.F16, columns);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodeFloat16(name);
    }
}

/// <summary><c>f16</c>: <see cref="Float16Representation"/>, a plain tensor (the native scheme <c>plain</c> when nested);
/// a default level.</summary>
public sealed class Float16Family : RepresentationFamily
{
    private Float16Family()
    {
    }

    /// <summary>The family.</summary>
    public static Float16Family Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["f16"];

    /// <inheritdoc/>
    public override string Syntax => "f16";

    /// <inheritdoc/>
    public override string Help => "the weight rounded to f16";

    /// <inheritdoc/>
    public override IReadOnlyList<NativeRepresentation> Defaults { get; } = [new Float16Representation()];

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [PlainNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 1);
        return new Float16Representation();
    }
}
