using Squeeze.Formats.Native;
using Squeeze.Tuning;
using Squeeze.Weights;

namespace Squeeze.Compression.Representations;

/// <summary>Uniform codes (<see cref="UniformScheme"/>), encoded by GPTQ on their grid where the calibration allows; with
/// <paramref name="AtMost"/>, the group is the largest divisor of the row length that is at most <paramref name="Group"/>.</summary>
public sealed record UniformRepresentation(int Bits, int Group, bool Symmetric, bool AtMost = false) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => $"uniform:{Bits}:{(AtMost ? "~" : "")}{Group}{(Symmetric ? ":sym" : "")}";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => GroupFor(columns) > 0;

    /// <summary>The group used for rows of <paramref name="columns"/> values, or 0 when none fits.</summary>
    public int GroupFor(int columns) => Groups.For(columns, Group, AtMost);

    /// <summary>The codes of rows of <paramref name="columns"/> values.</summary>
    public UniformScheme SchemeFor(int columns) => new(Bits, GroupFor(columns), Symmetric);

    /// <inheritdoc/>
    public override long StoredBytesBound(int rows, int columns) => SchemeFor(columns).StoredBytes(rows, columns);

    /// <inheritdoc/>
    public override NativeEncoded Encode(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodeUniform(name, SchemeFor(encoder.Columns(name)));
    }
}

/// <summary><c>uniform:BITS:GROUP[:sym]</c>: <see cref="UniformRepresentation"/>, the native scheme <c>uniform</c>, group
/// scales and mins tunable. Defaults: 2, 3, 4, 5, 6 and 8 bits in the largest groups of at most 64 and at most 256 values
/// that divide the row.</summary>
public sealed class UniformFamily : RepresentationFamily
{
    private UniformFamily()
    {
    }

    /// <summary>The family.</summary>
    public static UniformFamily Instance { get; } = new();

    /// <inheritdoc/>
    public override IReadOnlyList<string> Keywords => ["uniform"];

    /// <inheritdoc/>
    public override string Syntax => "uniform:BITS:GROUP[:sym]";

    /// <inheritdoc/>
    public override string Help => "uniform codes of 2..8 bits with an f16 scale (and min, unless sym) per group of GROUP values (~N: the largest divisor of the row ≤ N), GPTQ where calibrated";

    /// <inheritdoc/>
    public override IReadOnlyList<NativeRepresentation> Defaults { get; } =
    [
        .. from bits in (int[])[2, 3, 4, 5, 6, 8]
           from g in (int[])[64, 256]
           select new UniformRepresentation(bits, g, false, AtMost: true),
    ];

    /// <inheritdoc/>
    public override IReadOnlyList<INativeScheme> Schemes => [UniformNativeScheme.Instance];

    /// <inheritdoc/>
    public override IReadOnlyList<TunableFactory> Tunables => [TunableWeight.Uniform];

    /// <inheritdoc/>
    public override NativeRepresentation Parse(RepresentationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Expect(Syntax, 3, 4);
        bool symmetric = spec.Optional(3, "sym");
        var (group, atMost) = spec.Group(2);
        return new UniformRepresentation(spec.Number(1, "bits", 2, 8), group, symmetric, atMost);
    }
}

/// <summary>Group sizes of a level for a row length.</summary>
internal static class Groups
{
    /// <summary><paramref name="group"/> when it divides <paramref name="columns"/>; with <paramref name="atMost"/>, the
    /// largest divisor of <paramref name="columns"/> of at least 8 and at most <paramref name="group"/>; 0 when none.</summary>
    public static int For(int columns, int group, bool atMost)
    {
        if (!atMost)
            return columns % group == 0 ? group : 0;
        for (int g = Math.Min(group, columns); g >= 8; g--)
        {
            if (columns % g == 0)
                return g;
        }
        return 0;
    }
}
