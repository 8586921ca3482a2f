using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Squeeze.Formats.Safetensors;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "vq" scheme (format version 2, docs/FORMAT.md §3.15): vector quantization with one codebook per tensor,
/// <c>PREFIX.codebook</c> F16 [2^index_bits, dim], <c>PREFIX.indices</c> U8 [rows, ⌈cols / dim · index_bits / 8⌉] and,
/// with <c>row_scales</c>, <c>PREFIX.scales</c> F16 [rows].</summary>
internal sealed class VectorNativeScheme : INativeScheme
{
    public const string CodebookSuffix = ".codebook", IndicesSuffix = ".indices";

    public static VectorNativeScheme Instance { get; } = new();

    public string Name => "vq";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is VectorCodebookWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var w = (VectorCodebookWeight)weight;
        sink.Add(prefix + CodebookSuffix, SafetensorsDType.F16, [w.Centroids, w.Dimension], MemoryMarshal.AsBytes(w.Codebook).ToArray());
        var packed = new byte[(long)w.Rows * w.RowBytes];
        for (int r = 0; r < w.Rows; r++)
            VectorCodebookWeight.PackRow(w.Indices.Slice(r * w.VectorsPerRow, w.VectorsPerRow), w.IndexBits, packed.AsSpan(r * w.RowBytes, w.RowBytes));
        sink.Add(prefix + IndicesSuffix, SafetensorsDType.U8, [w.Rows, w.RowBytes], packed);
        if (w.HasRowScales)
            sink.Add(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [w.Rows], MemoryMarshal.AsBytes(w.Scales).ToArray());
        return new JsonObject { ["dim"] = w.Dimension, ["index_bits"] = w.IndexBits, ["codebook"] = "f16", ["row_scales"] = w.HasRowScales };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        int dim = json.Int("dim", VectorCodebookWeight.MinDimension, VectorCodebookWeight.MaxDimension);
        int bits = json.Int("index_bits", VectorCodebookWeight.MinIndexBits, VectorCodebookWeight.MaxIndexBits);
        json.String("codebook", "f16");
        bool scaled = json.Bool("row_scales");
        if (columns % dim != 0)
            throw json.Fail($"vectors of dim {dim} do not divide the row length {columns}");
        int vectors = columns / dim, rowBytes = VectorCodebookWeight.PackedRowBytes(vectors, bits);
        var codebook = source.Companion<ushort>(prefix + CodebookSuffix, SafetensorsDType.F16, [1L << bits, dim]).ToArray();
        for (int i = 0; i < codebook.Length; i++)
        {
            if ((codebook[i] & 0x7C00) == 0x7C00)
                throw source.Fail(prefix + CodebookSuffix, $"value {i % dim} of centroid {i / dim} is not finite (f16 bits 0x{codebook[i]:X4})");
        }
        // The indices are unpacked to 16 bits each at load, the layout the products read (VectorCodebookWeight).
        var packed = source.Companion<byte>(prefix + IndicesSuffix, SafetensorsDType.U8, [rows, rowBytes]).Span;
        var indices = new ushort[(long)rows * vectors];
        for (int r = 0; r < rows; r++)
        {
            if (!VectorCodebookWeight.UnpackRow(packed.Slice(r * rowBytes, rowBytes), bits, indices.AsSpan(r * vectors, vectors)))
                throw source.Fail(prefix + IndicesSuffix, $"row {r} has padding bits set after its last index");
        }
        ushort[]? scales = null;
        if (scaled)
        {
            scales = source.Companion<ushort>(prefix + NativeFormat.ScalesSuffix, SafetensorsDType.F16, [rows]).ToArray();
            for (int r = 0; r < rows; r++)
            {
                if ((scales[r] & 0x7C00) == 0x7C00)
                    throw source.Fail(prefix + NativeFormat.ScalesSuffix, $"the scale of row {r} is not finite (f16 bits 0x{scales[r]:X4})");
            }
        }
        return new VectorCodebookWeight(name, rows, columns, dim, bits, codebook, indices, scales);
    }
}
