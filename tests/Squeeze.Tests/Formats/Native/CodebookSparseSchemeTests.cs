using System.Buffers.Binary;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class CodebookSparseSchemeTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-codebook-{Guid.NewGuid():N}");

    public CodebookSparseSchemeTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    private static float[] Values(LinearWeight w) => w.Decode();

    [Fact]
    public void Stories260K_with_codebooks_and_outliers_round_trips_bit_for_bit_and_runs()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var replacements = new Dictionary<string, LinearWeight>();
        int i = 0;
        foreach (var t in model.Tensors.Where(t => t.Shape.Length == 2 && t.Name != "token_embd.weight"))
        {
            var values = new float[t.ElementCount];
            Dequantize.Tensor(t, values);
            int rows = (int)t.Rows, columns = (int)t.Columns;
            int bits = 2 + i % 7, group = (i % 3) switch { 0 => columns, 1 => columns % 32 == 0 ? 32 : 4, _ => 4 };
            replacements[t.Name] = (i % 2) switch
            {
                0 => CodebookQuantizer.Quantize(t.Name, values, rows, columns, default, bits, group),
                _ => Sum(DenseAndSparse.Encode(t.Name, values, rows, columns, default, 0.01, OutlierCriterion.Magnitude,
                    DenseAndSparse.CodebookEncoder(bits, group))),
            };
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
            Assert.Equal(Values(expected), Values(actual));
        }
        var options = new Squeeze.Evaluation.EvaluationOptions { ContextLength = 64, MaxChunks = 1, Threads = 2 };
        var result = Squeeze.Evaluation.Evaluator.Evaluate(loaded, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")), options, baseModel: model);
        Assert.True(double.IsFinite(result.Perplexity) && result.KlDivergence!.Mean > 0);
    }

    private static SumWeight Sum((LinearWeight Dense, SparseWeight Sparse) parts) => new(parts.Dense.Name, [parts.Dense, parts.Sparse]);

    /// <summary>A sparse weight wider than 65,536 columns stores int32 column indices and reads back.</summary>
    [Fact]
    public void Wide_sparse_rows_use_int32_indices()
    {
        var sparse = new SparseWeight("wide", 2, 70_000, [0, 2, 3], [5, 69_999, 65_536], [1, 2, 3]);
        var (path, shapes) = NativeMutations.WriteWeights(root, ("wide", 2, 70_000, (LinearWeight)new SumWeight("wide", [sparse, new SparseWeight("wide", 2, 70_000, [0, 0, 0], [], [])])));
        using var file = SafetensorsFile.Open(path);
        Assert.True(file.TryGetInfo("wide.0.columns", out var info));
        Assert.Equal(SafetensorsDType.I32, info.DType);
        var weights = NativeWeights.Parse(file, shapes);
        Assert.Equal(Values(sparse), Values(weights.Weights.Single()));
    }

    /// <summary>"c": codebook 3-bit group 48 [4, 96]; "o": codebook 2-bit per row plus sparse outliers [4, 96].</summary>
    private (string Path, Dictionary<string, long[]> Shapes) Sample()
    {
        var random = new Random(9);
        var values = new float[4 * 96];
        for (int k = 0; k < values.Length; k++)
            values[k] = (float)(random.NextDouble() - 0.5);
        var c = CodebookQuantizer.Quantize("c", values, 4, 96, default, 3, 48);
        var o = Sum(DenseAndSparse.Encode("o", values, 4, 96, default, 0.05, OutlierCriterion.Magnitude, DenseAndSparse.CodebookEncoder(2, 0)));
        return NativeMutations.WriteWeights(root, ("c", 4, 96, c), ("o", 4, 96, o));
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
        Assert.Equal(8, NativeMutations.ParseAndDecode(file, shapes).Rows);
        Assert.Equal("2", file.Metadata[NativeFormat.VersionKey]);
    }

    [Fact]
    public void Bad_codebook_schemes_and_tables_are_refused()
    {
        string Scheme(string bits, string group, string extra = "") => $"{{\"scheme\":\"codebook\",\"bits\":{bits},\"group\":{group},\"table\":\"f16\"{extra}}}";
        AssertRejected((m, _) => m["squeeze.scheme.c"] = Scheme("9", "48"), "\"bits\" is 9; it must be an integer in 2..8");
        AssertRejected((m, _) => m["squeeze.scheme.c"] = Scheme("1", "48"), "\"bits\" is 1; it must be an integer in 2..8");
        AssertRejected((m, _) => m["squeeze.scheme.c"] = Scheme("3", "36"), "group 36 does not divide the row length 96");
        AssertRejected((m, _) => m["squeeze.scheme.c"] = Scheme("3", "32"), "tensor 'c.table': has shape [4, 2, 8], expected [4, 3, 8]");
        AssertRejected((m, _) => m["squeeze.scheme.c"] = Scheme("4", "48"), "tensor 'c.codes': has shape [4, 36], expected [4, 48]");
        AssertRejected((m, _) => m["squeeze.scheme.c"] = Scheme("3", "48", ",\"seed\":1"), "unknown key \"seed\"");
        AssertRejected((m, _) => m["squeeze.scheme.c"] = "{\"scheme\":\"codebook\",\"bits\":3,\"group\":48,\"table\":\"bf16\"}", "\"table\" is \"bf16\"; allowed: \"f16\"");
        AssertRejected((_, t) => NativeMutations.Patch(t, "c.table", d => BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(6), 0x7E00)), "tensor 'c.table': entry 3 of table 0 (row-major over rows and groups) is not finite");
        AssertRejected((_, t) => t.Remove("c.table"), "tensor 'c.table': companion tensor is missing");
        AssertRejected((_, t) => t["c.table"] = (SafetensorsDType.F32, [4, 2, 8], new byte[256]), "tensor 'c.table': is F32, not F16");
        AssertRejected((m, _) => m[NativeFormat.VersionKey] = "1", "scheme \"codebook\" is defined by format version 2, but the file says version 1");
    }

    [Fact]
    public void Bad_sparse_outliers_are_refused()
    {
        const string Offsets = "o.1.row_offsets", Columns = "o.1.columns", Vals = "o.1.values";
        AssertRejected((_, t) => NativeMutations.Patch(t, Offsets, d => BinaryPrimitives.WriteInt32LittleEndian(d, 1)), $"tensor '{Offsets}': the first row offset is 1, not 0");
        AssertRejected((_, t) => NativeMutations.Patch(t, Offsets, d => BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(4), 1000)), $"tensor '{Offsets}': row offsets must not decrease and must stay within");
        AssertRejected((_, t) => NativeMutations.Patch(t, Offsets, d => BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(8), -3)), $"tensor '{Offsets}': row offsets must not decrease");
        AssertRejected((_, t) => NativeMutations.Patch(t, Offsets, d => BinaryPrimitives.WriteInt32LittleEndian(d.AsSpan(16), BinaryPrimitives.ReadInt32LittleEndian(d.AsSpan(12)))),
            $"tensor '{Offsets}': the last row offset is");
        AssertRejected((_, t) => NativeMutations.Patch(t, Columns, d => BinaryPrimitives.WriteUInt16LittleEndian(d, 96)), $"tensor '{Columns}': entry 0 (row 0) has column 96, outside 0..95");
        AssertRejected((_, t) => NativeMutations.Patch(t, Columns, d => d.AsSpan(0, 2).CopyTo(d.AsSpan(2))), $"tensor '{Columns}': row 0's columns do not strictly increase at entry 1");
        AssertRejected((_, t) => NativeMutations.Patch(t, Vals, d => BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(2), 0x7C00)), $"tensor '{Vals}': value 1 is not finite");
        AssertRejected((_, t) => t[Columns] = (SafetensorsDType.I32, t[Columns].Shape, new byte[t[Columns].Data.Length * 2]), $"tensor '{Columns}': is I32, not U16");
        AssertRejected((m, _) => m["squeeze.scheme.o"] = m["squeeze.scheme.o"].Replace("\"nnz\":19", "\"nnz\":18", StringComparison.Ordinal), $"tensor '{Columns}': has shape [19], expected [18]");
        AssertRejected((m, _) => m["squeeze.scheme.o"] = m["squeeze.scheme.o"].Replace("\"nnz\":19", "\"nnz\":-1", StringComparison.Ordinal), "\"nnz\" is -1; it must be an integer in 0..384");
        AssertRejected((_, t) => t.Remove(Vals), $"tensor '{Vals}': companion tensor is missing");
    }

    private static readonly string[] Swaps =
    [
        "codebook", "sparse", "sum", "uniform", "plain", "\\\"bits\\\"", "\\\"group\\\"", "\\\"nnz\\\"", "\\\"table\\\"", "\\\"value\\\"",
        "U8", "U16", "I32", "F16", "F32", "c.codes", "c.table", "o.1.columns", "o.1.row_offsets", "o.0.table", "0", "1", "2", "3", "8", "9", "19", "48", "96", "-1", "[]", "{}",
    ];

    /// <summary>Mutations of the sample (byte flips in data and header, digits and known tokens of the header replaced)
    /// either parse and decode every row, or throw ModelFormatException; never another exception.</summary>
    [Fact]
    public void Mutated_codebook_and_sparse_files_load_and_decode_or_throw_ModelFormatException()
    {
        var (path, shapes) = Sample();
        var (loaded, rejected) = NativeMutations.Run(File.ReadAllBytes(path), Swaps, 4000, 17, file => NativeMutations.ParseAndDecode(file, shapes));
        Assert.True(loaded > 200 && rejected > 1000, $"{loaded} loaded, {rejected} rejected");
    }
}
