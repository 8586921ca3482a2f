using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
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

    /// <summary>Stores a companion tensor (little-endian data of exactly shape × dtype size bytes).</summary>
    public void Add(string tensorName, SafetensorsDType dtype, long[] shape, byte[] data)
    {
        long expected = shape.Aggregate(1L, (a, d) => a * d) * SafetensorsDTypes.Size(dtype);
        if (data.LongLength != expected)
            throw new ArgumentException($"'{tensorName}': {data.LongLength} bytes for [{string.Join(", ", shape)}] {dtype}, which takes {expected}", nameof(data));
        writer.Add(tensorName, dtype, shape, data);
    }

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
