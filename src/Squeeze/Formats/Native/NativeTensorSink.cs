using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>Where schemes put their companion tensors while a native file is written; remembers the newest format
/// version a stored scheme needs (the file is written with that version).</summary>
public sealed class NativeTensorSink
{
    private readonly SafetensorsWriter writer;

    internal NativeTensorSink(SafetensorsWriter writer) => this.writer = writer;

    /// <summary>The lowest format version that expresses everything stored so far.</summary>
    public int Version { get; private set; } = 1;

    /// <summary>Stores a companion tensor (little-endian data of exactly shape × dtype size bytes). The data is referenced,
    /// not copied, until the file is written: a weight's own bytes (over a mapped candidate file, say) are passed as they
    /// are, so writing a model never holds a second copy of its largest parts.</summary>
    public void Add(string tensorName, SafetensorsDType dtype, long[] shape, ReadOnlyMemory<byte> data)
    {
        long expected = shape.Aggregate(1L, (a, d) => a * d) * SafetensorsDTypes.Size(dtype);
        if (data.Length != expected)
            throw new ArgumentException($"'{tensorName}': {data.Length} bytes for [{string.Join(", ", shape)}] {dtype}, which takes {expected}", nameof(data));
        writer.Add(tensorName, dtype, shape, data);
    }

    /// <summary>Stores an F32, F16 or BF16 runtime tensor as the companion <paramref name="tensorName"/>, read from its
    /// buffer when the file is written.</summary>
    public void Add(string tensorName, Tensor tensor) => writer.Add(tensor, tensorName);

    /// <summary>Stores <paramref name="weight"/> with its scheme under <paramref name="prefix"/> and returns the scheme
    /// object to nest in the caller's.</summary>
    /// <exception cref="NotSupportedException">No scheme stores this kind of weight.</exception>
    public JsonObject Store(string prefix, LinearWeight weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        var scheme = NativeSchemes.For(weight);
        Version = Math.Max(Version, scheme.Version);
        var json = scheme.Store(weight, prefix, this);
        json.Remove("scheme");
        json.Insert(0, "scheme", scheme.Name);
        return json;
    }
}
