using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class NativeModelRoundTripTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-native-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
    }

    /// <summary>Every 2-D tensor whose rows the group divides.</summary>
    private static Dictionary<string, UniformScheme> Schemes(Model model, int bits, int group, bool symmetric)
        => model.Tensors.Where(t => t.Shape.Length == 2 && t.Columns % group == 0)
            .ToDictionary(t => t.Name, _ => new UniformScheme(bits, group, symmetric));

    [Fact]
    public void Writing_references_the_weights_codes_instead_of_copying_them()
    {
        using var model = ModelLoader.Load(SharedData.Stories15M);
        var replacements = model.Tensors.Where(t => t.Shape.Length == 2)
            .ToDictionary(t => t.Name, t => (LinearWeight)UniformWeight.Encode(t, new UniformScheme(8, 32, symmetric: false)));
        long codes = replacements.Values.Sum(w => ((UniformWeight)w).Codes.Length);
        long Allocated(string directory, Dictionary<string, LinearWeight> weights)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            NativeModelWriter.Write(model, directory, weights);
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        // the same model written as it is (its f32 tensors are referenced): the tokenizer, the header and the file
        // stream's buffer, which both writes allocate
        long plain = Allocated(Path.Combine(root, "plain"), []);
        string dir = Path.Combine(root, "out");
        long extra = Allocated(dir, replacements) - plain;
        // the scales and mins are copied (an eighth of the codes here); a copy of the codes would be 15 MB more
        Assert.True(extra < codes / 4, $"writing the codes allocated {extra:N0} bytes more than the plain model, beside {codes:N0} bytes of codes");
        using var reader = NativeModelReader.Open(dir);
        var name = TensorNames.Down(3);
        var expected = new float[model.Config.HiddenDim];
        var actual = new float[model.Config.HiddenDim];
        replacements[name].DecodeRow(7, expected);
        reader.DecodeRow(name, 7, actual);
        Assert.Equal(expected, actual);
    }

    [Theory]
    [InlineData(4, 32, false)]
    [InlineData(3, 64, false)]
    [InlineData(5, 32, true)]
    public void Stories260K_round_trips_bit_for_bit_with_config_and_vocabulary(int bits, int group, bool symmetric)
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var schemes = Schemes(model, bits, group, symmetric);
        Assert.True(schemes.Count >= 10, $"only {schemes.Count} tensors quantizable at group {group}");
        string dir = Path.Combine(root, "out");
        var files = NativeModelWriter.Write(model, dir, schemes);
        Assert.All(files, f => Assert.True(File.Exists(Path.Combine(dir, f)), f));
        Assert.DoesNotContain(Directory.EnumerateDirectories(root), d => Path.GetFileName(d).StartsWith('.'));

        using var reader = NativeModelReader.Open(dir);
        Assert.Equal(model.Config, reader.Config);
        Assert.Equal(model.Vocabulary.Tokens, reader.Vocabulary.Tokens);
        Assert.Equal(model.Vocabulary.Scores, reader.Vocabulary.Scores);
        Assert.Equal(model.Vocabulary.Types, reader.Vocabulary.Types);
        Assert.Equal(model.Vocabulary.BosId, reader.Vocabulary.BosId);
        Assert.Equal(model.Vocabulary.EosId, reader.Vocabulary.EosId);
        Assert.Equal(model.Tensors.Count, reader.Tensors.Count);

        foreach (var tensor in model.Tensors)
        {
            var info = reader.GetTensor(tensor.Name);
            Assert.Equal(tensor.Shape, info.Shape);
            var row = new float[tensor.Columns];
            var expected = new float[tensor.Columns];
            if (schemes.TryGetValue(tensor.Name, out var scheme))
            {
                Assert.Equal(scheme.ToString(), info.Scheme);
                // The writer's own encoding, decoded row by row.
                var encoded = UniformWeight.Encode(tensor, scheme);
                Assert.Equal(encoded.StoredBytes, info.StoredBytes);
                for (int r = 0; r < tensor.Rows; r++)
                {
                    encoded.DecodeRow(r, expected);
                    reader.DecodeRow(tensor.Name, r, row);
                    AssertBits(expected, row, $"{tensor.Name} row {r}");
                }
            }
            else
            {
                Assert.Null(info.Scheme);
                for (int r = 0; r < tensor.Rows; r++)
                {
                    Dequantize.Row(tensor.Type, tensor.Row(r), expected);
                    reader.DecodeRow(tensor.Name, r, row);
                    AssertBits(expected, row, $"{tensor.Name} row {r}");
                }
            }
        }

        using var decoded = reader.ToModel();
        Assert.Equal(model.Config, decoded.Config);
        foreach (var tensor in decoded.Tensors)
        {
            Assert.Equal(GgmlType.F32, tensor.Type);
            var row = new float[tensor.Columns];
            var fromModel = new float[tensor.Columns];
            for (int r = 0; r < tensor.Rows; r++)
            {
                reader.DecodeRow(tensor.Name, r, row);
                Dequantize.Row(tensor.Type, tensor.Row(r), fromModel);
                AssertBits(row, fromModel, $"ToModel {tensor.Name} row {r}");
            }
        }
        // Schemed weights stay in their representation: the runtime multiplies the codes.
        Assert.Equal(schemes.Keys.Order(StringComparer.Ordinal), decoded.Weights.Select(w => w.Name).Order(StringComparer.Ordinal));
        foreach (var weight in decoded.Weights)
        {
            Assert.IsType<UniformWeight>(weight);
            var row = new float[weight.Columns];
            var fromModel = new float[weight.Columns];
            for (int r = 0; r < weight.Rows; r++)
            {
                reader.DecodeRow(weight.Name, r, row);
                weight.DecodeRow(r, fromModel);
                AssertBits(row, fromModel, $"ToModel {weight.Name} row {r}");
            }
        }
    }

    [Fact]
    public void Model_loader_detects_a_native_directory_and_the_runtime_scores_it()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        string dir = Path.Combine(root, "loader");
        NativeModelWriter.Write(model, dir, Schemes(model, 8, 32, false));
        using var loaded = ModelLoader.Load(dir);
        Assert.Equal(model.Config, loaded.Config);
        var options = new Squeeze.Evaluation.EvaluationOptions { ContextLength = 128, MaxChunks = 2, Threads = 2 };
        var result = Squeeze.Evaluation.Evaluator.Evaluate(loaded, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")), options, baseModel: model);
        // 8-bit codes: close to the original, but not identical.
        Assert.InRange(result.KlDivergence!.Mean, 1e-7, 0.01);
    }

    [Fact]
    public void Quantized_weights_stay_close_to_the_original()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var schemes = Schemes(model, 8, 32, false);
        string dir = Path.Combine(root, "q8");
        NativeModelWriter.Write(model, dir, schemes);
        using var reader = NativeModelReader.Open(dir);
        foreach (string name in schemes.Keys)
        {
            var t = model[name];
            var original = new float[t.Columns];
            var row = new float[t.Columns];
            for (int r = 0; r < t.Rows; r++)
            {
                Dequantize.Row(t.Type, t.Row(r), original);
                reader.DecodeRow(name, r, row);
                float range = original.Max() - original.Min();
                for (int c = 0; c < row.Length; c++)
                    Assert.True(Math.Abs(row[c] - original[c]) <= range / 255 * 0.51 + range * 2e-3, $"{name}[{r}, {c}]: {row[c]} vs {original[c]}");
            }
        }
    }

    [Fact]
    public void Writer_refuses_a_group_that_does_not_divide_the_row_and_a_non_empty_destination()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var wide = model.Tensors.First(t => t.Shape.Length == 2);
        var e = Assert.Throws<ArgumentException>(() => NativeModelWriter.Write(model, Path.Combine(root, "x"),
            new Dictionary<string, UniformScheme> { [wide.Name] = new UniformScheme(4, 48, false) }));
        Assert.Contains("does not divide", e.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(root, "x")));
        Directory.CreateDirectory(Path.Combine(root, "full"));
        File.WriteAllText(Path.Combine(root, "full", "keep.txt"), "x");
        Assert.Throws<IOException>(() => NativeModelWriter.Write(model, Path.Combine(root, "full"), new Dictionary<string, UniformScheme>()));
    }

    [Fact]
    public void Reader_refuses_a_newer_version_and_tensors_that_disagree_with_config_json_naming_the_file()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        string dir = Path.Combine(root, "v");
        NativeModelWriter.Write(model, dir, Schemes(model, 4, 32, false));
        string weights = Path.Combine(dir, NativeFormat.WeightsFile);

        RewriteWeights(weights, (meta, _) => meta[NativeFormat.VersionKey] = "7");
        var e = Assert.Throws<ModelFormatException>(() => NativeModelReader.Open(dir));
        Assert.Equal(weights, e.Path);
        Assert.Contains("format version 7 is newer than version 3", e.Message, StringComparison.Ordinal);

        RewriteWeights(weights, (meta, names) =>
        {
            meta[NativeFormat.VersionKey] = "1";
            names.Remove("output_norm.weight");
        });
        e = Assert.Throws<ModelFormatException>(() => NativeModelReader.Open(dir));
        Assert.Equal(weights, e.Path);
        Assert.Contains("tensor 'output_norm.weight' is missing", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Rewrites a safetensors file with edited metadata and an edited set of tensor names to keep.</summary>
    private static void RewriteWeights(string path, Action<IDictionary<string, string>, HashSet<string>> edit)
    {
        var meta = new Dictionary<string, string>();
        var writer = new Squeeze.Formats.Safetensors.SafetensorsWriter();
        using (var file = Squeeze.Formats.Safetensors.SafetensorsFile.Open(path))
        {
            foreach (var (k, v) in file.Metadata)
                meta[k] = v;
            var names = file.Tensors.Select(t => t.Name).ToHashSet();
            edit(meta, names);
            foreach (var t in file.Tensors.Where(t => names.Contains(t.Name)))
                writer.Add(t.Name, t.DType, t.Shape, file.GetBytes(t).ToArray());
        }
        foreach (var (k, v) in meta)
            writer.Metadata[k] = v;
        writer.Write(path);
    }

    [Fact]
    public unsafe void Nested_schemes_round_trip_as_version_2_and_run_exactly_as_the_weights_they_store()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var replaced = new List<LinearWeight>();
        var buffers = new List<NativeBuffer>();
        try
        {
            foreach (var t in model.Tensors.Where(t => t.Shape.Length == 2 && t.Name != TensorNames.TokenEmbedding && t.Columns % 32 == 0))
            {
                var values = new float[t.ElementCount];
                Dequantize.Tensor(t, values);
                var dense = UniformWeight.Encode(t.Name, values, (int)t.Rows, (int)t.Columns, new UniformScheme(3, 32, false));
                // the residual in f16 as a plain nested term: dense + residual ≈ the original
                var residual = NativeBuffer.Allocate(t.ElementCount * 2);
                buffers.Add(residual);
                var row = new float[t.Columns];
                var halves = (Half*)residual.Pointer;
                for (int r = 0; r < t.Rows; r++)
                {
                    dense.DecodeRow(r, row);
                    for (int c = 0; c < t.Columns; c++)
                        halves[r * t.Columns + c] = (Half)(values[r * t.Columns + c] - row[c]);
                }
                replaced.Add(new SumWeight(t.Name, [dense, new BlockWeight(new Tensor(t.Name + ".1", GgmlType.F16, t.Shape, residual, 0))]));
            }
            Assert.NotEmpty(replaced);
            string dir = Path.Combine(root, "v2");
            NativeModelWriter.Write(model, dir, replaced.ToDictionary(w => w.Name));
            using var reader = NativeModelReader.Open(dir);
            Assert.Equal(2, reader.Version);
            foreach (var w in replaced)
            {
                var info = reader.GetTensor(w.Name);
                Assert.Equal(w.Scheme, info.Scheme);
                Assert.Equal(w.StoredBytes, info.StoredBytes);
                var expected = new float[w.Columns];
                var actual = new float[w.Columns];
                for (int r = 0; r < w.Rows; r++)
                {
                    w.DecodeRow(r, expected);
                    reader.DecodeRow(w.Name, r, actual);
                    AssertBits(expected, actual, $"{w.Name} row {r}");
                }
            }
            using var loaded = reader.ToModel();
            Assert.Equal(replaced.Count, loaded.Weights.Count);
            using var inMemory = model.WithWeights(replaced);
            int[] tokens = [1, 45, 300, 12, 7, 99, 250, 3];
            using var a = new Squeeze.Runtime.Transformer(loaded, new Squeeze.Runtime.RuntimeOptions { Threads = 2 });
            using var b = new Squeeze.Runtime.Transformer(inMemory, new Squeeze.Runtime.RuntimeOptions { Threads = 2 });
            Assert.Equal(b.Forward(tokens, tokens.Length).ToArray(), a.Forward(tokens, tokens.Length).ToArray());
        }
        finally
        {
            foreach (var buffer in buffers)
                buffer.Dispose();
        }
    }

    [Fact]
    public void A_file_using_only_the_uniform_scheme_is_written_as_version_1()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        string dir = Path.Combine(root, "v1");
        NativeModelWriter.Write(model, dir, Schemes(model, 4, 32, false));
        using var reader = NativeModelReader.Open(dir);
        Assert.Equal(1, reader.Version);
    }

    private static void AssertBits(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: first difference at {i}: expected {expected[i]}, got {actual[i]}");
        }
    }
}
