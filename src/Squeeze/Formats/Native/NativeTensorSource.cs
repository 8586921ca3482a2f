using System.Text.Json;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>Where schemes find their companion tensors while a native file is read: checks each one's dtype and
/// shape, and records which stored tensors a scheme claimed (the rest must be plain tensors).</summary>
public sealed class NativeTensorSource
{
    private readonly SafetensorsFile file;
    private readonly HashSet<string> claimed = new(StringComparer.Ordinal);

    internal NativeTensorSource(SafetensorsFile file, int version)
    {
        this.file = file;
        Version = version;
    }

    /// <summary>The file's format version.</summary>
    public int Version { get; }

    /// <summary>The weights file.</summary>
    public string Path => file.Path;

    internal IReadOnlySet<string> Claimed => claimed;

    /// <summary>A copy of companion tensor <paramref name="tensorName"/>'s bytes, after checking that it exists, is not
    /// claimed twice, and has exactly <paramref name="dtype"/> and <paramref name="shape"/>.</summary>
    /// <exception cref="ModelFormatException">It is missing, claimed twice, or of another dtype or shape.</exception>
    public byte[] Companion(string tensorName, SafetensorsDType dtype, long[] shape)
        => file.GetBytes(Claim(tensorName, [dtype], shape)).ToArray();

    /// <summary>A companion tensor of a float dtype in <paramref name="dtypes"/>, as a <see cref="Tensor"/> over the
    /// mapped file (no copy).</summary>
    public Tensor MappedTensor(string tensorName, SafetensorsDType[] dtypes, long[] shape)
    {
        Claim(tensorName, dtypes, shape);
        return file.GetTensor(tensorName);
    }

    /// <summary>Reads a nested weight of logical shape [rows, columns] described by <paramref name="scheme"/>, whose
    /// companions are named <paramref name="prefix"/> + a suffix.</summary>
    public LinearWeight Read(JsonElement scheme, string name, string prefix, int rows, int columns)
    {
        var json = new NativeSchemeReader(scheme, Path, name);
        var s = NativeSchemes.Find(json.Scheme)
                ?? throw Fail(name, $"unknown scheme \"{json.Scheme}\"; this reader knows {string.Join(", ", NativeSchemes.All.Select(x => $"\"{x.Name}\""))}");
        if (s.Version > Version)
            throw Fail(name, $"scheme \"{s.Name}\" is defined by format version {s.Version}, but the file says version {Version}");
        var weight = s.Read(json, name, prefix, rows, columns, this);
        json.EnsureAllRead();
        return weight;
    }

    /// <summary>An error about tensor <paramref name="tensorName"/> of this file.</summary>
    public ModelFormatException Fail(string tensorName, string problem) => new(Path, $"tensor '{tensorName}': {problem}");

    private SafetensorsTensorInfo Claim(string tensorName, SafetensorsDType[] dtypes, long[] shape)
    {
        if (!file.TryGetInfo(tensorName, out var info))
            throw Fail(tensorName, "companion tensor is missing");
        if (!claimed.Add(tensorName))
            throw Fail(tensorName, "is claimed by two schemes");
        if (!dtypes.Contains(info.DType))
            throw Fail(tensorName, $"is {info.DType}, not {string.Join(" or ", dtypes)}");
        if (!info.Shape.SequenceEqual(shape))
            throw Fail(tensorName, $"has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", shape)}]");
        return info;
    }
}
