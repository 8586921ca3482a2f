using System.Globalization;
using Squeeze.Formats.Native;
using Squeeze.Tuning;

namespace Squeeze.Compression.Representations;

/// <summary>
/// One family of native representations (uniform codes, codebooks, row splits …) in the registry of
/// <see cref="NativeRepresentation"/>: its spec keywords and grammar, its parser and one-line help, the levels it adds to
/// the defaults, and the native schemes and tunable parameters of the weights its representations encode (the encoder
/// is each representation's <see cref="NativeRepresentation.Encode"/>). A new method is one family, registered with
/// <see cref="NativeRepresentation.Register"/>; the parse error, the CLI help and the default levels come from the
/// registry.
/// </summary>
public abstract class RepresentationFamily
{
    /// <summary>The spec keywords this family parses: the text before the spec's first <c>:</c> (<c>uniform</c>), or a
    /// prefix ending in <c>+</c> that wraps another spec (<c>rot+</c>).</summary>
    public abstract IReadOnlyList<string> Keywords { get; }

    /// <summary>The grammar of the family's specs, e.g. <c>uniform:BITS:GROUP[:sym]</c>.</summary>
    public abstract string Syntax { get; }

    /// <summary>One line on what the family stores and how it encodes.</summary>
    public abstract string Help { get; }

    /// <summary>The levels this family adds to <see cref="NativeRepresentation.Defaults"/> (none by default).</summary>
    public virtual IReadOnlyList<NativeRepresentation> Defaults => [];

    /// <summary>The native schemes the family's weights are stored in (registered with the family).</summary>
    public virtual IReadOnlyList<INativeScheme> Schemes => [];

    /// <summary>How the family's weights are tuned (registered with the family; none: tuning leaves them as encoded).</summary>
    public virtual IReadOnlyList<TunableFactory> Tunables => [];

    /// <summary>Parses a spec whose keyword is one of <see cref="Keywords"/>.</summary>
    /// <exception cref="FormatException">The spec does not follow <see cref="Syntax"/> or a number is out of range.</exception>
    public abstract NativeRepresentation Parse(RepresentationSpec spec);

    /// <inheritdoc/>
    public override string ToString() => Syntax;
}

/// <summary>A spec string being parsed: trimmed and lower-cased, split at <c>:</c>, with its keyword and helpers whose
/// errors name the spec as given.</summary>
public sealed class RepresentationSpec
{
    internal RepresentationSpec(string text)
    {
        Text = text;
        string normalized = text.Trim().ToLowerInvariant();
        Parts = normalized.Split(':');
        int colon = normalized.IndexOf(':', StringComparison.Ordinal), plus = normalized.IndexOf('+', StringComparison.Ordinal);
        Keyword = plus >= 0 && (colon < 0 || plus < colon) ? normalized[..(plus + 1)] : Parts[0];
        Rest = Keyword.EndsWith('+') ? normalized[Keyword.Length..] : colon < 0 ? "" : normalized[(colon + 1)..];
    }

    /// <summary>The spec as given.</summary>
    public string Text { get; }

    /// <summary>The keyword: the first part, or the prefix up to and including <c>+</c>.</summary>
    public string Keyword { get; }

    /// <summary>What follows the keyword (after its <c>:</c>; for a prefix, the wrapped spec).</summary>
    public string Rest { get; }

    /// <summary>The trimmed, lower-cased spec split at <c>:</c>; <c>Parts[0]</c> is the keyword of a family that is no prefix.</summary>
    public IReadOnlyList<string> Parts { get; }

    /// <summary>The number of parts.</summary>
    public int Count => Parts.Count;

    /// <summary>Part <paramref name="index"/> as an integer in <paramref name="min"/>..<paramref name="max"/>.</summary>
    /// <exception cref="FormatException">It is missing, not an integer, or out of range.</exception>
    public int Number(int index, string what, int min, int max)
        => Number(index < Count ? Parts[index] : "", what, min, max);

    /// <summary><paramref name="text"/> (a part, or a piece of one) as an integer in <paramref name="min"/>..<paramref name="max"/>.</summary>
    /// <exception cref="FormatException">It is not an integer, or out of range.</exception>
    public int Number(string text, string what, int min, int max)
        => int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max
            ? v
            : throw Fail($"{what} must be an integer in {min}..{max}");

    /// <summary>Part <paramref name="index"/> as a group size: a number, or <c>~N</c> (the largest divisor of the row of
    /// at most N).</summary>
    public (int Group, bool AtMost) Group(int index)
    {
        string part = index < Count ? Parts[index] : "";
        bool atMost = part.StartsWith('~');
        return (Number(atMost ? part[1..] : part, "the group", 1, 1 << 20), atMost);
    }

    /// <summary>Throws unless the spec has one of <paramref name="counts"/> parts (the keyword included).</summary>
    /// <exception cref="FormatException">Another number of parts, with the family's syntax.</exception>
    public void Expect(string syntax, params int[] counts)
    {
        ArgumentNullException.ThrowIfNull(counts);
        if (!counts.Contains(Count))
            throw Fail($"expected {syntax}");
    }

    /// <summary>Throws unless part <paramref name="index"/>, when present, is <paramref name="word"/>; true when present.</summary>
    public bool Optional(int index, string word)
    {
        if (index >= Count)
            return false;
        return Parts[index] == word ? true : throw Fail($"the optional part {index + 1} is '{word}'");
    }

    /// <summary>A parse error naming the spec.</summary>
    public FormatException Fail(string problem) => new($"representation '{Text}': {problem}");
}
