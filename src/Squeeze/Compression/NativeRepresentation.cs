using Squeeze.Compression.Representations;
using Squeeze.Formats.Native;
using Squeeze.Tuning;
using Squeeze.Weights;

namespace Squeeze.Compression;

/// <summary>
/// One way to store a weight in the native format, as a level the allocator can choose per tensor: it says whether it
/// fits a tensor's shape and encodes a tensor with a <see cref="TensorEncoder"/> (which holds the calibration
/// data). Written as a spec string (<c>uniform:3:~64</c>, <c>split:1024:uniform:5:~64/vq:8:10</c> …) whose keyword names
/// its <see cref="RepresentationFamily"/>: the registry here (<see cref="Families"/>, one file per family in
/// Compression/Representations/) parses specs, lists the grammar and gives the default levels.
/// </summary>
public abstract record NativeRepresentation
{
    /// <summary>The spec string that parses back to this representation.</summary>
    public abstract string Spec { get; }

    /// <summary>True when a [rows, columns] weight can be stored this way.</summary>
    public abstract bool Fits(int rows, int columns);

    /// <summary>True when tensor <paramref name="name"/> (as <paramref name="encoder"/> sees it) can be stored this way:
    /// by default, when its shape <see cref="Fits(int, int)"/>.</summary>
    public virtual bool Fits(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        return Fits(encoder.Rows(name), encoder.Columns(name));
    }

    /// <summary>True when tensor <paramref name="name"/> of [<paramref name="rows"/>, <paramref name="columns"/>] may be
    /// stored this way, known from the shape before any work (no statistics, no token usage): a superset of
    /// <see cref="Fits(TensorEncoder, string)"/>, by default <see cref="Fits(int, int)"/>. Resource estimates count
    /// the candidates it admits.</summary>
    public virtual bool MayFit(string name, int rows, int columns) => Fits(rows, columns);

    /// <summary>What encoding keeps per block input for the block's other tensors with that input, beyond GPTQ's prepared
    /// Hessian, when the calibration has Gram matrices: each a pair of square matrices of doubles of the input's width (a
    /// prepared Hessian in natural column order, a whitening's root and its inverse), named; levels that name the same
    /// thing share it. Resource estimates count them (<see cref="ResourceEstimate.PerInputPairBytes"/>).</summary>
    public virtual IReadOnlyList<string> KeptPerInput => [];

    /// <summary>Bytes encoding a [<paramref name="rows"/>, <paramref name="columns"/>] tensor this way holds beyond the
    /// tensor's own encoding buffers (<see cref="ResourceEstimate.EncodingBytes"/>): none by default; a row split's
    /// copies of its row subsets. Resource estimates count the largest.</summary>
    public virtual long NestedValuesBytes(int rows, int columns) => 0;

    /// <summary>An upper bound of the bytes (<see cref="LinearWeight.StoredBytes"/>) of what <see cref="Encode"/> makes of
    /// a [<paramref name="rows"/>, <paramref name="columns"/>] tensor this representation fits, from the shape alone:
    /// exact where the size does not depend on the values.</summary>
    public abstract long StoredBytesBound(int rows, int columns);

    /// <summary>Encodes tensor <paramref name="name"/>.</summary>
    public abstract NativeEncoded Encode(TensorEncoder encoder, string name);

    /// <summary>Encodes the stack of routed experts <paramref name="name"/> (<see cref="TensorEncoder.IsStacked"/>): each
    /// expert alone in this representation, with its own input statistics (<see cref="TensorEncoder.ForExpert"/>), one
    /// expert's values in memory at a time, into an <see cref="ExpertStackWeight"/>. The output error is the experts'
    /// relative errors weighted by their signal tr(W H Wᵀ), as the GGUF encoding of a stack reports it.</summary>
    public NativeEncoded EncodeExperts(TensorEncoder encoder, string name)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        int count = encoder.ExpertCount(name);
        var experts = new LinearWeight[count];
        var encodings = new SortedSet<string>(StringComparer.Ordinal);
        double signal = 0, error = 0;
        for (int e = 0; e < count; e++)
        {
            var expert = encoder.ForExpert(name, e);
            var encoded = Encode(expert, name);
            experts[e] = encoded.Weight;
            double w = expert.SignalWeight(name);
            signal += w;
            error += w * encoded.OutputError;
            encodings.Add(expert.ExpertWithoutTokens(name) ? $"{encoded.Encoding} (expert without calibration tokens)" : encoded.Encoding);
            TensorEncoder.ReleaseEncodingBuffers();
        }
        return new NativeEncoded(new ExpertStackWeight(name, experts), string.Join(", ", encodings), signal > 0 ? error / signal : 0);
    }

    /// <summary>The <see cref="Spec"/>, as the command line writes it.</summary>
    public sealed override string ToString() => Spec;

    /// <summary>True when encoding needs the token usage of the calibration text (<see cref="TensorEncoder.TokenUsage"/>),
    /// which takes a forward pass to measure.</summary>
    public virtual bool NeedsTokenUsage => false;

    private static readonly Lock Gate = new();

    // In this order the default levels are listed (and the parse error's grammar).
    private static RepresentationFamily[] families =
    [
        UniformFamily.Instance, CodebookFamily.Instance, VectorFamily.Instance, Float16Family.Instance, SplitFamily.Instance,
        RotatedFamily.Instance, EntropyFamily.Instance, DFloat11Family.Instance, NmFamily.Instance, UnstructuredFamily.Instance,
        SvdFamily.Instance, EoraFamily.Instance, SlimFamily.Instance, ZeroFamily.Instance,
    ];

    /// <summary>The registered families: this library's, then any added by <see cref="Register"/>.</summary>
    public static IReadOnlyList<RepresentationFamily> Families => Volatile.Read(ref families);

    /// <summary>Adds <paramref name="family"/> to the registry, with its native schemes (<see cref="NativeSchemes.Register"/>)
    /// and tunable parameters (<see cref="TunableWeight.Register"/>); registering the same instance again does nothing.</summary>
    /// <exception cref="ArgumentException">One of its keywords belongs to another family, or a scheme or tunable type is
    /// already another's.</exception>
    public static void Register(RepresentationFamily family)
    {
        ArgumentNullException.ThrowIfNull(family);
        lock (Gate)
        {
            if (families.Contains(family))
                return;
            foreach (string keyword in family.Keywords)
            {
                if (keyword.Length == 0 || keyword.Any(c => char.IsUpper(c) || c == ':') || keyword.IndexOf('+', StringComparison.Ordinal) is >= 0 and var at && at != keyword.Length - 1)
                    throw new ArgumentException($"'{keyword}' is not a keyword: lower case, no ':', and '+' only at the end of a prefix", nameof(family));
                if (FamilyOf(keyword) is { } other)
                    throw new ArgumentException($"keyword '{keyword}' belongs to {other.Syntax}", nameof(family));
            }
            foreach (var scheme in family.Schemes)
                NativeSchemes.Register(scheme);
            foreach (var tunable in family.Tunables)
                TunableWeight.Register(tunable);
            Volatile.Write(ref families, [.. families, family]);
        }
    }

    /// <summary>The default levels of <c>compress --format native</c>: what every registered family adds, in registration
    /// order (<see cref="RepresentationFamily.Defaults"/>).</summary>
    public static IReadOnlyList<NativeRepresentation> Defaults => [.. Families.SelectMany(f => f.Defaults)];

    /// <summary>Every registered family's grammar, as the parse error lists them.</summary>
    public static string Grammar => string.Join(", ", Families.Select(f => f.Syntax));

    /// <summary>Parses a spec string with the family its keyword names.</summary>
    /// <exception cref="FormatException">Not a known representation, or its numbers are out of range.</exception>
    public static NativeRepresentation Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var parsed = new RepresentationSpec(spec);
        return FamilyOf(parsed.Keyword) is { } family
            ? family.Parse(parsed)
            : throw new FormatException($"representation '{spec}' is not one of {Grammar}");
    }

    private static RepresentationFamily? FamilyOf(string keyword) => Families.FirstOrDefault(f => f.Keywords.Contains(keyword));
}
