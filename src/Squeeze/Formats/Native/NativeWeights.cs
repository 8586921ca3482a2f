using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;

namespace Squeeze.Formats.Native;

/// <summary>
/// The validated view of a native <c>model.safetensors</c>: the format keys, every logical tensor with its scheme and
/// companion tensors, and row decoding. Validation is complete on construction, so decoding cannot fail on a file
/// that parsed (beyond argument errors).
/// </summary>
internal sealed class NativeWeights
{
    private readonly Dictionary<string, Entry> byName;

    private NativeWeights(SafetensorsFile file, List<Entry> entries)
    {
        File = file;
        Entries = entries;
        byName = entries.ToDictionary(e => e.Info.Name, StringComparer.Ordinal);
    }

    public SafetensorsFile File { get; }

    public IReadOnlyList<Entry> Entries { get; }

    public bool TryGet(string name, out Entry entry) => byName.TryGetValue(name, out entry!);

    /// <summary>The same weights with entries in the order of <paramref name="names"/> (which must name each once).</summary>
    public NativeWeights WithOrder(IEnumerable<string> names) => new(File, names.Select(n => byName[n]).ToList());

    /// <summary>Validates <paramref name="file"/> as a native weights file.</summary>
    /// <exception cref="ModelFormatException">Not a version-1 native file, or inconsistent; the message names the problem.</exception>
    public static NativeWeights Parse(SafetensorsFile file)
    {
        string path = file.Path;
        var meta = file.Metadata;
        if (!meta.TryGetValue(NativeFormat.FormatKey, out string? format) || format != NativeFormat.FormatName)
            throw new ModelFormatException(path, $"metadata \"{NativeFormat.FormatKey}\" is {(format is null ? "missing" : $"\"{format}\"")}, not \"{NativeFormat.FormatName}\"; not a Squeeze native file");
        if (!meta.TryGetValue(NativeFormat.VersionKey, out string? versionText))
            throw new ModelFormatException(path, $"metadata \"{NativeFormat.VersionKey}\" is missing");
        if (!int.TryParse(versionText, NumberStyles.None, CultureInfo.InvariantCulture, out int version) || version < 1)
            throw new ModelFormatException(path, $"format version \"{versionText}\" is not a positive integer");
        if (version > NativeFormat.Version)
            throw new ModelFormatException(path, $"format version {version} is newer than version {NativeFormat.Version}, the newest this reader supports; upgrade Squeeze to read it");

        var tensors = file.Tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var claimed = new HashSet<string>(StringComparer.Ordinal);
        var entries = new List<Entry>();
        foreach (var (key, json) in meta.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (key is NativeFormat.FormatKey or NativeFormat.VersionKey)
                continue;
            if (!key.StartsWith(NativeFormat.SchemeKeyPrefix, StringComparison.Ordinal))
            {
                if (key.StartsWith("squeeze.", StringComparison.Ordinal))
                    throw new ModelFormatException(path, $"metadata key \"{key}\" is not defined by format version {NativeFormat.Version}");
                continue; // foreign metadata is allowed and ignored
            }
            string name = key[NativeFormat.SchemeKeyPrefix.Length..];
            if (name.Length == 0)
                throw new ModelFormatException(path, $"metadata key \"{key}\" names no tensor");
            var scheme = ParseScheme(path, name, json);
            entries.Add(Quantized(path, name, scheme, tensors, claimed));
        }
        foreach (var t in file.Tensors)
        {
            if (claimed.Contains(t.Name))
                continue;
            foreach (string suffix in (string[])[NativeFormat.CodesSuffix, NativeFormat.ScalesSuffix, NativeFormat.MinsSuffix])
            {
                if (t.Name.EndsWith(suffix, StringComparison.Ordinal))
                    throw new ModelFormatException(path, $"tensor '{t.Name}' looks like a companion tensor but no \"{NativeFormat.SchemeKeyPrefix}{t.Name[..^suffix.Length]}\" metadata entry claims it");
            }
            if (t.ElementCount == 0)
                throw new ModelFormatException(path, $"plain tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}], which holds no values");
            if (!t.IsFloat)
                throw new ModelFormatException(path, $"plain tensor '{t.Name}' is {t.DType}; plain tensors must be F32, F16 or BF16");
            if (entries.Any(e => e.Info.Name == t.Name))
                throw new ModelFormatException(path, $"tensor '{t.Name}' is stored both plain and quantized");
            entries.Add(new Entry(new NativeTensorInfo(t.Name, t.Shape, null, t.DType), t, null, null));
        }
        return new NativeWeights(file, entries);
    }

    private static UniformScheme ParseScheme(string path, string name, string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 4 });
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("scheme", out var s) || s.ValueKind != JsonValueKind.String)
                throw new ModelFormatException(path, $"tensor '{name}': scheme {json} is not a JSON object with a \"scheme\" string");
            string scheme = s.GetString()!;
            if (scheme == UniformScheme.Name)
                return UniformScheme.Parse(root);
            if (NativeFormat.ReservedSchemes.Contains(scheme))
                throw new ModelFormatException(path, $"tensor '{name}': scheme \"{scheme}\" is reserved for a later format version; this reader supports version {NativeFormat.Version} (\"{UniformScheme.Name}\" only)");
            throw new ModelFormatException(path, $"tensor '{name}': unknown scheme \"{scheme}\"; format version {NativeFormat.Version} defines only \"{UniformScheme.Name}\"");
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"tensor '{name}': scheme is not valid JSON: {e.Message}", e);
        }
        catch (FormatException e)
        {
            throw new ModelFormatException(path, $"tensor '{name}': {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new ModelFormatException(path, $"tensor '{name}': scheme has an invalid string: {e.Message}", e);
        }
    }

    private static Entry Quantized(string path, string name, UniformScheme scheme, Dictionary<string, SafetensorsTensorInfo> tensors, HashSet<string> claimed)
    {
        void Fail(string problem) => throw new ModelFormatException(path, $"tensor '{name}' ({scheme}): {problem}");
        SafetensorsTensorInfo Companion(string suffix, SafetensorsDType dtype)
        {
            if (!tensors.TryGetValue(name + suffix, out var t))
                Fail($"companion tensor '{name}{suffix}' is missing");
            else if (t.DType != dtype)
                Fail($"'{t.Name}' is {t.DType}, not {dtype}");
            else if (t.Shape.Length != 2)
                Fail($"'{t.Name}' has shape [{string.Join(", ", t.Shape)}], not 2-D");
            else
            {
                claimed.Add(t.Name);
                return t;
            }
            throw new InvalidOperationException("unreachable");
        }
        var codes = Companion(NativeFormat.CodesSuffix, SafetensorsDType.U8);
        var scales = Companion(NativeFormat.ScalesSuffix, SafetensorsDType.F16);
        SafetensorsTensorInfo? mins = null;
        if (!scheme.Symmetric)
            mins = Companion(NativeFormat.MinsSuffix, SafetensorsDType.F16);
        else if (tensors.ContainsKey(name + NativeFormat.MinsSuffix))
            Fail($"'{name}{NativeFormat.MinsSuffix}' is present but the scheme is symmetric");

        long rows = scales.Shape[0], groups = scales.Shape[1];
        if (rows < 1 || groups < 1)
            Fail($"'{scales.Name}' has shape [{rows}, {groups}]; a quantized weight needs at least one row and one group");
        long columns = groups * scheme.Group; // groups ≤ file size / 2 and group < 2^31: no overflow
        if (columns > int.MaxValue / 8)
            Fail($"rows of {columns} values are too long");
        long rowBytes = scheme.RowBytes(columns);
        if (codes.Shape[0] != rows || codes.Shape[1] != rowBytes)
            Fail($"'{codes.Name}' has shape [{string.Join(", ", codes.Shape)}] but {rows} rows of {columns} {scheme.Bits}-bit codes need [{rows}, {rowBytes}]");
        if (mins is not null && !mins.Shape.SequenceEqual(scales.Shape))
            Fail($"'{mins.Name}' has shape [{string.Join(", ", mins.Shape)}] but '{scales.Name}' has [{rows}, {groups}]");
        return new Entry(new NativeTensorInfo(name, [rows, columns], scheme, SafetensorsDType.U8), codes, scales, mins);
    }

    /// <summary>Decodes row <paramref name="row"/> of <paramref name="entry"/> into <paramref name="destination"/>.</summary>
    public void DecodeRow(Entry entry, long row, Span<float> destination)
    {
        var info = entry.Info;
        if (row < 0 || row >= info.Rows)
            throw new ArgumentOutOfRangeException(nameof(row), row, $"tensor '{info.Name}' has {info.Rows} rows");
        if (destination.Length != info.Columns)
            throw new ArgumentException($"tensor '{info.Name}' has rows of {info.Columns} values; destination has {destination.Length}", nameof(destination));
        int columns = destination.Length;
        if (info.Scheme is not { } scheme)
        {
            int size = SafetensorsDTypes.Size(entry.Data.DType);
            var bytes = File.Buffer.Span(File.Offset(entry.Data) + row * columns * size, columns * size);
            switch (entry.Data.DType)
            {
                case SafetensorsDType.F32:
                    for (int i = 0; i < columns; i++)
                        destination[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(4 * i)..]);
                    break;
                case SafetensorsDType.F16:
                    for (int i = 0; i < columns; i++)
                        destination[i] = HalfConversions.F16ToF32(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]));
                    break;
                default: // BF16, the only other float dtype Parse accepts
                    for (int i = 0; i < columns; i++)
                        destination[i] = HalfConversions.Bf16ToF32(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]));
                    break;
            }
            return;
        }
        int groups = columns / scheme.Group;
        int rowBytes = (int)scheme.RowBytes(columns);
        var packed = File.Buffer.Span(File.Offset(entry.Data) + row * rowBytes, rowBytes);
        ushort[] scales = ReadHalves(entry.Scales!, row, groups);
        ushort[] mins = entry.Mins is null ? [] : ReadHalves(entry.Mins, row, groups);
        UniformCodec.DecodeRow(packed, scales, mins, scheme, destination);
    }

    private ushort[] ReadHalves(SafetensorsTensorInfo info, long row, int count)
    {
        var bytes = File.Buffer.Span(File.Offset(info) + row * count * 2L, count * 2);
        var result = new ushort[count];
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.Cast<byte, ushort>(bytes).CopyTo(result);
        }
        else
        {
            for (int i = 0; i < count; i++)
                result[i] = BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]);
        }
        return result;
    }

    /// <summary>A logical tensor and the stored tensors behind it (<see cref="Data"/>: the plain tensor or the codes).</summary>
    internal sealed record Entry(NativeTensorInfo Info, SafetensorsTensorInfo Data, SafetensorsTensorInfo? Scales, SafetensorsTensorInfo? Mins);
}
