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

    /// <summary>Companion tensor <paramref name="tensorName"/>'s values as stored (little-endian), as memory over the mapped
    /// file (no copy: a weight that holds it keeps the file's pages, which the system may drop and read again), after
    /// checking that it exists, is not claimed twice, and has exactly <paramref name="dtype"/> and
    /// <paramref name="shape"/>. <typeparamref name="T"/> is the dtype's element type (<c>byte</c> for U8, <c>ushort</c>
    /// for F16 and U16, <c>int</c> for I32 …). The memory is valid while the file is open.</summary>
    /// <exception cref="ModelFormatException">It is missing, claimed twice, of another dtype or shape, or of 2^31 values or more.</exception>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not as wide as the dtype's elements.</exception>
    public unsafe ReadOnlyMemory<T> Companion<T>(string tensorName, SafetensorsDType dtype, long[] shape)
        where T : unmanaged
    {
        if (sizeof(T) != SafetensorsDTypes.Size(dtype))
            throw new ArgumentException($"{typeof(T).Name} is {sizeof(T)} bytes; {dtype} elements are {SafetensorsDTypes.Size(dtype)}", nameof(dtype));
        var info = Claim(tensorName, [dtype], shape);
        long count = info.ByteLength / sizeof(T);
        if (count > int.MaxValue)
            throw Fail(tensorName, $"has {count} values; a companion tensor holds fewer than 2^31");
        return file.Buffer.Memory<T>(file.Offset(info), (int)count);
    }

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
