using System.Text.Json;
using System.Text.Json.Nodes;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>
/// One scheme of the native format (docs/FORMAT.md §3): how a <see cref="LinearWeight"/> of one kind is stored as
/// companion tensors plus a JSON description, and read back. Schemes nest: a scheme may store inner weights under
/// longer prefixes (a rotation's base, a low-rank weight's two factors).
/// </summary>
internal interface INativeScheme
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
    /// <exception cref="ModelFormatException">The scheme or a companion is malformed.</exception>
    LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source);
}

/// <summary>The schemes this build reads and writes.</summary>
internal static class NativeSchemes
{
    public static IReadOnlyList<INativeScheme> All { get; } =
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
    ];

    public static INativeScheme? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    /// <summary>The scheme that stores <paramref name="weight"/>.</summary>
    /// <exception cref="NotSupportedException">No scheme stores it.</exception>
    public static INativeScheme For(LinearWeight weight)
        => All.FirstOrDefault(s => s.CanStore(weight))
           ?? throw new NotSupportedException($"{weight}: no native scheme stores a {weight.GetType().Name}");

    internal static JsonElement Parse(string json)
    {
        using var document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 16 });
        return document.RootElement.Clone();
    }
}
