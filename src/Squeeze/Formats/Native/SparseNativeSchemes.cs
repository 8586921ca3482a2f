using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "nm" scheme (format version 2, docs/FORMAT.md §3.4): N:M sparsity, <c>PREFIX.indices</c> U8
/// [rows, ⌈kept · bits / 8⌉] and the kept values nested under <c>PREFIX.values</c> [rows, cols · N / M].</summary>
internal sealed class NmSparseNativeScheme : INativeScheme
{
    public static NmSparseNativeScheme Instance { get; } = new();

    public string Name => "nm";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is NmSparseWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var w = (NmSparseWeight)weight;
        sink.Add(prefix + ".indices", SafetensorsDType.U8, [w.Rows, w.IndexRowBytes], w.Indices.ToArray());
        return new JsonObject { ["n"] = w.N, ["m"] = w.M, ["values"] = sink.Store(prefix + ".values", w.Values) };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int m = json.Int("m", 2, 16);
        int n = json.Int("n", 1, m - 1);
        if (columns % m != 0)
            throw json.Fail($"{columns} columns are not whole groups of m = {m}");
        int kept = columns / m * n;
        var indices = source.Companion<byte>(prefix + ".indices", SafetensorsDType.U8, [rows, NmSparseWeight.RowBytes(kept, m)]);
        var values = source.Read(json.Object("values"), name, prefix + ".values", rows, kept);
        if (NmSparseWeight.FindProblem(rows, columns, n, m, values.Rows, values.Columns, indices.Span) is { } problem)
            throw source.Fail(prefix + ".indices", problem);
        return new NmSparseWeight(name, rows, columns, n, m, values, indices);
    }
}

/// <summary>The "masked" scheme (format version 2, docs/FORMAT.md §3.5): unstructured sparsity with the same count kept
/// in every row, <c>PREFIX.mask</c> U8 [rows, ⌈cols / 8⌉] and the kept values nested under <c>PREFIX.values</c> [rows, kept].</summary>
internal sealed class MaskedSparseNativeScheme : INativeScheme
{
    public static MaskedSparseNativeScheme Instance { get; } = new();

    public string Name => "masked";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is MaskedSparseWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var w = (MaskedSparseWeight)weight;
        sink.Add(prefix + ".mask", SafetensorsDType.U8, [w.Rows, w.MaskRowBytes], w.Mask.ToArray());
        return new JsonObject { ["kept"] = w.KeptPerRow, ["values"] = sink.Store(prefix + ".values", w.Values) };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int kept = json.Int("kept", 1, columns);
        var mask = source.Companion<byte>(prefix + ".mask", SafetensorsDType.U8, [rows, (columns + 7) / 8]);
        var values = source.Read(json.Object("values"), name, prefix + ".values", rows, kept);
        if (MaskedSparseWeight.FindProblem(rows, columns, values.Rows, values.Columns, mask.Span) is { } problem)
            throw source.Fail(prefix + ".mask", problem);
        return new MaskedSparseWeight(name, rows, columns, values, mask);
    }
}

/// <summary>The "structured" scheme (format version 2, docs/FORMAT.md §3.6): whole rows and columns removed,
/// <c>PREFIX.row_mask</c> U8 [⌈rows / 8⌉], <c>PREFIX.column_mask</c> U8 [⌈cols / 8⌉] and the kept sub-matrix nested
/// under <c>PREFIX.kept</c> [kept rows, kept columns].</summary>
internal sealed class StructuredSparseNativeScheme : INativeScheme
{
    public static StructuredSparseNativeScheme Instance { get; } = new();

    public string Name => "structured";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is StructuredSparseWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var w = (StructuredSparseWeight)weight;
        sink.Add(prefix + ".row_mask", SafetensorsDType.U8, [w.RowMask.Length], w.RowMask.ToArray());
        sink.Add(prefix + ".column_mask", SafetensorsDType.U8, [w.ColumnMask.Length], w.ColumnMask.ToArray());
        return new JsonObject { ["rows"] = w.Kept.Rows, ["columns"] = w.Kept.Columns, ["kept"] = sink.Store(prefix + ".kept", w.Kept) };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int keptRows = json.Int("rows", 1, rows);
        int keptColumns = json.Int("columns", 1, columns);
        // Masks of one bit per row and column, unpacked into the kept rows' and columns' indices: copied.
        var rowMask = source.Companion<byte>(prefix + ".row_mask", SafetensorsDType.U8, [(rows + 7) / 8]).ToArray();
        var columnMask = source.Companion<byte>(prefix + ".column_mask", SafetensorsDType.U8, [(columns + 7) / 8]).ToArray();
        var kept = source.Read(json.Object("kept"), name, prefix + ".kept", keptRows, keptColumns);
        if (StructuredSparseWeight.FindProblem(rows, columns, rowMask, columnMask, kept.Rows, kept.Columns) is { } problem)
            throw source.Fail(prefix, problem);
        return new StructuredSparseWeight(name, rows, columns, rowMask, columnMask, kept);
    }
}

/// <summary>The "zero" scheme (format version 2, docs/FORMAT.md §3.7): a dropped matrix, every weight zero, no companions.</summary>
internal sealed class ZeroNativeScheme : INativeScheme
{
    public static ZeroNativeScheme Instance { get; } = new();

    public string Name => "zero";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is ZeroWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink) => [];

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
        => new ZeroWeight(name, rows, columns);
}
