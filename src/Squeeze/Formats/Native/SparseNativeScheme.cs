using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "sparse" scheme (format version 2, docs/FORMAT.md §3.5): compressed sparse rows,
/// <c>PREFIX.row_offsets</c> I32 [rows + 1], <c>PREFIX.columns</c> U16 (rows of at most 65,536 columns) or I32 [nnz],
/// <c>PREFIX.values</c> F16 [nnz]. Every offset, index and value is checked on read.</summary>
internal sealed class SparseNativeScheme : INativeScheme
{
    public const string RowOffsetsSuffix = ".row_offsets";
    public const string ColumnsSuffix = ".columns";
    public const string ValuesSuffix = ".values";

    public static SparseNativeScheme Instance { get; } = new();

    public string Name => "sparse";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is SparseWeight;

    private static SafetensorsDType IndexType(int columns) => columns <= SparseWeight.MaxColumnsForU16 ? SafetensorsDType.U16 : SafetensorsDType.I32;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var s = (SparseWeight)weight;
        sink.Add(prefix + RowOffsetsSuffix, SafetensorsDType.I32, [s.Rows + 1L], MemoryMarshal.AsBytes(s.RowOffsets).ToArray());
        byte[] indices = IndexType(s.Columns) == SafetensorsDType.U16
            ? MemoryMarshal.AsBytes(s.ColumnIndices.ToArray().Select(c => (ushort)c).ToArray().AsSpan()).ToArray()
            : MemoryMarshal.AsBytes(s.ColumnIndices).ToArray();
        sink.Add(prefix + ColumnsSuffix, IndexType(s.Columns), [s.NonZeros], indices);
        sink.Add(prefix + ValuesSuffix, SafetensorsDType.F16, [s.NonZeros], MemoryMarshal.AsBytes(s.Values).ToArray());
        return new JsonObject { ["nnz"] = s.NonZeros, ["value"] = "f16" };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        long nnz = json.Long("nnz", 0, Math.Min((long)rows * columns, Array.MaxLength));
        json.String("value", "f16");
        // Copied into the layout the product reads (32-bit columns, values also widened to f32): the outliers are few.
        var offsets = source.Companion<int>(prefix + RowOffsetsSuffix, SafetensorsDType.I32, [rows + 1L]).ToArray();
        int[] indices = IndexType(columns) == SafetensorsDType.U16
            ? source.Companion<ushort>(prefix + ColumnsSuffix, SafetensorsDType.U16, [nnz]).ToArray().Select(c => (int)c).ToArray()
            : source.Companion<int>(prefix + ColumnsSuffix, SafetensorsDType.I32, [nnz]).ToArray();
        var values = source.Companion<ushort>(prefix + ValuesSuffix, SafetensorsDType.F16, [nnz]).ToArray();

        string offsetsName = prefix + RowOffsetsSuffix, columnsName = prefix + ColumnsSuffix;
        if (offsets[0] != 0)
            throw source.Fail(offsetsName, $"the first row offset is {offsets[0]}, not 0");
        for (int r = 0; r < rows; r++)
        {
            int start = offsets[r], end = offsets[r + 1];
            if (end < start || end > nnz)
                throw source.Fail(offsetsName, $"row offsets must not decrease and must stay within the {nnz} entries: row {r} runs {start} to {end}");
            for (int j = start; j < end; j++)
            {
                if ((uint)indices[j] >= (uint)columns)
                    throw source.Fail(columnsName, $"entry {j} (row {r}) has column {indices[j]}, outside 0..{columns - 1}");
                if (j > start && indices[j] <= indices[j - 1])
                    throw source.Fail(columnsName, $"row {r}'s columns do not strictly increase at entry {j} ({indices[j - 1]} then {indices[j]})");
            }
        }
        if (offsets[rows] != nnz)
            throw source.Fail(offsetsName, $"the last row offset is {offsets[rows]}, not nnz = {nnz}");
        for (int j = 0; j < values.Length; j++)
        {
            if ((values[j] & 0x7C00) == 0x7C00)
                throw source.Fail(prefix + ValuesSuffix, $"value {j} is not finite (f16 bits 0x{values[j]:X4})");
        }
        return new SparseWeight(name, rows, columns, offsets, indices, values);
    }
}
