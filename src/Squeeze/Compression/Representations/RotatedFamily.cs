using Squeeze.Calibration;
using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Weights;

namespace Squeeze.Compression.Representations;

/// <summary>
/// Uniform codes after a seeded randomized Hadamard rotation (<see cref="RotatedWeight"/>; seed <see cref="Seed"/>,
/// permutation on), spec <c>rot+uniform:BITS:GROUP[:sym]</c>: the rows and the input's Hessian are rotated and W′ is
/// encoded by GPTQ on the uniform grid (<see cref="RotatedQuantizer"/>) when the calibration has the input's Gram matrix
/// and the method is not rtn, else by plain rounding. Same bytes as the unrotated representation.
/// </summary>
public sealed record RotatedRepresentation(UniformRepresentation Inner) : NativeRepresentation
{
    /// <summary>The rotation's seed.</summary>
    public const ulong Seed = 1;

    /// <summary>The spec prefix.</summary>
    public const string Prefix = "rot+";

    /// <inheritdoc/>
    public override string Spec => Prefix + Inner.Spec;

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => Inner.Fits(rows, columns);

    /// <inheritdoc/>
    public override long StoredBytesBound(int rows, int columns) => Inner.StoredBytesBound(rows, columns);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var values = encoder.Values(name);
        int columns = encoder.Columns(name), rows = values.Length / columns;
        var scheme = Inner.SchemeFor(columns);
        var options = encoder.Options;
        bool gptq = options.Method != CompressionMethod.Rtn && LinearInputs.TryGet(name, out _, out _) && encoder.Input(name) is { Gram: not null };
        var weight = RotatedQuantizer.Quantize(name, values, rows, scheme, new RandomizedHadamard(columns, Seed, permute: true),
            gptq ? encoder.Input(name)!.Hessian() : [],
            new GptqOptions { DampingFraction = options.Damping, ActivationOrder = options.ActivationOrder, RefinePasses = options.RefinePasses, Threads = Math.Max(1, options.Threads) });
        return new NativeEncoded(weight, gptq ? "rotated gptq" : "rotated rtn", encoder.RelativeError(name, weight));
    }
}

/// <summary><c>rot+uniform:BITS:GROUP[:sym]</c>: <see cref="RotatedRepresentation"/>, the native scheme <c>rotation</c>
/// around <c>uniform</c>.</summary>
public sealed class RotatedFamily : RepresentationFamily
{
    private RotatedFamily()
    {
    }

    /// <summary>The family.</summary>
    public static RotatedFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => [RotatedRepresentation.Prefix];

    /// <inheritdoc/>
    public override string Syntax => "rot+uniform:…";

    /// <inheritdoc/>
    public override string Help => "uniform codes of the rows after a seeded randomized Hadamard rotation (same bytes, spread-out outliers)";

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [RotationNativeScheme.Instance];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return new RotatedRepresentation(NativeRepresentation.Parse(spec.Rest) as UniformRepresentation
            ?? throw spec.Fail("a rotation wraps uniform:BITS:GROUP[:sym]"));
    }
}
