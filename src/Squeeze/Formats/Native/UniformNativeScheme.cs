using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "uniform" scheme (docs/FORMAT.md §4): <c>PREFIX.codes</c> U8 [rows, ceil(cols·bits/8)],
/// <c>PREFIX.scales</c> F16 [rows, cols/group], <c>PREFIX.mins</c> F16 [rows, cols/group] when asymmetric.</summary>
internal sealed class UniformNativeScheme : INativeScheme
{
    public static UniformNativeScheme Instance { get; } = new();

    public string Name => UniformScheme.Name;

    public int Version => 1;

    public bool CanStore(LinearWeight weight) => weight is UniformWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var u = (UniformWeight)weight;
        var scheme = u.UniformScheme;
        long rows = u.Rows, groups = u.Columns / scheme.Group;
        sink.Add(prefix + NativeFormat.CodesSuffix, SafetensorsDType.U8, [rows, scheme.RowBytes(u.Columns)], u.CodesMemory);
        sink.Add(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [rows, groups], MemoryMarshal.AsBytes(u.Scales).ToArray());
        if (!scheme.Symmetric)
            sink.Add(prefix + NativeFormat.MinsSuffix, SafetensorsDType.F16, [rows, groups], MemoryMarshal.AsBytes(u.Mins).ToArray());
        return new JsonObject { ["bits"] = scheme.Bits, ["group"] = scheme.Group, ["symmetric"] = scheme.Symmetric, ["scale"] = "f16" };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int bits = json.Int("bits", 2, 8);
        int group = json.Int("group", 1, int.MaxValue);
        bool symmetric = json.Bool("symmetric");
        json.String("scale", "f16");
        if (columns % group != 0)
            throw json.Fail($"group {group} does not divide the row length {columns}");
        var scheme = new UniformScheme(bits, group, symmetric);
        long groups = columns / group;
        // Codes, scales and mins stay in the mapped file: the product and the decoding read the stored layout.
        var codes = source.Companion<byte>(prefix + NativeFormat.CodesSuffix, SafetensorsDType.U8, [rows, scheme.RowBytes(columns)]);
        var scales = source.Companion<ushort>(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [rows, groups]);
        var mins = symmetric ? default : source.Companion<ushort>(prefix + NativeFormat.MinsSuffix, SafetensorsDType.F16, [rows, groups]);
        return new UniformWeight(name, rows, columns, scheme, codes, scales, mins);
    }
}
