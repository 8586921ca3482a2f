using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Squeeze.Tensors;

namespace Squeeze.Formats.Gguf;

/// <summary>
/// A parsed GGUF file (versions 2 and 3): metadata, tensor infos and tensors that point into the memory-mapped bytes.
/// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, metadata (key string, u32 type, value),
/// tensor infos (name, u32 dims, u64 ne[dims] innermost first, u32 type, u64 offset), padding to
/// <see cref="Alignment"/>, then the data section. Every count, length and offset is checked against the bytes that
/// remain, so a corrupt file fails with a <see cref="ModelFormatException"/> before anything large is allocated.
/// Disposing releases the mapping; the tensors must not be used afterwards.
/// </summary>
public sealed class GgufFile : IDisposable
{
    /// <summary>"GGUF" read as a little-endian u32.</summary>
    public const uint Magic = 0x46554747;

    /// <summary>Data alignment when <c>general.alignment</c> is absent.</summary>
    public const int DefaultAlignment = 32;

    /// <summary>The key that sets the data alignment (a u32 power of two).</summary>
    public const string AlignmentKey = "general.alignment";

    private readonly NativeBuffer buffer;
    private readonly OrderedDictionary<string, GgufValue> values;
    private readonly Dictionary<string, Tensor> tensorsByName;

    private GgufFile(string path, NativeBuffer buffer, uint version, OrderedDictionary<string, GgufValue> values,
        IReadOnlyList<GgufTensorInfo> infos, int alignment, long dataOffset, IReadOnlyList<Tensor> tensors)
    {
        Path = path;
        this.buffer = buffer;
        Version = version;
        this.values = values;
        var plain = new OrderedDictionary<string, object>(values.Count, StringComparer.Ordinal);
        foreach (var (key, value) in values)
            plain.Add(key, value.Plain);
        Metadata = plain;
        TensorInfos = infos;
        Alignment = alignment;
        DataOffset = dataOffset;
        Tensors = tensors;
        tensorsByName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The file the bytes came from (or the name given to <see cref="Parse"/>), for messages.</summary>
    public string Path { get; }

    /// <summary>GGUF version: 2 or 3.</summary>
    public uint Version { get; }

    /// <summary>Metadata in file order: scalars boxed as .NET primitives, arrays as typed .NET arrays
    /// (<c>string[]</c>, <c>float[]</c>, <c>int[]</c> …), arrays of arrays as <c>object[]</c>.</summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }

    /// <summary>The same metadata with each value's exact GGUF type, in file order.</summary>
    public IReadOnlyDictionary<string, GgufValue> Values => values;

    /// <summary>Tensor infos in file order.</summary>
    public IReadOnlyList<GgufTensorInfo> TensorInfos { get; }

    /// <summary>Tensors in file order, pointing into <see cref="Buffer"/>.</summary>
    public IReadOnlyList<Tensor> Tensors { get; }

    /// <summary>Alignment of the data section and of every tensor offset in it.</summary>
    public int Alignment { get; }

    /// <summary>Absolute byte offset of the data section (the end of the header padded to <see cref="Alignment"/>).</summary>
    public long DataOffset { get; }

    /// <summary>The bytes of the whole file.</summary>
    public NativeBuffer Buffer => buffer;

    /// <summary>The tensor called <paramref name="name"/>, or false.</summary>
    public bool TryGetTensor(string name, out Tensor tensor) => tensorsByName.TryGetValue(name, out tensor!);

    /// <summary>Maps <paramref name="path"/> read-only and parses its header.</summary>
    /// <exception cref="ModelFormatException">The file is not a valid GGUF v2/v3 file.</exception>
    public static GgufFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        NativeBuffer buffer = NativeBuffer.MapFile(path);
        try
        {
            return Read(buffer, path);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Parses GGUF bytes held in memory (copied into an owned native buffer); <paramref name="origin"/> names them in errors.</summary>
    /// <exception cref="ModelFormatException">The bytes are not a valid GGUF v2/v3 file.</exception>
    public static unsafe GgufFile Parse(ReadOnlySpan<byte> bytes, string origin = "memory")
    {
        NativeBuffer buffer = NativeBuffer.Allocate(bytes.Length);
        try
        {
            bytes.CopyTo(new Span<byte>(buffer.Pointer, bytes.Length));
            return Read(buffer, origin);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Releases the bytes.</summary>
    public void Dispose() => buffer.Dispose();

    // ---------------------------------------------------------------------------------------------------------------
    // typed metadata access

    /// <summary>The value of <paramref name="key"/> with its GGUF type, or false when absent.</summary>
    public bool TryGetValue(string key, out GgufValue value) => values.TryGetValue(key, out value!);

    /// <summary>A string value, or null when absent.</summary>
    /// <exception cref="ModelFormatException">The key holds another type.</exception>
    public string? GetString(string key)
        => values.TryGetValue(key, out var v) ? v.Value as string ?? throw WrongType(key, v, "a string") : null;

    /// <summary>An integer value of any integer type, or null when absent.</summary>
    /// <exception cref="ModelFormatException">The key holds another type, or a u64 above <see cref="long.MaxValue"/>.</exception>
    public long? GetInteger(string key)
    {
        if (!values.TryGetValue(key, out var v))
            return null;
        return v.Value switch
        {
            byte x => x,
            sbyte x => x,
            ushort x => x,
            short x => x,
            uint x => x,
            int x => x,
            long x => x,
            ulong x when x <= long.MaxValue => (long)x,
            ulong x => throw new ModelFormatException(Path, $"metadata '{key}' = {x} is out of range"),
            _ => throw WrongType(key, v, "an integer"),
        };
    }

    /// <summary>A floating-point value (f32 or f64, integers accepted), or null when absent. NaN and infinities are returned as stored.</summary>
    /// <exception cref="ModelFormatException">The key holds a non-numeric type.</exception>
    public double? GetFloat(string key)
    {
        if (!values.TryGetValue(key, out var v))
            return null;
        return v.Value switch
        {
            float x => x,
            double x => x,
            _ => GetInteger(key),
        };
    }

    /// <summary>A boolean value, or null when absent.</summary>
    /// <exception cref="ModelFormatException">The key holds another type.</exception>
    public bool? GetBool(string key)
        => values.TryGetValue(key, out var v) ? v.Value as bool? ?? throw WrongType(key, v, "a bool") : null;

    /// <summary>An array value whose elements are <typeparamref name="T"/> (<c>string</c>, <c>float</c>, <c>int</c> …), or null when absent.</summary>
    /// <exception cref="ModelFormatException">The key holds another type.</exception>
    public T[]? GetArray<T>(string key)
        => values.TryGetValue(key, out var v) ? v.Value as T[] ?? throw WrongType(key, v, $"an array of {typeof(T).Name}") : null;

    private ModelFormatException WrongType(string key, GgufValue v, string expected)
    {
        string actual = v.Type == GgufValueType.Array ? $"an array of {v.ElementType}" : v.Type.ToString();
        return new ModelFormatException(Path, $"metadata '{key}' is {actual}, expected {expected}");
    }

    // ---------------------------------------------------------------------------------------------------------------
    // parsing

    private const int MaxDimensions = 4;     // GGML_MAX_DIMS
    private const int MaxArrayNesting = 8;   // arrays of arrays deeper than this are refused (bounds recursion)

    private static GgufFile Read(NativeBuffer buffer, string path)
    {
        var r = new Reader(buffer, path);
        if (buffer.Length < 4 || r.U32("magic") != Magic)
            throw r.Fail("not a GGUF file (the first 4 bytes are not \"GGUF\")");
        uint version = r.U32("version");
        if (version == 1)
            throw r.Fail("GGUF version 1 is not supported (only versions 2 and 3); convert the file again with a current llama.cpp");
        if (version is not (2 or 3))
            throw r.Fail($"unsupported GGUF version {version} (only versions 2 and 3; a big-endian file reads as a huge version)");

        ulong tensorCount = r.U64("tensor count");
        ulong kvCount = r.U64("metadata count");
        // smallest metadata entry: key length (8) + type (4) + a 1-byte value; smallest tensor info: name length (8)
        // + dims (4) + one dimension (8) + type (4) + offset (8).
        if (kvCount > (ulong)r.Remaining / 13)
            throw r.Fail($"metadata count {kvCount} cannot fit in the {r.Remaining} bytes that remain (truncated or corrupt file)");
        if (tensorCount > (ulong)r.Remaining / 32)
            throw r.Fail($"tensor count {tensorCount} cannot fit in the {r.Remaining} bytes that remain (truncated or corrupt file)");

        var values = new OrderedDictionary<string, GgufValue>((int)kvCount, StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            long at = r.Position;
            string key = r.String("metadata key");
            var type = r.ValueType($"type of metadata '{key}'");
            GgufValue value = r.Value(type, key, 0);
            if (!values.TryAdd(key, value))
                throw r.Fail($"metadata key '{key}' appears twice (second at offset {at})");
        }

        int alignment = DefaultAlignment;
        if (values.TryGetValue(AlignmentKey, out var a))
        {
            if (a.Value is not uint align)
                throw r.Fail($"'{AlignmentKey}' must be a u32, found {a.Type}");
            if (align == 0 || (align & (align - 1)) != 0 || align > 1u << 30)
                throw r.Fail($"'{AlignmentKey}' = {align} is not a power of two up to 2^30");
            alignment = (int)align;
        }

        var infos = new List<GgufTensorInfo>((int)tensorCount);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            var info = r.TensorInfo(alignment);
            if (!names.Add(info.Name))
                throw r.Fail($"tensor '{info.Name}' appears twice");
            infos.Add(info);
        }

        long headerEnd = r.Position;
        long dataOffset = (headerEnd + alignment - 1) / alignment * alignment;
        var tensors = new List<Tensor>(infos.Count);
        if (infos.Count > 0)
        {
            if (dataOffset > buffer.Length)
                throw r.Fail($"the data section would start at offset {dataOffset}, past the end of the file ({buffer.Length} bytes)");
            long dataLength = buffer.Length - dataOffset;
            foreach (var info in infos)
            {
                if (info.Offset > dataLength - info.ByteLength)
                    throw r.Fail($"tensor '{info.Name}' ({info.ByteLength} bytes at data offset {info.Offset}) runs past the end of the file ({dataLength} data bytes)");
            }
            var byOffset = infos.OrderBy(t => t.Offset).ToArray();
            for (int i = 1; i < byOffset.Length; i++)
            {
                var prev = byOffset[i - 1];
                if (byOffset[i].Offset < prev.Offset + prev.ByteLength)
                    throw r.Fail($"tensors '{prev.Name}' and '{byOffset[i].Name}' overlap (data offsets {prev.Offset} + {prev.ByteLength} > {byOffset[i].Offset})");
            }
            foreach (var info in infos)
                tensors.Add(new Tensor(info.Name, info.Type, info.Shape, buffer, dataOffset + info.Offset));
        }
        return new GgufFile(path, buffer, version, values, infos, alignment, dataOffset, tensors);
    }

    /// <summary>A cursor over the mapped bytes; every read checks what remains.</summary>
    private sealed unsafe class Reader(NativeBuffer buffer, string path)
    {
        private readonly byte* start = buffer.Pointer;
        private readonly long length = buffer.Length;

        public long Position { get; private set; }

        public long Remaining => length - Position;

        public ModelFormatException Fail(string problem) => new(path, problem);

        private byte* Take(long count, string what)
        {
            if (count > Remaining)
                throw Fail($"truncated: {what} needs {count} bytes at offset {Position}, only {Remaining} remain");
            byte* p = start + Position;
            Position += count;
            return p;
        }

        private T Read<T>(string what) where T : unmanaged => Unsafe.ReadUnaligned<T>(Take(sizeof(T), what));

        public uint U32(string what) => Read<uint>(what);

        public ulong U64(string what) => Read<ulong>(what);

        public GgufValueType ValueType(string what)
        {
            uint t = U32(what);
            if (t > (uint)GgufValueType.Float64)
                throw Fail($"{what}: unknown metadata value type {t} at offset {Position - 4}");
            return (GgufValueType)t;
        }

        public string String(string what)
        {
            ulong len = U64($"length of {what}");
            if (len > (ulong)Remaining)
                throw Fail($"{what}: string length {len} at offset {Position - 8} exceeds the {Remaining} bytes that remain (truncated or corrupt file)");
            if (len > int.MaxValue)
                throw Fail($"{what}: string length {len} is over 2 GiB");
            byte* p = Take((long)len, what);
            return Encoding.UTF8.GetString(p, (int)len);
        }

        public GgufValue Value(GgufValueType type, string key, int depth) => type switch
        {
            GgufValueType.UInt8 => GgufValue.Scalar(type, Read<byte>(key)),
            GgufValueType.Int8 => GgufValue.Scalar(type, Read<sbyte>(key)),
            GgufValueType.UInt16 => GgufValue.Scalar(type, Read<ushort>(key)),
            GgufValueType.Int16 => GgufValue.Scalar(type, Read<short>(key)),
            GgufValueType.UInt32 => GgufValue.Scalar(type, Read<uint>(key)),
            GgufValueType.Int32 => GgufValue.Scalar(type, Read<int>(key)),
            GgufValueType.Float32 => GgufValue.Scalar(type, Read<float>(key)),
            GgufValueType.Bool => GgufValue.Scalar(type, Bool(key)),
            GgufValueType.String => GgufValue.String(String($"value of '{key}'")),
            GgufValueType.UInt64 => GgufValue.Scalar(type, Read<ulong>(key)),
            GgufValueType.Int64 => GgufValue.Scalar(type, Read<long>(key)),
            GgufValueType.Float64 => GgufValue.Scalar(type, Read<double>(key)),
            GgufValueType.Array => Array(key, depth),
            _ => throw Fail($"'{key}': unknown metadata value type {(uint)type}"),
        };

        private bool Bool(string key)
        {
            byte b = Read<byte>(key);
            return b switch
            {
                0 => false,
                1 => true,
                _ => throw Fail($"'{key}': bool byte {b} at offset {Position - 1} is neither 0 nor 1"),
            };
        }

        private GgufValue Array(string key, int depth)
        {
            if (depth >= MaxArrayNesting)
                throw Fail($"'{key}': arrays nested deeper than {MaxArrayNesting}");
            var elementType = ValueType($"element type of '{key}'");
            ulong count = U64($"length of '{key}'");
            long minBytes = elementType switch
            {
                GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
                GgufValueType.UInt16 or GgufValueType.Int16 => 2,
                GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
                GgufValueType.Array => 12,
                _ => 8, // u64, i64, f64, and a string's length
            };
            if (count > (ulong)(Remaining / minBytes))
                throw Fail($"'{key}': array of {count} {elementType} values at offset {Position - 8} cannot fit in the {Remaining} bytes that remain (truncated or corrupt file)");
            int n = (int)count;
            System.Array items = elementType switch
            {
                GgufValueType.UInt8 => Copy<byte>(n, key),
                GgufValueType.Int8 => Copy<sbyte>(n, key),
                GgufValueType.UInt16 => Copy<ushort>(n, key),
                GgufValueType.Int16 => Copy<short>(n, key),
                GgufValueType.UInt32 => Copy<uint>(n, key),
                GgufValueType.Int32 => Copy<int>(n, key),
                GgufValueType.Float32 => Copy<float>(n, key),
                GgufValueType.UInt64 => Copy<ulong>(n, key),
                GgufValueType.Int64 => Copy<long>(n, key),
                GgufValueType.Float64 => Copy<double>(n, key),
                GgufValueType.Bool => Fill(n, _ => Bool(key)),
                GgufValueType.String => Fill(n, i => String($"item {i} of '{key}'")),
                _ => Fill(n, _ => Array(key, depth + 1)),
            };
            return GgufValue.Array(elementType, items);
        }

        private T[] Copy<T>(int count, string key) where T : unmanaged
        {
            byte* p = Take((long)count * sizeof(T), $"items of '{key}'");
            var items = new T[count];
            new ReadOnlySpan<byte>(p, count * sizeof(T)).CopyTo(MemoryMarshal.AsBytes(items.AsSpan()));
            return items;
        }

        private static T[] Fill<T>(int count, Func<int, T> read)
        {
            var items = new T[count];
            for (int i = 0; i < count; i++)
                items[i] = read(i);
            return items;
        }

        public GgufTensorInfo TensorInfo(int alignment)
        {
            string name = String("tensor name");
            uint dims = U32($"dimension count of tensor '{name}'");
            if (dims is 0 or > MaxDimensions)
                throw Fail($"tensor '{name}' has {dims} dimensions; 1 to {MaxDimensions} are supported");
            var shape = new long[dims];
            long elements = 1;
            for (int i = 0; i < dims; i++)
            {
                ulong ne = U64($"dimension {i} of tensor '{name}'");
                if (ne == 0 || ne > long.MaxValue)
                    throw Fail($"tensor '{name}' has dimension {i} = {ne}");
                if (elements > long.MaxValue / (long)ne)
                    throw Fail($"tensor '{name}': the product of its dimensions overflows 64 bits");
                elements *= (long)ne;
                shape[dims - 1 - i] = (long)ne; // ne[] is innermost first; Shape is outermost first
            }
            uint rawType = U32($"type of tensor '{name}'");
            if (!GgmlTypes.IsKnown(rawType))
                throw Fail($"tensor '{name}' has unknown type {rawType}");
            var type = (GgmlType)rawType;
            long columns = shape[^1];
            int block = GgmlTypes.BlockSize(type);
            if (columns % block != 0)
                throw Fail($"tensor '{name}': a row of {columns} values does not fit {type} blocks of {block}");
            long rowBytes = columns / block * GgmlTypes.BlockBytes(type);
            long rows = elements / columns;
            if (rows > long.MaxValue / rowBytes)
                throw Fail($"tensor '{name}': its byte length overflows 64 bits");
            ulong offset = U64($"data offset of tensor '{name}'");
            if (offset > long.MaxValue)
                throw Fail($"tensor '{name}' has data offset {offset}");
            if (offset % (ulong)alignment != 0)
                throw Fail($"tensor '{name}' has data offset {offset}, not a multiple of the alignment {alignment}");
            return new GgufTensorInfo(name, type, shape, (long)offset, rows * rowBytes);
        }
    }
}
