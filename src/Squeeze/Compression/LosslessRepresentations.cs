using Squeeze.Calibration;
using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Compression;

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
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var values = encoder.Values(name);
        int columns = encoder.Columns(name), rows = values.Length / columns;
        var scheme = new UniformScheme(Inner.Bits, Inner.GroupFor(columns), Inner.Symmetric);
        var options = encoder.Options;
        bool gptq = options.Method != CompressionMethod.Rtn && LinearInputs.TryGet(name, out _, out _) && encoder.Input(name) is { Gram: not null };
        var weight = RotatedQuantizer.Quantize(name, values, rows, scheme, new RandomizedHadamard(columns, Seed, permute: true),
            gptq ? encoder.Input(name)!.Hessian() : [],
            new GptqOptions { DampingFraction = options.Damping, ActivationOrder = options.ActivationOrder, RefinePasses = options.RefinePasses, Threads = Math.Max(1, options.Threads) });
        return new NativeEncoded(weight, gptq ? "rotated gptq" : "rotated rtn", encoder.RelativeError(name, weight));
    }
}

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
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
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

/// <summary>The weight rounded to BF16 and stored losslessly with DFloat11 (<see cref="DFloat11Weight"/>), spec <c>dfloat11</c>.</summary>
public sealed record DFloat11Representation : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => "dfloat11";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => true;

    /// <inheritdoc/>
    public override unsafe NativeEncoded Encode(NativeTensorEncoder encoder, string name)
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

/// <summary>The representations that wrap another: <c>rot+…</c> and <c>entropy+…</c>.</summary>
internal static class WrappedRepresentations
{
    /// <summary>Parses <c>rot+…</c> and <c>entropy+…</c> specs (lower case); false for any other spec.</summary>
    /// <exception cref="FormatException">The inner spec is not one the prefix wraps.</exception>
    internal static bool TryParse(string spec, out NativeRepresentation representation)
    {
        if (spec.StartsWith(RotatedRepresentation.Prefix, StringComparison.Ordinal))
        {
            representation = new RotatedRepresentation(NativeRepresentation.Parse(spec[RotatedRepresentation.Prefix.Length..]) as UniformRepresentation
                ?? throw new FormatException($"representation '{spec}': a rotation wraps uniform:BITS:GROUP[:sym]"));
            return true;
        }
        if (spec.StartsWith(EntropyRepresentation.Prefix, StringComparison.Ordinal))
        {
            var inner = NativeRepresentation.Parse(spec[EntropyRepresentation.Prefix.Length..]);
            representation = inner is UniformRepresentation or RotatedRepresentation
                ? new EntropyRepresentation(inner)
                : throw new FormatException($"representation '{spec}': entropy coding wraps uniform:… or rot+uniform:…");
            return true;
        }
        representation = null!;
        return false;
    }
}
