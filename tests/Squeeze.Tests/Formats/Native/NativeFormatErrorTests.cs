using System.Diagnostics;
using System.Runtime.InteropServices;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class NativeFormatErrorTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-native-errors-{Guid.NewGuid():N}");

    public NativeFormatErrorTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    /// <summary>A small valid native file: "w" uniform 3-bit group 48 asymmetric [4, 96], "s" uniform 5-bit group 32
    /// symmetric [2, 64], and a plain F32 "norm" [8]. <paramref name="edit"/> may change the metadata and the tensor list
    /// before the file is assembled.</summary>
    internal static SafetensorsWriter Sample(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>>? edit = null)
    {
        var random = new Random(3);
        var metadata = new Dictionary<string, string>
        {
            [NativeFormat.FormatKey] = NativeFormat.FormatName,
            [NativeFormat.VersionKey] = "1",
        };
        var tensors = new Dictionary<string, (SafetensorsDType, long[], byte[])>();
        void Quantized(string name, int rows, int columns, UniformScheme scheme)
        {
            int groups = columns / scheme.Group, rowBytes = (int)scheme.RowBytes(columns);
            var codes = new byte[rows * rowBytes];
            var scales = new ushort[rows * groups];
            var mins = new ushort[rows * groups];
            var values = new float[columns];
            var rowCodes = new byte[columns];
            for (int r = 0; r < rows; r++)
            {
                for (int c = 0; c < columns; c++)
                    values[c] = (float)(random.NextDouble() - 0.5);
                UniformCodec.EncodeRow(values, [], scheme, false, rowCodes, scales.AsSpan(r * groups, groups), mins.AsSpan(r * groups, groups));
                UniformCodec.Pack(rowCodes, scheme.Bits, codes.AsSpan(r * rowBytes, rowBytes));
            }
            metadata[NativeFormat.SchemeKeyPrefix + name] = scheme.ToJson();
            tensors[name + ".codes"] = (SafetensorsDType.U8, [rows, rowBytes], codes);
            tensors[name + ".scales"] = (SafetensorsDType.F16, [rows, groups], MemoryMarshal.AsBytes(scales.AsSpan()).ToArray());
            if (!scheme.Symmetric)
                tensors[name + ".mins"] = (SafetensorsDType.F16, [rows, groups], MemoryMarshal.AsBytes(mins.AsSpan()).ToArray());
        }
        Quantized("w", 4, 96, new UniformScheme(3, 48, symmetric: false));
        Quantized("s", 2, 64, new UniformScheme(5, 32, symmetric: true));
        tensors["norm"] = (SafetensorsDType.F32, [8], MemoryMarshal.AsBytes(Enumerable.Range(0, 8).Select(i => i * 0.25f).ToArray().AsSpan()).ToArray());
        edit?.Invoke(metadata, tensors);
        var writer = new SafetensorsWriter();
        foreach (var (k, v) in metadata)
            writer.Metadata[k] = v;
        foreach (var (name, (dtype, shape, data)) in tensors)
            writer.Add(name, dtype, shape, data);
        return writer;
    }

    private string WriteSample(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>>? edit)
    {
        string path = Path.Combine(root, $"{Guid.NewGuid():N}.safetensors");
        Sample(edit).Write(path);
        return path;
    }

    /// <summary>The logical shapes config.json would give the sample's tensors.</summary>
    internal static Dictionary<string, long[]> SampleShapes { get; } = new()
    {
        ["w"] = [4, 96],
        ["s"] = [2, 64],
        ["norm"] = [8],
    };

    private void AssertRejected(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>> edit, string expected)
    {
        string path = WriteSample(edit);
        using var file = SafetensorsFile.Open(path);
        var e = Assert.Throws<ModelFormatException>(() => NativeMutations.ParseAndDecode(file, SampleShapes));
        Assert.Equal(path, e.Path);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.StartsWith(path, e.Message, StringComparison.Ordinal);
    }

    private static void SetScheme(IDictionary<string, string> m, string json) => m[NativeFormat.SchemeKeyPrefix + "w"] = json;

    [Fact]
    public void The_sample_is_valid_and_decodes()
    {
        string path = WriteSample(null);
        using var file = SafetensorsFile.Open(path);
        var (rows, plain) = NativeMutations.ParseAndDecode(file, SampleShapes);
        Assert.Equal(4 + 2 + 1, rows + plain);
    }

    [Fact]
    public void A_newer_format_version_is_refused_naming_the_version()
        => AssertRejected((m, _) => m[NativeFormat.VersionKey] = "4", "format version 4 is newer than version 3");

    [Fact]
    public void A_non_numeric_or_missing_version_or_format_is_refused()
    {
        AssertRejected((m, _) => m[NativeFormat.VersionKey] = "1.0", "format version \"1.0\" is not a positive integer");
        AssertRejected((m, _) => m.Remove(NativeFormat.VersionKey), "\"squeeze.version\" is missing");
        AssertRejected((m, _) => m[NativeFormat.FormatKey] = "pt", "not a Squeeze native file");
    }

    [Fact]
    public void An_unknown_scheme_is_refused()
        => AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"lattice\",\"bits\":3}"), "unknown scheme \"lattice\"");

    [Fact]
    public void A_version_2_scheme_in_a_version_1_file_is_refused_naming_both_versions()
        => AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"sum\",\"terms\":[]}"), "scheme \"sum\" is defined by format version 2, but the file says version 1");

    [Fact]
    public void Bits_outside_2_to_8_are_refused()
    {
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":9,\"group\":48,\"symmetric\":false,\"scale\":\"f16\"}"), "\"bits\" is 9; it must be an integer in 2..8");
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":1,\"group\":48,\"symmetric\":false,\"scale\":\"f16\"}"), "\"bits\" is 1; it must be an integer in 2..8");
    }

    [Fact]
    public void Unknown_or_missing_scheme_keys_and_bad_json_are_refused()
    {
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":3,\"group\":48,\"symmetric\":false,\"scale\":\"f16\",\"seed\":1}"), "unknown key \"seed\"");
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":3,\"symmetric\":false,\"scale\":\"f16\"}"), "\"group\" is missing from scheme \"uniform\"");
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":3,\"group\":48,\"symmetric\":false,\"scale\":\"bf16\"}"), "\"scale\" is \"bf16\"; allowed: \"f16\"");
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\","), "not valid JSON");
    }

    [Fact]
    public void A_group_inconsistent_with_the_stored_shapes_is_refused()
    {
        // Group 32 instead of 48: rows of 96 have 3 groups, but 2 scales per row are stored.
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":3,\"group\":32,\"symmetric\":false,\"scale\":\"f16\"}"),
            "tensor 'w.scales': has shape [4, 2], expected [4, 3]");
        // Bits 4 instead of 3: rows of 96 codes need 48 bytes.
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":4,\"group\":48,\"symmetric\":false,\"scale\":\"f16\"}"),
            "tensor 'w.codes': has shape [4, 36], expected [4, 48]");
        // A group that does not divide the row.
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"uniform\",\"bits\":3,\"group\":36,\"symmetric\":false,\"scale\":\"f16\"}"),
            "group 36 does not divide the row length 96");
    }

    [Fact]
    public void Inconsistent_companion_shapes_and_dtypes_are_refused()
    {
        AssertRejected((_, t) => t["w.mins"] = (SafetensorsDType.F16, [4, 3], new byte[24]), "tensor 'w.mins': has shape [4, 3], expected [4, 2]");
        AssertRejected((_, t) => t["w.scales"] = (SafetensorsDType.F32, [4, 2], new byte[32]), "tensor 'w.scales': is F32, not F16");
        AssertRejected((_, t) => t["w.codes"] = (SafetensorsDType.U8, [144], new byte[144]), "tensor 'w.codes': has shape [144], expected [4, 36]");
    }

    [Fact]
    public void Missing_or_orphaned_companion_tensors_are_refused()
    {
        AssertRejected((_, t) => t.Remove("w.mins"), "tensor 'w.mins': companion tensor is missing");
        AssertRejected((_, t) => t.Remove("w.codes"), "tensor 'w.codes': companion tensor is missing");
        AssertRejected((m, _) => m.Remove(NativeFormat.SchemeKeyPrefix + "w"), "no \"squeeze.scheme.w\" metadata entry claims it");
        AssertRejected((_, t) => t["s.mins"] = (SafetensorsDType.F16, [2, 2], new byte[8]), "tensor 's.mins' looks like a companion tensor of 's' but its scheme does not use it");
    }

    [Fact]
    public void Non_float_plain_tensors_and_unknown_squeeze_keys_are_refused()
    {
        AssertRejected((_, t) => t["ids"] = (SafetensorsDType.I32, [2], new byte[8]), "plain tensor 'ids' is I32");
        AssertRejected((m, _) => m["squeeze.rotation_seed"] = "7", "metadata key \"squeeze.rotation_seed\" is not defined by format version 1");
    }

    private const int Iterations = 12_000;

    private static readonly string[] Swaps =
    [
        "uniform", "codebook", "lattice", "true", "false", "f16", "bf16", "\\\"bits\\\"", "\\\"group\\\"", "\\\"scale\\\"",
        "U8", "F16", "F32", "I32", "w.codes", "w.scales", "w.mins", "s.mins", "squeeze", "squeeze.version", "squeeze.scheme.w",
        "0", "1", "2", "3", "8", "9", "48", "96", "-1", "4294967296", "null", "{}", "[]", ",",
    ];

    /// <summary>Every mutation of a small native file either parses and decodes every row, or throws
    /// ModelFormatException naming the file; never another exception.</summary>
    [Fact]
    public void Mutated_native_files_load_and_decode_or_throw_ModelFormatException()
    {
        var stream = new MemoryStream();
        Sample().WriteTo(stream);
        var stopwatch = Stopwatch.StartNew();
        var (loaded, rejected) = NativeMutations.Run(stream.ToArray(), Swaps, Iterations, 42, file => NativeMutations.ParseAndDecode(file, SampleShapes), structural: true);
        Assert.True(loaded + rejected >= 10_000, $"only {loaded + rejected} mutants parsed");
        Assert.True(loaded > 500, $"only {loaded} mutants loaded, {rejected} rejected: the accepting path is barely exercised");
        Assert.True(rejected > 2_000, $"only {rejected} mutants rejected");
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(20), $"took {stopwatch.Elapsed}");
    }
}
