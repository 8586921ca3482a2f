using System.Buffers.Binary;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class VectorSchemeTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-vq-{Guid.NewGuid():N}");

    public VectorSchemeTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void Stories260K_with_vector_quantized_weights_round_trips_bit_for_bit_and_runs()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var replacements = new Dictionary<string, LinearWeight>();
        int i = 0;
        foreach (var t in model.Tensors.Where(t => t.Shape.Length == 2))
        {
            var values = new float[t.ElementCount];
            Dequantize.Tensor(t, values);
            int rows = (int)t.Rows, columns = (int)t.Columns;
            int dimension = columns % 8 == 0 && i % 2 == 0 ? 8 : columns % 4 == 0 ? 4 : 2;
            var options = new VectorQuantizerOptions { Dimension = dimension, IndexBits = 4 + i % 5, RowScales = i % 3 != 0, MaxIterations = 5 };
            var first = VectorQuantizer.Quantize(t.Name, values, rows, columns, default, null, options);
            replacements[t.Name] = first;
            if (i % 4 == 3)
            {
                // A residual stage: a sum of two vq terms, the second coding what the first left.
                var rest = first.Decode();
                for (int k = 0; k < rest.Length; k++)
                    rest[k] = values[k] - rest[k];
                replacements[t.Name] = new SumWeight(t.Name, [first, VectorQuantizer.Quantize(t.Name, rest, rows, columns, default, null, options with { IndexBits = 3 })]);
            }
            i++;
        }
        string dir = Path.Combine(root, "out");
        NativeModelWriter.Write(model, dir, replacements);
        using var reader = NativeModelReader.Open(dir);
        using var loaded = reader.ToModel();
        foreach (var (name, expected) in replacements)
        {
            var actual = loaded.Weight(name);
            Assert.Equal(expected.GetType(), actual.GetType());
            Assert.Equal(expected.Scheme, actual.Scheme);
            Assert.Equal(expected.StoredBytes, actual.StoredBytes);
            Assert.Equal(expected.StoredBytes, reader.GetTensor(name).StoredBytes);
            Assert.Equal(expected.Decode(), actual.Decode());
        }
        var options2 = new Squeeze.Evaluation.EvaluationOptions { ContextLength = 64, MaxChunks = 1, Threads = 2 };
        var result = Squeeze.Evaluation.Evaluator.Evaluate(loaded, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")), options2, baseModel: model);
        Assert.True(double.IsFinite(result.Perplexity) && result.KlDivergence!.Mean > 0);
    }

    /// <summary>"v": vq dim 4, 5-bit indices (5 vectors of 20 bits a row: 4 bits of padding), row scales [4, 20];
    /// "u": vq dim 2, 3-bit indices, no scales [3, 8].</summary>
    private (string Path, Dictionary<string, long[]> Shapes) Sample()
    {
        var random = new Random(9);
        var values = new float[4 * 20];
        for (int k = 0; k < values.Length; k++)
            values[k] = (float)(random.NextDouble() - 0.5);
        var v = VectorQuantizer.Quantize("v", values, 4, 20, default, null, new VectorQuantizerOptions { Dimension = 4, IndexBits = 5, RowScales = true });
        var u = VectorQuantizer.Quantize("u", values.AsSpan(0, 24), 3, 8, default, null, new VectorQuantizerOptions { Dimension = 2, IndexBits = 3 });
        return NativeMutations.WriteWeights(root, ("v", 4, 20, v), ("u", 3, 8, u));
    }

    /// <summary>Rewrites the sample with edited metadata and tensors, and asserts the reader refuses it naming the file and <paramref name="expected"/>.</summary>
    private void AssertRejected(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>> edit, string expected)
    {
        var (path, shapes) = Sample();
        NativeMutations.AssertEditRefused(path, shapes, edit, expected);
    }

    [Fact]
    public void The_sample_is_valid_and_decodes()
    {
        var (path, shapes) = Sample();
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(7, NativeMutations.ParseAndDecode(file, shapes).Rows);
        Assert.Equal("2", file.Metadata[NativeFormat.VersionKey]);
        Assert.Equal("{\"scheme\":\"vq\",\"dim\":4,\"index_bits\":5,\"codebook\":\"f16\",\"row_scales\":true}", file.Metadata["squeeze.scheme.v"]);
    }

    [Fact]
    public void Bad_vq_schemes_and_companions_are_refused()
    {
        string Scheme(string dim, string bits, string scales = "true", string extra = "")
            => $"{{\"scheme\":\"vq\",\"dim\":{dim},\"index_bits\":{bits},\"codebook\":\"f16\",\"row_scales\":{scales}{extra}}}";
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("17", "5"), "\"dim\" is 17; it must be an integer in 1..16");
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("4", "0"), "\"index_bits\" is 0; it must be an integer in 1..16");
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("3", "5"), "vectors of dim 3 do not divide the row length 20");
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("4", "6"), "tensor 'v.codebook': has shape [32, 4], expected [64, 4]");
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("2", "5"), "tensor 'v.codebook': has shape [32, 4], expected [32, 2]");
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("4", "5", "false"), "v.scales");
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("4", "5", "true", ",\"seed\":1"), "unknown key \"seed\"");
        AssertRejected((m, _) => m["squeeze.scheme.v"] = Scheme("4", "5").Replace("\"f16\"", "\"bf16\"", StringComparison.Ordinal), "\"codebook\" is \"bf16\"; allowed: \"f16\"");
        AssertRejected((_, t) => NativeMutations.Patch(t, "v.codebook", d => BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(10), 0x7E00)), "tensor 'v.codebook': value 1 of centroid 1 is not finite");
        AssertRejected((_, t) => NativeMutations.Patch(t, "v.scales", d => BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(2), 0xFC00)), "tensor 'v.scales': the scale of row 1 is not finite");
        AssertRejected((_, t) => NativeMutations.Patch(t, "v.indices", d => d[3 * 4 + 3] |= 0x40), "tensor 'v.indices': row 3 has padding bits set after its last index");
        AssertRejected((_, t) => t.Remove("v.codebook"), "tensor 'v.codebook': companion tensor is missing");
        AssertRejected((_, t) => t["v.indices"] = (SafetensorsDType.U8, [4, 3], new byte[12]), "tensor 'v.indices': has shape [4, 3], expected [4, 4]");
        AssertRejected((_, t) => t["u.codebook"] = (SafetensorsDType.F32, [8, 2], new byte[64]), "tensor 'u.codebook': is F32, not F16");
        AssertRejected((m, _) => m[NativeFormat.VersionKey] = "1", "scheme \"vq\" is defined by format version 2, but the file says version 1");
    }

    private static readonly string[] Swaps =
    [
        "vq", "uniform", "codebook", "\\\"dim\\\"", "\\\"index_bits\\\"", "\\\"row_scales\\\"", "true", "false",
        "U8", "F16", "F32", "v.codebook", "v.indices", "v.scales", "u.codebook", "u.indices", "0", "1", "2", "3", "4", "5", "8", "16", "20", "-1", "[]", "{}",
    ];

    /// <summary>Mutations of the sample (byte flips in data and header, digits and known tokens of the header replaced)
    /// either parse and decode every row, or throw ModelFormatException; never another exception.</summary>
    [Fact]
    public void Mutated_vq_files_load_and_decode_or_throw_ModelFormatException()
    {
        var (path, shapes) = Sample();
        var (loaded, rejected) = NativeMutations.Run(File.ReadAllBytes(path), Swaps, 3000, 23, file => NativeMutations.ParseAndDecode(file, shapes), structural: true);
        Assert.True(loaded > 100 && rejected > 1000, $"{loaded} loaded, {rejected} rejected");
    }
}
