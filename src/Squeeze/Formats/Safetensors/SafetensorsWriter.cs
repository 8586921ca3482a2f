using System.Buffers.Binary;
using System.Text.Json;
using Squeeze.Tensors;

namespace Squeeze.Formats.Safetensors;

/// <summary>
/// Collects tensors and metadata and writes them as one safetensors file. The output is deterministic: tensors are
/// ordered by element size (largest first, so every tensor stays aligned to its element size) and then by name; the
/// header is padded with spaces so the data section starts on an 8-byte boundary. The file is written beside the
/// destination under a temporary name and renamed into place, so a failed write never leaves a partial file.
/// </summary>
public sealed unsafe class SafetensorsWriter
{
    private readonly Dictionary<string, Entry> entries = new(StringComparer.Ordinal);

    /// <summary>The <c>__metadata__</c> string map; written sorted by key, omitted when empty.</summary>
    public IDictionary<string, string> Metadata { get; } = new SortedDictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Number of tensors added so far.</summary>
    public int Count => entries.Count;

    /// <summary>Adds a tensor of any dtype from raw little-endian bytes. <paramref name="data"/> is referenced, not
    /// copied, until <see cref="Write"/>; it must hold exactly dtype size × product(shape) bytes.</summary>
    public void Add(string name, SafetensorsDType dtype, long[] shape, ReadOnlyMemory<byte> data)
    {
        long bytes = CheckEntry(name, dtype, shape);
        if (data.Length != bytes)
            throw new ArgumentException($"tensor '{name}': {data.Length} bytes given but {dtype} [{string.Join(", ", shape)}] needs {bytes}", nameof(data));
        entries.Add(name, new Entry(name, dtype, (long[])shape.Clone(), bytes, data, null));
    }

    /// <summary>Adds a runtime tensor (F32, F16 or BF16) under <paramref name="name"/> (default: the tensor's name).
    /// Its bytes are read from its buffer during <see cref="Write"/>, which must still be alive then.</summary>
    /// <exception cref="NotSupportedException">The tensor is block-quantized.</exception>
    public void Add(Tensor tensor, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        name ??= tensor.Name;
        if (!SafetensorsDTypes.TryFromGgmlType(tensor.Type, out var dtype))
            throw new NotSupportedException($"tensor '{tensor.Name}' is {tensor.Type}; safetensors holds only F32, F16 and BF16 weights, dequantize it first");
        long bytes = CheckEntry(name, dtype, tensor.Shape);
        if (bytes != tensor.ByteLength)
            throw new ArgumentException($"tensor '{tensor.Name}' has {tensor.ByteLength} bytes, expected {bytes}", nameof(tensor));
        entries.Add(name, new Entry(name, dtype, (long[])tensor.Shape.Clone(), bytes, default, tensor));
    }

    /// <summary>Writes the file to <paramref name="path"/>, replacing any existing file only once the new one is complete.</summary>
    public void Write(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(directory);
        string temp = Path.Combine(directory, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                WriteTo(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>The size of the file <see cref="Write"/> would write: 8-byte length, padded header, data.</summary>
    public long FileLength()
    {
        var ordered = Ordered();
        return 8 + BuildHeader(ordered).LongLength + ordered.Sum(e => e.Bytes);
    }

    /// <summary>The tensors in the order they are written.</summary>
    private List<Entry> Ordered()
    {
        var list = entries.Values.ToList();
        list.Sort((a, b) =>
        {
            int bySize = SafetensorsDTypes.Size(b.DType).CompareTo(SafetensorsDTypes.Size(a.DType));
            return bySize != 0 ? bySize : string.CompareOrdinal(a.Name, b.Name);
        });
        return list;
    }

    /// <summary>Writes the whole file (header, padding, data) to <paramref name="stream"/>.</summary>
    internal void WriteTo(Stream stream)
    {
        var ordered = Ordered();
        byte[] header = BuildHeader(ordered);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        foreach (var e in ordered)
        {
            if (e.Tensor is null)
            {
                stream.Write(e.Data.Span);
                continue;
            }
            const int Chunk = 1 << 20;
            byte* p = e.Tensor.Data;
            for (long done = 0; done < e.Bytes; done += Chunk)
                stream.Write(new ReadOnlySpan<byte>(p + done, (int)Math.Min(Chunk, e.Bytes - done)));
        }
    }

    private byte[] BuildHeader(List<Entry> ordered)
    {
        using var json = new MemoryStream();
        using (var w = new Utf8JsonWriter(json))
        {
            w.WriteStartObject();
            if (Metadata.Count > 0)
            {
                w.WriteStartObject("__metadata__");
                foreach (var (key, value) in Metadata)
                    w.WriteString(key, value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var e in ordered)
            {
                w.WriteStartObject(e.Name);
                w.WriteString("dtype", SafetensorsDTypes.Name(e.DType));
                w.WriteStartArray("shape");
                foreach (long d in e.Shape)
                    w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + e.Bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += e.Bytes;
            }
            w.WriteEndObject();
        }
        // Pad with spaces so the data section (8 + header) starts 8-byte aligned.
        int padding = (int)((8 - json.Length % 8) % 8);
        for (int i = 0; i < padding; i++)
            json.WriteByte((byte)' ');
        return json.ToArray();
    }

    private long CheckEntry(string name, SafetensorsDType dtype, long[] shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (name == "__metadata__")
            throw new ArgumentException("'__metadata__' is reserved and cannot name a tensor", nameof(name));
        if (entries.ContainsKey(name))
            throw new ArgumentException($"tensor '{name}' was already added", nameof(name));
        long elements = 1;
        foreach (long d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"tensor '{name}' has a negative dimension {d}", nameof(shape));
            elements = checked(elements * d);
        }
        return checked(elements * SafetensorsDTypes.Size(dtype));
    }

    private sealed record Entry(string Name, SafetensorsDType DType, long[] Shape, long Bytes, ReadOnlyMemory<byte> Data, Tensor? Tensor);
}
