using Squeeze.Formats.Native;
using Squeeze.Weights;

namespace Squeeze.Compression.Representations;

/// <summary>
/// A uniform or rotated-uniform representation with its codes entropy-coded (<see cref="EntropyCodedWeight"/>), spec
/// <c>entropy+SPEC</c>: the same weight, fewer stored bytes.
/// </summary>
public sealed record EntropyRepresentation(NativeRepresentation Inner) : NativeRepresentation
{
    /// <summary>The spec prefix.</summary>
    public const string Prefix = "entropy+";

    /// <inheritdoc/>
    public override string Spec => Prefix + Inner.Spec;

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => Inner.Fits(rows, columns);

    /// <inheritdoc/>
    public override long StoredBytesBound(int rows, int columns) => EntropyCodedWeight.StoredBytesBound(Inner switch
    {
        UniformRepresentation u => u.SchemeFor(columns),
        RotatedRepresentation r => r.Inner.SchemeFor(columns),
        _ => throw new NotSupportedException($"{Spec}: {Inner.Spec} has no codes to entropy-code"),
    }, rows, columns);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var encoded = Inner.Encode(encoder, name);
        int threads = Math.Max(1, encoder.Options.Threads);
        LinearWeight coded = encoded.Weight switch
        {
            UniformWeight u => EntropyCodedWeight.Encode(u, threads: threads),
            RotatedWeight { Inner: UniformWeight u } r => new RotatedWeight(r.Rotation, EntropyCodedWeight.Encode(u, threads: threads)),
            var other => throw new NotSupportedException($"{Spec}: {other.Scheme} has no codes to entropy-code"),
        };
        return encoded with { Weight = coded, Encoding = "entropy-coded " + encoded.Encoding };
    }
}

/// <summary><c>entropy+SPEC</c>: <see cref="EntropyRepresentation"/>, the native scheme <c>entropy</c>.</summary>
public sealed class EntropyFamily : RepresentationFamily
{
    private EntropyFamily()
    {
    }

    /// <summary>The family.</summary>
    public static EntropyFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => [EntropyRepresentation.Prefix];

    /// <inheritdoc/>
    public override string Syntax => "entropy+SPEC";

    /// <inheritdoc/>
    public override string Help => "the codes of uniform:… or rot+uniform:… entropy-coded with rANS, decoded at load (the same weight, fewer bytes)";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [EntropyNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var inner = NativeRepresentation.Parse(spec.Rest);
        return inner is UniformRepresentation or RotatedRepresentation
            ? new EntropyRepresentation(inner)
            : throw spec.Fail("entropy coding wraps uniform:… or rot+uniform:…");
    }
}
