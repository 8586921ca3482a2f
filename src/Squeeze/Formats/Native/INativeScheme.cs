using System.Text.Json;
using System.Text.Json.Nodes;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>
/// One scheme of the native format (docs/FORMAT.md §3): how a <see cref="LinearWeight"/> of one kind is stored as
/// companion tensors plus a JSON description, and read back. Schemes nest: a scheme may store inner weights under
/// longer prefixes (a rotation's base, a low-rank weight's two factors). A scheme from another assembly joins the format
/// through <see cref="NativeSchemes.Register"/>.
/// </summary>
public interface INativeScheme
{
    /// <summary>The <c>"scheme"</c> string in the JSON, e.g. <c>uniform</c>.</summary>
    string Name { get; }

    /// <summary>The first format version that defines the scheme.</summary>
    int Version { get; }

    /// <summary>True when this scheme stores <paramref name="weight"/>.</summary>
    bool CanStore(LinearWeight weight);

    /// <summary>Adds the weight's companion tensors, named <paramref name="prefix"/> + a suffix, to
    /// <paramref name="sink"/> and returns its scheme object (with <c>"scheme": Name</c>).</summary>
    JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink);

    /// <summary>Reads a weight named <paramref name="name"/> of logical shape [rows, columns] whose companions are
    /// named <paramref name="prefix"/> + a suffix. Every key of <paramref name="json"/> must be read through it.</summary>
    /// <exception cref="Tensors.ModelFormatException">The scheme or a companion is malformed.</exception>
    LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source);
}

/// <summary>The schemes this build reads and writes: those of the runtime's own weights (here, on the format's floor, so
/// that reading a native model needs nothing above it), then any registered by a representation family
/// (<c>Compression.NativeRepresentation.Register</c>) or directly.</summary>
public static class NativeSchemes
{
    private static readonly Lock Gate = new();
    private static INativeScheme[] all =
    [
        UniformNativeScheme.Instance,
        PlainNativeScheme.Instance,
        SumNativeScheme.Instance,
        CodebookNativeScheme.Instance,
        SparseNativeScheme.Instance,
        NmSparseNativeScheme.Instance,
        MaskedSparseNativeScheme.Instance,
        StructuredSparseNativeScheme.Instance,
        ZeroNativeScheme.Instance,
        LowRankNativeScheme.Instance,
        RotationNativeScheme.Instance,
        EntropyNativeScheme.Instance,
        DFloat11NativeScheme.Instance,
        VectorNativeScheme.Instance,
        SplitNativeScheme.Instance,
        ExpertsNativeScheme.Instance,
    ];

    /// <summary>Every known scheme, in the order <see cref="For"/> asks them.</summary>
    public static IReadOnlyList<INativeScheme> All => Volatile.Read(ref all);

    /// <summary>Adds <paramref name="scheme"/> (after the known ones); registering the same instance again does nothing.</summary>
    /// <exception cref="ArgumentException">Another scheme already has its name, or the name is empty, or it needs a newer
    /// format version than this build writes.</exception>
    public static void Register(INativeScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentException.ThrowIfNullOrEmpty(scheme.Name, nameof(scheme));
        if (scheme.Version < 1 || scheme.Version > NativeFormat.Version)
            throw new ArgumentException($"native scheme \"{scheme.Name}\" needs format version {scheme.Version}; this build writes 1..{NativeFormat.Version}", nameof(scheme));
        lock (Gate)
        {
            var known = Find(scheme.Name);
            if (ReferenceEquals(known, scheme))
                return;
            if (known is not null)
                throw new ArgumentException($"native scheme \"{scheme.Name}\" is already registered ({known.GetType().Name})", nameof(scheme));
            Volatile.Write(ref all, [.. all, scheme]);
        }
    }

    /// <summary>The scheme named <paramref name="name"/>, or null.</summary>
    public static INativeScheme? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    /// <summary>The scheme that stores <paramref name="weight"/>.</summary>
    /// <exception cref="NotSupportedException">No scheme stores it.</exception>
    public static INativeScheme For(LinearWeight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        return All.FirstOrDefault(s => s.CanStore(weight))
               ?? throw new NotSupportedException($"{weight}: no native scheme stores a {weight.GetType().Name}");
    }

    internal static JsonElement Parse(string json)
    {
        using var document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16 });
        return document.RootElement.Clone();
    }
}
