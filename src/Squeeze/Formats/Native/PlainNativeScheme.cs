using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "plain" scheme (format version 2), for nested weights only: the matrix itself as one F32, F16 or BF16
/// tensor named <c>PREFIX</c> of shape [rows, columns] (a top-level plain tensor needs no scheme entry).</summary>
internal sealed class PlainNativeScheme : INativeScheme
{
    public static PlainNativeScheme Instance { get; } = new();

    private static readonly SafetensorsDType[] FloatTypes = [SafetensorsDType.F32, SafetensorsDType.F16, SafetensorsDType.BF16];

    public string Name => "plain";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is BlockWeight b && b.Type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        sink.Add(prefix, ((BlockWeight)weight).Tensor);
        return [];
    }

    // The weight is named as its tensor, not as the companion that stores it (prefix), which is the same only at the top.
    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        var stored = source.MappedTensor(prefix, FloatTypes, [rows, columns]);
        return new BlockWeight(new Tensor(name, stored.Type, stored.Shape, stored.Buffer, stored.Offset));
    }
}
