using System.Text;
using Squeeze.Tensors;

namespace Squeeze.Formats.Gguf;

/// <summary>
/// Writes a GGUF v3 file: metadata with exact value types, tensor infos, then the tensor data, each tensor padded to
/// <see cref="Alignment"/> (32 unless <c>general.alignment</c> is added). <see cref="Write(string)"/> writes a temporary
/// file beside the destination and renames it over the destination, so a failed write never leaves a partial file.
/// </summary>
public sealed class GgufWriter
{
    private readonly OrderedDictionary<string, GgufValue> metadata = new(StringComparer.Ordinal);
    private readonly List<Entry> tensors = [];
    private readonly HashSet<string> tensorNames = new(StringComparer.Ordinal);

    private sealed record Entry(string Name, GgmlType Type, long[] Shape, long ByteLength, Action<Stream>? WriteData)
    {
        /// <summary>Names and row counts of the pieces a tensor written through <see cref="Begin"/> takes, rows in order
        /// (a fused tensor's parts); null means the tensor is one piece under its own name.</summary>
        public IReadOnlyList<(string Name, long Rows)>? Parts { get; init; }
    }

    /// <summary>Alignment of the data section and of each tensor in it: <see cref="GgufFile.DefaultAlignment"/> or the
    /// value of an added <c>general.alignment</c>.</summary>
    public int Alignment { get; private set; } = GgufFile.DefaultAlignment;

    /// <summary>Adds a metadata entry (in order). A <c>general.alignment</c> entry must be a u32 power of two and sets <see cref="Alignment"/>.</summary>
    /// <exception cref="ArgumentException">The key is already present, or the value's .NET type does not match its GGUF type.</exception>
    public void AddMetadata(string key, GgufValue value)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        Validate(key, value.Type, value.ElementType, value.Value);
        if (key == GgufFile.AlignmentKey)
        {
            if (value.Value is not uint a || a == 0 || (a & (a - 1)) != 0 || a > 1u << 30)
                throw new ArgumentException($"'{key}' must be a u32 power of two up to 2^30", nameof(value));
            Alignment = (int)a;
        }
        if (!metadata.TryAdd(key, value))
            throw new ArgumentException($"metadata key '{key}' was already added", nameof(key));
    }

    /// <summary>Adds every metadata entry of <paramref name="values"/>, in order.</summary>
    public void AddMetadata(IEnumerable<KeyValuePair<string, GgufValue>> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        foreach (var (key, value) in values)
            AddMetadata(key, value);
    }

    /// <summary>Adds a tensor whose encoded bytes are <paramref name="data"/>; <paramref name="shape"/> is outermost first.</summary>
    /// <exception cref="ArgumentException">The name is taken, the shape is invalid, or the data length does not match type and shape.</exception>
    public void AddTensor(string name, GgmlType type, long[] shape, byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        long bytes = ByteLength(name, type, shape);
        if (data.Length != bytes)
            throw new ArgumentException($"tensor '{name}' needs {bytes} bytes of {type}, got {data.Length}", nameof(data));
        Add(new Entry(name, type, (long[])shape.Clone(), bytes, s => s.Write(data)));
    }

    /// <summary>Adds a tensor whose encoded bytes <paramref name="writeData"/> writes when the file is written, so large
    /// tensors are encoded while streaming out rather than held in memory. It must write exactly the bytes that
    /// <paramref name="type"/> and <paramref name="shape"/> take, or <see cref="Write(Stream)"/> fails.</summary>
    public void AddTensor(string name, GgmlType type, long[] shape, Action<Stream> writeData)
    {
        ArgumentNullException.ThrowIfNull(writeData);
        long bytes = ByteLength(name, type, shape);
        Add(new Entry(name, type, (long[])shape.Clone(), bytes, writeData));
    }

    /// <summary>Adds a tensor whose bytes are not known yet: they are written later, in any order, through the
    /// <see cref="GgufPartialFile"/> that <see cref="Begin"/> opens (so each tensor can be encoded and written as soon as
    /// it is ready, and none has to wait in memory for the ones before it).</summary>
    public void AddTensor(string name, GgmlType type, long[] shape)
    {
        long bytes = ByteLength(name, type, shape);
        Add(new Entry(name, type, (long[])shape.Clone(), bytes, null));
    }

    /// <summary>Adds a tensor whose bytes are written later through <see cref="Begin"/>'s file in <paramref name="parts"/>:
    /// the rows of each part, in order, under the part's name (a fused tensor whose parts are encoded separately).</summary>
    /// <exception cref="ArgumentException">The parts' rows do not add up to the tensor's rows, or a name is taken.</exception>
    public void AddTensor(string name, GgmlType type, long[] shape, IReadOnlyList<(string Name, long Rows)> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        long bytes = ByteLength(name, type, shape);
        long rows = shape[..^1].Aggregate(1L, (a, b) => a * b);
        if (parts.Sum(p => p.Rows) != rows || parts.Any(p => p.Rows <= 0))
            throw new ArgumentException($"tensor '{name}' has {rows} rows; its parts have {string.Join(" + ", parts.Select(p => p.Rows))}", nameof(parts));
        Add(new Entry(name, type, (long[])shape.Clone(), bytes, null) { Parts = [.. parts] });
    }

    /// <summary>
    /// Starts the file at <paramref name="path"/>: a temporary file beside it (or <paramref name="temporaryPath"/>)
    /// holding the header, the tensor infos and room for every tensor's data, which the returned file takes in any
    /// order and renames over <paramref name="path"/> once every tensor is in. The bytes are those <see cref="Write(string)"/>
    /// writes. Disposed before <see cref="GgufPartialFile.Commit"/>, it deletes the temporary file (unless told to keep it).
    /// With <paramref name="alreadyWritten"/>, the temporary file is one an earlier run began with the same header and
    /// filled with those tensors; it is reopened, not started again.
    /// </summary>
    /// <exception cref="InvalidDataException">The file to continue does not have this header or this length.</exception>
    public GgufPartialFile Begin(string path, string? temporaryPath = null, IReadOnlyCollection<string>? alreadyWritten = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = System.IO.Path.GetFullPath(path);
        string temp = temporaryPath ?? System.IO.Path.Combine(System.IO.Path.GetDirectoryName(full)!, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        var header = new MemoryStream();
        long[] offsets;
        using (var w = new BinaryWriter(header, Encoding.UTF8, leaveOpen: true))
        {
            offsets = WriteHeader(w);
            w.Flush();
        }
        long dataStart = Align(header.Length);
        long end = dataStart + (tensors.Count == 0 ? 0 : Align(offsets[^1] + tensors[^1].ByteLength));
        var places = new Dictionary<string, (long Offset, long Length)>(StringComparer.Ordinal);
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            if (t.Parts is null)
            {
                places[t.Name] = (dataStart + offsets[i], t.ByteLength);
                continue;
            }
            long rowBytes = GgmlTypes.RowBytes(t.Type, t.Shape[^1]), at = dataStart + offsets[i];
            foreach (var (part, rows) in t.Parts)
            {
                if (!places.TryAdd(part, (at, rows * rowBytes)))
                    throw new InvalidOperationException($"tensor part '{part}' of '{t.Name}' is named twice");
                at += rows * rowBytes;
            }
        }
        var stream = new FileStream(temp, alreadyWritten is null ? FileMode.Create : FileMode.Open, FileAccess.ReadWrite, FileShare.None, 1 << 20);
        try
        {
            if (alreadyWritten is null)
            {
                header.Position = 0;
                header.CopyTo(stream);
                stream.SetLength(end);
            }
            else
            {
                var existing = new byte[header.Length];
                if (stream.Length != end || stream.ReadAtLeast(existing, existing.Length, throwOnEndOfStream: false) != existing.Length || !existing.AsSpan().SequenceEqual(header.GetBuffer().AsSpan(0, (int)header.Length)))
                    throw new InvalidDataException($"{temp}: not the beginning of this file (another header or length)");
            }
            return new GgufPartialFile(stream, temp, full, places, alreadyWritten ?? []);
        }
        catch
        {
            stream.Dispose();
            if (alreadyWritten is null)
                File.Delete(temp);
            throw;
        }
    }

    /// <summary>Adds a copy of <paramref name="tensor"/> (its name, type, shape and bytes, read when the file is written).</summary>
    public void AddTensor(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        Add(new Entry(tensor.Name, tensor.Type, (long[])tensor.Shape.Clone(), tensor.ByteLength, s =>
        {
            for (long r = 0; r < tensor.Rows; r++)
                s.Write(tensor.Row(r));
        }));
    }

    /// <summary>Writes the file to <paramref name="path"/> through a temporary file in the same directory, renamed over it at the end.</summary>
    public void Write(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = System.IO.Path.GetFullPath(path);
        string temp = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(full)!, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Write(stream);
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

    /// <summary>Writes the whole file to <paramref name="stream"/> (from its current position, which counts as offset 0).</summary>
    public void Write(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        long written = 0;
        using var w = new BinaryWriter(new CountingStream(stream, n => written += n), Encoding.UTF8, leaveOpen: true);
        var offsets = WriteHeader(w);
        w.Flush();
        Pad(w, Align(written) - written);
        long dataStart = written;
        for (int i = 0; i < tensors.Count; i++)
        {
            w.Flush();
            Pad(w, dataStart + offsets[i] - written);
            var writeData = tensors[i].WriteData ?? throw new InvalidOperationException($"tensor '{tensors[i].Name}' has no data to write: it was added to be written through Begin");
            writeData(w.BaseStream);
            w.Flush();
            if (written != dataStart + offsets[i] + tensors[i].ByteLength)
                throw new InvalidOperationException($"tensor '{tensors[i].Name}' wrote {written - dataStart - offsets[i]} bytes, expected {tensors[i].ByteLength}");
        }
        // llama.cpp pads the last tensor too
        Pad(w, Align(written - dataStart) - (written - dataStart));
        w.Flush();
    }

    /// <summary>
    /// Bytes of the file <see cref="Write(Stream)"/> writes, computed without encoding any tensor: header, metadata and
    /// tensor infos padded to <see cref="Alignment"/>, then each tensor's data padded to <see cref="Alignment"/>.
    /// </summary>
    public long FileLength()
    {
        long header = 0;
        using (var w = new BinaryWriter(new CountingStream(Stream.Null, n => header += n), Encoding.UTF8, leaveOpen: true))
        {
            WriteHeader(w);
            w.Flush();
        }
        long length = Align(header);
        foreach (var t in tensors)
            length += Align(t.ByteLength);
        return length;
    }

    // Magic, version, counts, metadata and tensor infos; returns each tensor's offset in the data section.
    private long[] WriteHeader(BinaryWriter w)
    {
        w.Write(GgufFile.Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            w.Write((uint)value.Type);
            WriteValue(w, value.Type, value.ElementType, value.Value);
        }
        long offset = 0;
        var offsets = new long[tensors.Count];
        for (int i = 0; i < tensors.Count; i++)
        {
            var t = tensors[i];
            offsets[i] = offset;
            WriteString(w, t.Name);
            w.Write((uint)t.Shape.Length);
            for (int d = t.Shape.Length - 1; d >= 0; d--) // ne[] innermost first
                w.Write((ulong)t.Shape[d]);
            w.Write((uint)t.Type);
            w.Write((ulong)offset);
            offset = Align(offset + t.ByteLength);
        }
        return offsets;
    }

    private long Align(long x) => (x + Alignment - 1) / Alignment * Alignment;

    private static void Pad(BinaryWriter w, long count)
    {
        for (long i = 0; i < count; i++)
            w.Write((byte)0);
        w.Flush();
    }

    private void Add(Entry entry)
    {
        ByteLength(entry.Name, entry.Type, entry.Shape);
        if (!tensorNames.Add(entry.Name))
            throw new ArgumentException($"tensor '{entry.Name}' was already added", nameof(entry));
        tensors.Add(entry);
    }

    private static long ByteLength(string name, GgmlType type, long[] shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Length is 0 or > 4 || shape.Any(d => d <= 0))
            throw new ArgumentException($"tensor '{name}' has shape [{string.Join(", ", shape)}]", nameof(shape));
        long rows = shape[..^1].Aggregate(1L, (a, b) => checked(a * b));
        return checked(GgmlTypes.RowBytes(type, shape[^1]) * rows);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, GgufValueType type, GgufValueType elementType, object value)
    {
        switch (type)
        {
            case GgufValueType.UInt8: w.Write((byte)value); break;
            case GgufValueType.Int8: w.Write((sbyte)value); break;
            case GgufValueType.UInt16: w.Write((ushort)value); break;
            case GgufValueType.Int16: w.Write((short)value); break;
            case GgufValueType.UInt32: w.Write((uint)value); break;
            case GgufValueType.Int32: w.Write((int)value); break;
            case GgufValueType.Float32: w.Write((float)value); break;
            case GgufValueType.Bool: w.Write((bool)value ? (byte)1 : (byte)0); break;
            case GgufValueType.String: WriteString(w, (string)value); break;
            case GgufValueType.UInt64: w.Write((ulong)value); break;
            case GgufValueType.Int64: w.Write((long)value); break;
            case GgufValueType.Float64: w.Write((double)value); break;
            case GgufValueType.Array:
                var items = (Array)value;
                w.Write((uint)elementType);
                w.Write((ulong)items.Length);
                foreach (object item in items)
                {
                    if (item is GgufValue nested)
                        WriteValue(w, GgufValueType.Array, nested.ElementType, nested.Value);
                    else
                        WriteValue(w, elementType, GgufValueType.UInt8, item);
                }
                break;
            default: throw new ArgumentOutOfRangeException(nameof(type), type, "unknown GGUF value type");
        }
    }

    private static void Validate(string key, GgufValueType type, GgufValueType elementType, object value)
    {
        bool ok = type switch
        {
            GgufValueType.UInt8 => value is byte,
            GgufValueType.Int8 => value is sbyte,
            GgufValueType.UInt16 => value is ushort,
            GgufValueType.Int16 => value is short,
            GgufValueType.UInt32 => value is uint,
            GgufValueType.Int32 => value is int,
            GgufValueType.Float32 => value is float,
            GgufValueType.Bool => value is bool,
            GgufValueType.String => value is string,
            GgufValueType.UInt64 => value is ulong,
            GgufValueType.Int64 => value is long,
            GgufValueType.Float64 => value is double,
            GgufValueType.Array => elementType == GgufValueType.Array
                ? value is GgufValue[] nested && nested.All(n => n.Type == GgufValueType.Array)
                : value is Array a && a.GetType().GetElementType() == ElementClrType(elementType),
            _ => false,
        };
        if (!ok)
            throw new ArgumentException($"metadata '{key}': a {value.GetType().Name} is not a GGUF {type}{(type == GgufValueType.Array ? $" of {elementType}" : "")}", nameof(value));
        if (value is GgufValue[] inner)
        {
            foreach (var n in inner)
                Validate(key, n.Type, n.ElementType, n.Value);
        }
    }

    private static Type? ElementClrType(GgufValueType t) => t switch
    {
        GgufValueType.UInt8 => typeof(byte),
        GgufValueType.Int8 => typeof(sbyte),
        GgufValueType.UInt16 => typeof(ushort),
        GgufValueType.Int16 => typeof(short),
        GgufValueType.UInt32 => typeof(uint),
        GgufValueType.Int32 => typeof(int),
        GgufValueType.Float32 => typeof(float),
        GgufValueType.Bool => typeof(bool),
        GgufValueType.String => typeof(string),
        GgufValueType.UInt64 => typeof(ulong),
        GgufValueType.Int64 => typeof(long),
        GgufValueType.Float64 => typeof(double),
        _ => null,
    };

    /// <summary>Passes writes through and reports how many bytes went by (positions of non-seekable streams).</summary>
    private sealed class CountingStream(Stream inner, Action<long> counted) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count)
        {
            inner.Write(buffer, offset, count);
            counted(count);
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            counted(buffer.Length);
        }
    }
}
