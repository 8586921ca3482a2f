using System.Text.Json.Nodes;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "sum" scheme (format version 2): W = Σ terms, term i stored under <c>PREFIX.i</c> with its own scheme
/// (a dense part plus sparse outliers; a quantized weight plus a low-rank correction).</summary>
internal sealed class SumNativeScheme : INativeScheme
{
    public const int MaxTerms = 8;

    public static SumNativeScheme Instance { get; } = new();

    public string Name => "sum";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is SumWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var sum = (SumWeight)weight;
        var terms = new JsonArray();
        for (int i = 0; i < sum.Terms.Count; i++)
            terms.Add(sink.Store($"{prefix}.{i}", sum.Terms[i]));
        return new JsonObject { ["terms"] = terms };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        var terms = json.Objects("terms", 2, MaxTerms);
        return new SumWeight(name, terms.Select((t, i) => source.Read(t, name, $"{prefix}.{i}", rows, columns)).ToList());
    }
}
