using Squeeze.Formats.Native;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Compression.Representations;

/// <summary>The weight rounded to BF16 and stored losslessly with DFloat11 (<see cref="DFloat11Weight"/>), spec <c>dfloat11</c>.</summary>
public sealed record DFloat11Representation : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => "dfloat11";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => true;

    /// <inheritdoc/>
    public override long StoredBytesBound(int rows, int columns) => DFloat11Weight.StoredBytesBound(rows, columns);

    /// <inheritdoc/>
    public override unsafe NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var values = encoder.Values(name);
        int columns = encoder.Columns(name), rows = values.Length / columns;
        var buffer = NativeBuffer.Allocate(2L * values.Length);
        var bits = new Span<ushort>(buffer.Pointer, values.Length);
        for (int i = 0; i < values.Length; i++)
            bits[i] = HalfConversions.F32ToBf16(values[i]);
        var weight = DFloat11Weight.Encode(new BlockWeight(new Tensor(name, GgmlType.BF16, [rows, columns], buffer, 0)), threads: Math.Max(1, encoder.Options.Threads));
        return new NativeEncoded(weight, "bf16 dfloat11", encoder.RelativeError(name, weight));
    }
}

/// <summary><c>dfloat11</c>: <see cref="DFloat11Representation"/>, the native scheme <c>dfloat11</c>.</summary>
public sealed class DFloat11Family : RepresentationFamily
{
    private DFloat11Family()
    {
    }

    /// <summary>The family.</summary>
    public static DFloat11Family Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["dfloat11"];

    /// <inheritdoc/>
    public override string Syntax => "dfloat11";

    /// <inheritdoc/>
    public override string Help => "the weight rounded to BF16 and stored losslessly in about 11 bits (entropy-coded exponents), decoded at load";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [DFloat11NativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 1);
        return new DFloat11Representation();
    }
}
