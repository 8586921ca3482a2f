using System.Text.Json.Nodes;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "lowrank" scheme (format version 2): W = A·B, the factors stored as nested weights with their own
/// schemes, A [rows, rank] under <c>PREFIX.a</c> and B [rank, columns] under <c>PREFIX.b</c>.</summary>
internal sealed class LowRankNativeScheme : INativeScheme
{
    public static LowRankNativeScheme Instance { get; } = new();

    public string Name => "lowrank";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is LowRankWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var lowRank = (LowRankWeight)weight;
        return new JsonObject
        {
            ["rank"] = lowRank.Rank,
            ["a"] = sink.Store(prefix + ".a", lowRank.A),
            ["b"] = sink.Store(prefix + ".b", lowRank.B),
        };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int rank = json.Int("rank", 1, Math.Min(rows, columns));
        var a = source.Read(json.Object("a"), name + ".a", prefix + ".a", rows, rank);
        var b = source.Read(json.Object("b"), name + ".b", prefix + ".b", rank, columns);
        return new LowRankWeight(name, a, b);
    }
}
