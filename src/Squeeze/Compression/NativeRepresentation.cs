using System.Globalization;
using Squeeze.Formats.Native;
using Squeeze.Pruning;

namespace Squeeze.Compression;

/// <summary>
/// One way to store a weight in the native format, as a level the allocator can choose per tensor: it says whether it
/// fits a tensor's shape and encodes a tensor with a <see cref="NativeTensorEncoder"/> (which holds the calibration
/// data). Written as a spec string: <c>uniform:BITS:GROUP[:sym]</c> (GROUP a number, or <c>~N</c>: the largest group of
/// at most N values that divides the row), <c>codebook:BITS:GROUP</c> (GROUP a number, <c>~N</c>, or <c>row</c>),
/// <c>rot+uniform:…</c> and <c>entropy+SPEC</c> (<see cref="RotatedRepresentation"/>, <see cref="EntropyRepresentation"/>),
/// <c>dfloat11</c>, <c>nm:N:M:VALUES</c> and <c>unstructured:FRACTION:VALUES</c> (pruned; VALUES <c>f16</c> or a bit
/// width for uniform codes), <c>svd:RANK[:FACTORBITS]</c>, <c>eora:BITS:GROUP:RANK[:FACTORBITS]</c> and
/// <c>slim:N:M:VALUES:RANK[:FACTORBITS]</c> (low-rank levels, Compression/LowRankRepresentations.cs),
/// <c>vq:DIM:INDEXBITS[:scaled]</c> and <c>rvq:DIM:INDEXBITS:RESIDUALBITS[:scaled]</c> (vector quantization, with a
/// residual stage, <see cref="VectorRepresentation"/>), <c>split:HOTROWS:HOTSPEC/COLDSPEC</c> (a token-indexed
/// matrix's rows split by use, <see cref="RowSplitRepresentation"/>), <c>zero</c> (the matrix dropped), <c>f16</c>.
/// </summary>
public abstract record NativeRepresentation
{
    /// <summary>The spec string that parses back to this representation.</summary>
    public abstract string Spec { get; }

    /// <summary>True when a [rows, columns] weight can be stored this way.</summary>
    public abstract bool Fits(int rows, int columns);

    /// <summary>True when tensor <paramref name="name"/> (as <paramref name="encoder"/> sees it) can be stored this way:
    /// by default, when its shape <see cref="Fits(int, int)"/>.</summary>
    public virtual bool Fits(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return Fits(encoder.Rows(name), encoder.Columns(name));
    }

    /// <summary>Encodes tensor <paramref name="name"/>.</summary>
    public abstract NativeEncoded Encode(NativeTensorEncoder encoder, string name);

    /// <summary>The <see cref="Spec"/>, as the command line writes it.</summary>
    public sealed override string ToString() => Spec;

    /// <summary>The default levels of <c>compress --format native</c>: uniform codes of 2, 3, 4, 5, 6 and 8 bits in the
    /// largest groups of at most 64 and at most 256 values that divide the row, per-row codebooks of 2, 3 and 4 bits,
    /// vector codebooks (6-dim vectors, 12- and 13-bit indices: only large tensors such as the embedding; row-scaled 4-dim
    /// vectors, 7- to 10-bit indices), f16, and for the token embedding or classifier seven splits of the rows into tiers
    /// by token usage: the 512 to 2,048 most used tokens in 4- to 8-bit uniform codes, the next few thousand in 2- to
    /// 6-bit codes, and the rest (tokens the model hardly uses, whose rows only have to keep their logits low) in 16-dim
    /// vector codes of 0.375 or 0.5 bits per weight. From 0.9 to 3.3 bits per weight for stories15M's embedding; the
    /// tiers are those that measured best for it (docs/BENCHMARKS.md).</summary>
    public static IReadOnlyList<NativeRepresentation> Defaults { get; } =
    [
        .. from bits in (int[])[2, 3, 4, 5, 6, 8]
           from g in (int[])[64, 256]
           select (NativeRepresentation)new UniformRepresentation(bits, g, false, AtMost: true),
        .. from bits in (int[])[2, 3, 4] select (NativeRepresentation)new CodebookRepresentation(bits, 0, AtMost: false),
        new VectorRepresentation(6, 12, 0, RowScales: false),
        new VectorRepresentation(6, 13, 0, RowScales: false),
        .. from bits in (int[])[7, 8, 9, 10] select (NativeRepresentation)new VectorRepresentation(4, bits, 0, RowScales: true),
        new Float16Representation(),
        .. from spec in (string[])[
               "split:512:uniform:4:~64/split:1536:uniform:3:~64/split:4096:uniform:2:~64/vq:16:6",
               "split:512:uniform:5:~64/split:1536:uniform:4:~64/split:4096:uniform:2:~64/vq:16:6",
               "split:1024:uniform:5:~64/split:3072:uniform:4:~64/split:4096:uniform:2:~64/vq:16:6",
               "split:2048:uniform:5:~64/split:4096:uniform:4:~64/vq:16:6",
               "split:1024:uniform:6:~64/split:3072:uniform:5:~64/split:4096:uniform:3:~64/vq:16:6",
               "split:2048:uniform:6:~64/split:4096:uniform:5:~64/split:8192:uniform:3:~64/vq:16:8",
               "split:2048:uniform:8:~64/split:6144:uniform:6:~64/split:8192:uniform:4:~64/vq:16:8"]
           select Parse(spec),
    ];

    /// <summary>Parses a spec string.</summary>
    /// <exception cref="FormatException">Not a known representation, or its numbers are out of range.</exception>
    public static NativeRepresentation Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Trim().StartsWith("split:", StringComparison.OrdinalIgnoreCase))
            return RowSplitRepresentation.ParseSplit(spec.Trim().ToLowerInvariant());
        if (WrappedRepresentations.TryParse(spec.Trim().ToLowerInvariant(), out var wrapped))
            return wrapped;
        var parts = spec.Trim().ToLowerInvariant().Split(':');
        int Number(int i, string what, int min, int max)
            => i < parts.Length && int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max
                ? v
                : throw new FormatException($"representation '{spec}': {what} must be an integer in {min}..{max}");
        int Values(int i) => parts[i] == "f16" ? 0 : Number(i, "the value bits (or f16)", 2, 8);
        int FactorBits(int bits) => bits is <= 8 or 16 ? bits : throw new FormatException($"representation '{spec}': factors are 16 (f16) or 2..8 bits");
        switch (parts[0])
        {
            case "uniform" when parts.Length is 3 or 4:
                if (parts.Length == 4 && parts[3] != "sym")
                    throw new FormatException($"representation '{spec}': the optional fourth part is 'sym'");
                bool atMost = parts[2].StartsWith('~');
                if (atMost)
                    parts[2] = parts[2][1..];
                return new UniformRepresentation(Number(1, "bits", 2, 8), Number(2, "the group", 1, 1 << 20), parts.Length == 4, atMost);
            case "codebook" when parts.Length == 3:
                if (parts[2] == "row")
                    return new CodebookRepresentation(Number(1, "bits", 2, 8), 0, AtMost: false);
                bool most = parts[2].StartsWith('~');
                if (most)
                    parts[2] = parts[2][1..];
                return new CodebookRepresentation(Number(1, "bits", 2, 8), Number(2, "the group", 1, 1 << 20), most);
            case "nm" when parts.Length == 4:
                return new PrunedRepresentation(new SparsityPattern.NOfM(Number(1, "N", 1, 16), Number(2, "M", 2, 16)), Values(3));
            case "unstructured" when parts.Length == 3:
                if (!double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double fraction) || !(fraction > 0 && fraction < 1))
                    throw new FormatException($"representation '{spec}': the pruned fraction must be a number between 0 and 1");
                return new PrunedRepresentation(new SparsityPattern.Unstructured(fraction), Values(2));
            case "f16" when parts.Length == 1:
                return new Float16Representation();
            case "zero" when parts.Length == 1:
                return new DroppedRepresentation();
            case "svd" when parts.Length is 2 or 3:
                return new LowRankRepresentation(Number(1, "the rank", 1, 1 << 16), parts.Length == 3 ? FactorBits(Number(2, "the factor bits", 2, 16)) : 16);
            case "eora" when parts.Length is 4 or 5:
                {
                    var baseline = (UniformRepresentation)Parse($"uniform:{parts[1]}:{parts[2]}");
                    return new CompensatedRepresentation(baseline, Number(3, "the rank", 1, 1 << 16), parts.Length == 5 ? FactorBits(Number(4, "the factor bits", 2, 16)) : 16);
                }
            case "slim" when parts.Length is 5 or 6:
                {
                    var pruned = (PrunedRepresentation)Parse($"nm:{parts[1]}:{parts[2]}:{parts[3]}");
                    return new SparseCompensatedRepresentation(pruned, Number(4, "the rank", 1, 1 << 16), parts.Length == 6 ? FactorBits(Number(5, "the factor bits", 2, 16)) : 16);
                }
            case "dfloat11" when parts.Length == 1:
                return new DFloat11Representation();
            case "vq" when parts.Length is 3 or 4:
                if (parts.Length == 4 && parts[3] != "scaled")
                    throw new FormatException($"representation '{spec}': the optional fourth part is 'scaled'");
                return new VectorRepresentation(Number(1, "the vector dimension", 1, 16), Number(2, "the index bits", 1, 16), 0, parts.Length == 4);
            case "rvq" when parts.Length is 4 or 5:
                if (parts.Length == 5 && parts[4] != "scaled")
                    throw new FormatException($"representation '{spec}': the optional fifth part is 'scaled'");
                return new VectorRepresentation(Number(1, "the vector dimension", 1, 16), Number(2, "the index bits", 1, 16), Number(3, "the residual index bits", 1, 16), parts.Length == 5);
            default:
                throw new FormatException($"representation '{spec}' is not one of uniform:BITS:GROUP[:sym] (GROUP may be ~N), codebook:BITS:GROUP (GROUP may be ~N or row), rot+uniform:…, entropy+SPEC, dfloat11, nm:N:M:VALUES, unstructured:FRACTION:VALUES, svd:RANK[:FACTORBITS], eora:BITS:GROUP:RANK[:FACTORBITS], slim:N:M:VALUES:RANK[:FACTORBITS], vq:DIM:INDEXBITS[:scaled], rvq:DIM:INDEXBITS:RESIDUALBITS[:scaled], split:HOTROWS:HOTSPEC/COLDSPEC, zero, f16");
        }
    }
}

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

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodeUniform(name, new UniformScheme(Bits, GroupFor(encoder.Columns(name)), Symmetric));
    }
}

/// <summary>Non-uniform codebooks (<see cref="Weights.CodebookWeight"/>): 2^<paramref name="Bits"/> f16 values per group of
/// <paramref name="Group"/> (0: one codebook per row; with <paramref name="AtMost"/>, the largest divisor of the row
/// length that is at most <paramref name="Group"/>), fitted by sensitivity-weighted k-means inside GPTQ.</summary>
public sealed record CodebookRepresentation(int Bits, int Group, bool AtMost) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => $"codebook:{Bits}:{(Group == 0 ? "row" : (AtMost ? "~" : "") + Group.ToString(CultureInfo.InvariantCulture))}";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => GroupFor(columns) > 0;

    /// <summary>The group used for rows of <paramref name="columns"/> values (the row itself for per-row codebooks), or 0
    /// when none fits.</summary>
    public int GroupFor(int columns) => Group == 0 ? columns : Groups.For(columns, Group, AtMost);

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodeCodebook(name, Bits, GroupFor(encoder.Columns(name)));
    }
}

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

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var first = new Quantization.VectorQuantizerOptions { Dimension = Dimension, IndexBits = IndexBits, RowScales = RowScales };
        return encoder.EncodeVector(name, first, ResidualBits > 0 ? first with { IndexBits = ResidualBits } : null);
    }
}

/// <summary>A pruned weight (<see cref="SparsityPattern"/>: N:M or unstructured), SparseGPT where the calibration
/// allows, the kept values in f16 (<paramref name="ValueBits"/> 0) or uniform codes.</summary>
public sealed record PrunedRepresentation(SparsityPattern Pattern, int ValueBits) : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => Pattern switch
    {
        SparsityPattern.NOfM p => $"nm:{p.N}:{p.M}:{ValueSpec}",
        SparsityPattern.Unstructured u => $"unstructured:{u.Sparsity.ToString(CultureInfo.InvariantCulture)}:{ValueSpec}",
        _ => throw new InvalidOperationException($"no spec for {Pattern}"),
    };

    private string ValueSpec => ValueBits == 0 ? "f16" : ValueBits.ToString(CultureInfo.InvariantCulture);

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns)
    {
        try
        {
            Pattern.Validate(rows, columns);
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodePruned(name, Pattern, ValueBits);
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

/// <summary>The matrix dropped (<see cref="Weights.ZeroWeight"/>, nothing stored): as the output projection of an
/// attention or feed-forward sub-layer (<c>attn_output</c>, <c>ffn_down</c>) it removes that sub-layer, which the
/// runtime then skips (EvoPress-style depth pruning, chosen per sub-layer by the allocator).</summary>
public sealed record DroppedRepresentation : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => "zero";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => true;

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var weight = new Weights.ZeroWeight(name, encoder.Rows(name), encoder.Columns(name));
        return new NativeEncoded(weight, "dropped", encoder.RelativeError(name, weight));
    }
}

/// <summary>The weight in f16, stored plain.</summary>
public sealed record Float16Representation : NativeRepresentation
{
    /// <inheritdoc/>
    public override string Spec => "f16";

    /// <inheritdoc/>
    public override bool Fits(int rows, int columns) => true;

    /// <inheritdoc/>
    public override NativeEncoded Encode(NativeTensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return encoder.EncodeFloat16(name);
    }
}
