using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "split" scheme (format version 2, docs/FORMAT.md §3.16): rows in two groups, <c>PREFIX.mask</c> U8
/// [⌈rows / 8⌉] (bit r set where row r is hot), the hot rows nested under <c>PREFIX.hot</c> [hot, cols] and the cold
/// rows under <c>PREFIX.cold</c> [rows − hot, cols].</summary>
internal sealed class SplitNativeScheme : INativeScheme
{
    public const string MaskSuffix = ".mask", HotSuffix = ".hot", ColdSuffix = ".cold";

    public static SplitNativeScheme Instance { get; } = new();

    public string Name => "split";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is RowSplitWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var w = (RowSplitWeight)weight;
        var mask = StructuredSparseWeight.Pack(w.Hot);
        sink.Add(prefix + MaskSuffix, SafetensorsDType.U8, [mask.Length], mask);
        return new JsonObject { ["hot"] = sink.Store(prefix + HotSuffix, w.HotRows), ["cold"] = sink.Store(prefix + ColdSuffix, w.ColdRows) };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        var hotJson = json.Object("hot");
        var coldJson = json.Object("cold");
        var mask = source.Companion<byte>(prefix + MaskSuffix, SafetensorsDType.U8, [(rows + 7) / 8]).Span;
        if (rows % 8 != 0 && mask[^1] >> (rows % 8) != 0)
            throw source.Fail(prefix + MaskSuffix, $"has bits set beyond row {rows - 1}");
        var hot = StructuredSparseWeight.Unpack(mask, rows);
        int hotCount = hot.Count(h => h);
        if (hotCount == 0 || hotCount == rows)
            throw source.Fail(prefix + MaskSuffix, $"marks {hotCount} of {rows} rows hot; a split needs at least one hot and one cold row");
        var hotRows = source.Read(hotJson, name, prefix + HotSuffix, hotCount, columns);
        var coldRows = source.Read(coldJson, name, prefix + ColdSuffix, rows - hotCount, columns);
        return new RowSplitWeight(name, hot, hotRows, coldRows);
    }
}
