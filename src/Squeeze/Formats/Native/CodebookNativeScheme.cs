using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "codebook" scheme (format version 2, docs/FORMAT.md §3.4): <c>PREFIX.codes</c> U8
/// [rows, ceil(cols·bits/8)] packed as the uniform scheme's codes, <c>PREFIX.table</c> F16 [rows, cols/group, 2^bits].</summary>
internal sealed class CodebookNativeScheme : INativeScheme
{
    public const string TableSuffix = ".table";

    public static CodebookNativeScheme Instance { get; } = new();

    public string Name => "codebook";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is CodebookWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var w = (CodebookWeight)weight;
        sink.Add(prefix + NativeFormat.CodesSuffix, SafetensorsDType.U8, [w.Rows, w.RowBytes], w.PackedCodesMemory);
        sink.Add(prefix + TableSuffix, SafetensorsDType.F16, [w.Rows, w.GroupsPerRow, w.Levels], MemoryMarshal.AsBytes(w.Table).ToArray());
        return new JsonObject { ["bits"] = w.Bits, ["group"] = w.Group, ["table"] = "f16" };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int bits = json.Int("bits", CodebookWeight.MinBits, CodebookWeight.MaxBits);
        int group = json.Int("group", 1, int.MaxValue);
        json.String("table", "f16");
        if (columns % group != 0)
            throw json.Fail($"group {group} does not divide the row length {columns}");
        long rowBytes = ((long)columns * bits + 7) / 8, groups = columns / group;
        // Codes and tables stay in the mapped file: the product and the decoding read the stored layout.
        var codes = source.Companion<byte>(prefix + NativeFormat.CodesSuffix, SafetensorsDType.U8, [rows, rowBytes]);
        var tables = source.Companion<ushort>(prefix + TableSuffix, SafetensorsDType.F16, [rows, groups, 1L << bits]);
        var table = tables.Span;
        for (int i = 0; i < table.Length; i++)
        {
            if ((table[i] & 0x7C00) == 0x7C00)
                throw source.Fail(prefix + TableSuffix, $"entry {i % (1 << bits)} of table {i >> bits} (row-major over rows and groups) is not finite (f16 bits 0x{table[i]:X4})");
        }
        return new CodebookWeight(name, rows, columns, bits, group, codes, tables);
    }
}
