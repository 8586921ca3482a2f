using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using Squeeze.Tensors;

namespace Squeeze.Formats.Safetensors;

/// <summary>
/// A memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header (an optional
/// <c>__metadata__</c> string map, and per tensor its dtype, shape and <c>data_offsets</c>), then the data section.
/// The header is validated completely on open: offsets must match dtype × shape, stay inside the data section and
/// tile it without overlaps or holes, as the format requires. Float tensors (F32, F16, BF16) are available as
/// runtime <see cref="Tensor"/>s viewing the mapping; every dtype is available as raw bytes.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private const string MetadataKey = "__metadata__";

    private readonly Dictionary<string, SafetensorsTensorInfo> byName;
    private readonly bool ownsBuffer;

    private SafetensorsFile(NativeBuffer buffer, bool ownsBuffer, long dataStart, Dictionary<string, string> metadata, List<SafetensorsTensorInfo> tensors)
    {
        Buffer = buffer;
        this.ownsBuffer = ownsBuffer;
        DataStart = dataStart;
        Metadata = metadata;
        Tensors = tensors;
        byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The mapped bytes of the whole file.</summary>
    public NativeBuffer Buffer { get; }

    /// <summary>The file the bytes came from.</summary>
    public string Path => Buffer.Origin;

    /// <summary>Absolute offset of the data section: 8 + header length.</summary>
    public long DataStart { get; }

    /// <summary>The <c>__metadata__</c> map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Every tensor entry, ordered by data offset (then name, for empty tensors).</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }

    /// <summary>Maps and validates <paramref name="path"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="ModelFormatException">The file is not a valid safetensors file.</exception>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"safetensors file {path} does not exist", path);
        var buffer = NativeBuffer.MapFile(path);
        try
        {
            return Parse(buffer, ownsBuffer: true);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>The entry named <paramref name="name"/>, if present.</summary>
    public bool TryGetInfo(string name, out SafetensorsTensorInfo info) => byName.TryGetValue(name, out info!);

    /// <summary>The entry named <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor.</exception>
    public SafetensorsTensorInfo GetInfo(string name)
        => byName.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor '{name}'");

    /// <summary>Absolute offset of <paramref name="info"/>'s first byte inside <see cref="Buffer"/>.</summary>
    public long Offset(SafetensorsTensorInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        return DataStart + info.Begin;
    }

    /// <summary>The raw bytes of a tensor of any dtype, little-endian as stored; the tensor must be under 2 GiB.</summary>
    public ReadOnlySpan<byte> GetBytes(SafetensorsTensorInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        if (info.ByteLength > int.MaxValue)
            throw new NotSupportedException($"{Path}: tensor '{info.Name}' has {info.ByteLength} bytes, too many for a span; use Buffer and Offset");
        return Buffer.Span(Offset(info), (int)info.ByteLength);
    }

    /// <summary>A runtime tensor viewing the float tensor <paramref name="name"/> (F32, F16 or BF16), named
    /// <paramref name="tensorName"/> (default: the stored name). A scalar becomes shape [1].</summary>
    /// <exception cref="ModelFormatException">The tensor is not a float dtype, is empty, or has more than 4 dimensions.</exception>
    public Tensor GetTensor(string name, string? tensorName = null)
    {
        var info = GetInfo(name);
        if (!SafetensorsDTypes.TryGetGgmlType(info.DType, out var type))
            throw new ModelFormatException(Path, $"tensor '{name}' is {info.DType}; only F32, F16 and BF16 tensors can be used as weights");
        long[] shape = info.Shape.Length == 0 ? [1] : info.Shape;
        if (shape.Length > 4 || shape.Any(d => d == 0))
            throw new ModelFormatException(Path, $"tensor '{name}' has shape [{string.Join(", ", info.Shape)}]; weights need 1 to 4 non-zero dimensions");
        return new Tensor(tensorName ?? name, type, shape, Buffer, Offset(info));
    }

    /// <summary>Releases the mapping (when this object owns it).</summary>
    public void Dispose()
    {
        if (ownsBuffer)
            Buffer.Dispose();
    }

    /// <summary>Parses and validates the safetensors bytes in <paramref name="buffer"/>.</summary>
    internal static SafetensorsFile Parse(NativeBuffer buffer, bool ownsBuffer)
    {
        string file = buffer.Origin;
        if (buffer.Length < 8)
            throw new ModelFormatException(file, $"file is {buffer.Length} bytes, shorter than the 8-byte safetensors header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(buffer.Span(0, 8));
        if (headerLength > MaxHeaderBytes)
            throw new ModelFormatException(file, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit (not a safetensors file?)");
        if ((long)headerLength > buffer.Length - 8)
            throw new ModelFormatException(file, $"header length {headerLength} runs past the end of the {buffer.Length}-byte file");
        if (headerLength < 2)
            throw new ModelFormatException(file, $"header length {headerLength} is too short for a JSON object");
        long dataStart = 8 + (long)headerLength;
        long dataLength = buffer.Length - dataStart;

        var header = buffer.Span(8, (int)headerLength);
        if (header[0] != (byte)'{')
            throw new ModelFormatException(file, "header does not start with '{' (not a safetensors file?)");

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var tensors = new List<SafetensorsTensorInfo>();
        try
        {
            // JsonDocument needs managed memory; the header is bounded by the file size and MaxHeaderBytes.
            using var doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 16 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(file, "header is not a JSON object");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                string name = property.Name;
                if (!seen.Add(name))
                    throw new ModelFormatException(file, $"header names '{name}' twice");
                if (name == MetadataKey)
                    ReadMetadata(file, property.Value, metadata);
                else
                    tensors.Add(ReadTensorInfo(file, name, property.Value, dataLength));
            }
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(file, $"header is not valid JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            // Strings with escapes that are not valid UTF-16 (lone surrogates).
            throw new ModelFormatException(file, $"header has an invalid string: {e.Message}", e);
        }

        tensors.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin)
            : a.End != b.End ? a.End.CompareTo(b.End) : string.CompareOrdinal(a.Name, b.Name));
        long position = 0;
        foreach (var t in tensors)
        {
            if (t.Begin < position)
                throw new ModelFormatException(file, $"tensor '{t.Name}' (bytes [{t.Begin}, {t.End})) overlaps the tensor before it, which ends at {position}");
            if (t.Begin > position)
                throw new ModelFormatException(file, $"bytes [{position}, {t.Begin}) of the data section belong to no tensor (the format forbids holes)");
            position = t.End;
        }
        if (position != dataLength)
            throw new ModelFormatException(file, $"the tensors cover {position} bytes but the data section has {dataLength} (the format forbids trailing bytes)");
        return new SafetensorsFile(buffer, ownsBuffer, dataStart, metadata, tensors);
    }

    private static void ReadMetadata(string file, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null)
            return;
        if (value.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(file, $"{MetadataKey} is a {value.ValueKind}, not an object of strings");
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new ModelFormatException(file, $"{MetadataKey} entry '{entry.Name}' is a {entry.Value.ValueKind}, not a string");
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                throw new ModelFormatException(file, $"{MetadataKey} names '{entry.Name}' twice");
        }
    }

    private static SafetensorsTensorInfo ReadTensorInfo(string file, string name, JsonElement value, long dataLength)
    {
        [DoesNotReturn]
        void Fail(string problem) => throw new ModelFormatException(file, $"tensor '{name}': {problem}");
        if (value.ValueKind != JsonValueKind.Object)
            Fail($"entry is a {value.ValueKind}, not an object");
        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            Fail("no \"dtype\" string");
        string dtypeName = dtypeElement.GetString()!;
        if (!SafetensorsDTypes.TryParse(dtypeName, out var dtype))
            Fail($"unknown dtype \"{dtypeName}\"");
        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            Fail("no \"shape\" array");
        if (!value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
            Fail("no \"data_offsets\" pair [begin, end]");

        var shape = new long[shapeElement.GetArrayLength()];
        for (int i = 0; i < shape.Length; i++)
        {
            var d = shapeElement[i];
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out shape[i]) || shape[i] < 0)
                Fail($"shape {shapeElement.GetRawText()} has an entry that is not a non-negative integer");
        }
        long bytes = 0;
        if (!shape.Contains(0))
        {
            try
            {
                bytes = checked(shape.Aggregate(1L, (a, d) => checked(a * d)) * SafetensorsDTypes.Size(dtype));
            }
            catch (OverflowException)
            {
                Fail($"shape [{string.Join(", ", shape)}] of {dtype} is too large");
            }
        }

        long begin = 0, end = 0;
        var b = offsetsElement[0];
        var e = offsetsElement[1];
        if (b.ValueKind != JsonValueKind.Number || e.ValueKind != JsonValueKind.Number || !b.TryGetInt64(out begin) || !e.TryGetInt64(out end) || begin < 0 || end < begin)
            Fail($"data_offsets {offsetsElement.GetRawText()} are not integers 0 <= begin <= end");
        if (end > dataLength)
            Fail($"data_offsets [{begin}, {end}) run past the end of the {dataLength}-byte data section");
        if (end - begin != bytes)
            Fail($"data_offsets [{begin}, {end}) hold {end - begin} bytes but {dtype} [{string.Join(", ", shape)}] needs {bytes}");
        return new SafetensorsTensorInfo(name, dtype, shape, begin, end);
    }
}
