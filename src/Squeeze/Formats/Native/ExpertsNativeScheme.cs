using System.Text.Json.Nodes;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "experts" scheme (format version 3, docs/FORMAT.md §3.17): the routed experts of a stacked 3-D tensor
/// ([experts, rows, columns], seen as [experts · rows, columns]), expert e a nested weight [rows, columns] under
/// <c>PREFIX.e</c> with its own scheme.</summary>
internal sealed class ExpertsNativeScheme : INativeScheme
{
    public const int MaxExperts = 1 << 12;

    public static ExpertsNativeScheme Instance { get; } = new();

    public string Name => "experts";

    public int Version => 3;

    public bool CanStore(LinearWeight weight) => weight is ExpertStackWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var stack = (ExpertStackWeight)weight;
        var experts = new JsonArray();
        for (int e = 0; e < stack.Experts.Count; e++)
            experts.Add(sink.Store($"{prefix}.{e}", stack.Experts[e]));
        return new JsonObject { ["experts"] = experts };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        var experts = json.Objects("experts", 1, MaxExperts);
        if (rows % experts.Count != 0)
            throw json.Fail($"{experts.Count} experts do not split its {rows} rows evenly");
        int expertRows = rows / experts.Count;
        return new ExpertStackWeight(name, [.. experts.Select((e, i) => source.Read(e, name, $"{prefix}.{i}", expertRows, columns))]);
    }
}
