using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "entropy" scheme (format version 2, docs/FORMAT.md "entropy"): a uniform weight whose codes are rANS-coded
/// (<see cref="EntropyCodedWeight"/>): <c>PREFIX.scales</c> and <c>PREFIX.mins</c> as in "uniform", the codes as
/// <c>PREFIX.frequencies</c>, <c>PREFIX.chunks</c>, <c>PREFIX.streams</c> (<see cref="RansCompanions"/>). Decoded at load.</summary>
internal sealed class EntropyNativeScheme : INativeScheme
{
    public static EntropyNativeScheme Instance { get; } = new();

    public string Name => "entropy";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is EntropyCodedWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var coded = (EntropyCodedWeight)weight;
        var u = coded.Decoded;
        var scheme = u.UniformScheme;
        long groups = u.Columns / scheme.Group;
        sink.Add(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [u.Rows, groups], MemoryMarshal.AsBytes(u.Scales).ToArray());
        if (!scheme.Symmetric)
            sink.Add(prefix + NativeFormat.MinsSuffix, SafetensorsDType.F16, [u.Rows, groups], MemoryMarshal.AsBytes(u.Mins).ToArray());
        RansCompanions.Store(sink, prefix + ".", coded.Code(Environment.ProcessorCount));
        return new JsonObject
        {
            ["bits"] = scheme.Bits,
            ["group"] = scheme.Group,
            ["symmetric"] = scheme.Symmetric,
            ["scale"] = "f16",
            ["coder"] = RansCompanions.Coder,
            ["chunk_rows"] = coded.ChunkRows,
        };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int bits = json.Int("bits", 2, 8);
        int group = json.Int("group", 1, int.MaxValue);
        bool symmetric = json.Bool("symmetric");
        json.String("scale", "f16");
        json.String("coder", RansCompanions.Coder);
        int chunkRows = json.Int("chunk_rows", 1, int.MaxValue / columns);
        if (columns % group != 0)
            throw json.Fail($"group {group} does not divide the row length {columns}");
        var scheme = new UniformScheme(bits, group, symmetric);
        long groups = columns / group;
        // The codes are decoded at load (the runtime holds them packed in memory); scales and mins stay in the mapped file.
        var scales = source.Companion<ushort>(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [rows, groups]);
        var mins = symmetric ? default : source.Companion<ushort>(prefix + NativeFormat.MinsSuffix, SafetensorsDType.F16, [rows, groups]);
        var coded = RansCompanions.Read(source, prefix + ".", 1 << bits, (long)rows * columns, chunkRows * columns);
        try
        {
            return EntropyCodedWeight.Decode(name, rows, columns, scheme, coded, chunkRows, scales, mins, Environment.ProcessorCount);
        }
        catch (InvalidDataException e)
        {
            throw source.Fail(prefix + ".streams", e.Message);
        }
    }
}
