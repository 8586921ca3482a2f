using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Pruning;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class SparseSchemeTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-sparse-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
    }

    private static LinearWeight Uniform4(string name, float[] values, int rows, int columns)
        => UniformWeight.Encode(name, values, rows, columns, new UniformScheme(4, 32, symmetric: false));

    // stories260K (dim 64, hidden 172) with one weight in every sparse representation, f16 and 4-bit values.
    private static Dictionary<string, LinearWeight> Replacements(Model model)
    {
        LinearWeight Pruned(string name, SparsityPattern pattern, ValueEncoder? encode = null)
        {
            var w = model.Weight(name);
            var result = Pruner.Prune(w.Decode(), w.Rows, w.Columns, pattern, PruningMethod.Magnitude);
            return PrunedWeights.For(name, result, pattern, encode);
        }
        return new Dictionary<string, LinearWeight>(StringComparer.Ordinal)
        {
            [TensorNames.Up(0)] = Pruned(TensorNames.Up(0), new SparsityPattern.NOfM(2, 4)),
            [TensorNames.Gate(0)] = Pruned(TensorNames.Gate(0), new SparsityPattern.NOfM(4, 8), Uniform4),
            [TensorNames.Down(0)] = Pruned(TensorNames.Down(0), new SparsityPattern.NOfM(2, 4)),
            [TensorNames.Query(1)] = Pruned(TensorNames.Query(1), new SparsityPattern.Unstructured(0.5)),
            [TensorNames.Up(1)] = Pruned(TensorNames.Up(1), new SparsityPattern.Unstructured(0.5), Uniform4),
            [TensorNames.Down(1)] = Pruned(TensorNames.Down(1), new SparsityPattern.Rows(0.25)),
            [TensorNames.AttentionOutput(1)] = Pruned(TensorNames.AttentionOutput(1), new SparsityPattern.Columns(0.25, 8)),
            [TensorNames.AttentionOutput(2)] = new ZeroWeight(TensorNames.AttentionOutput(2), 64, 64),
        };
    }

    [Fact]
    public void Sparse_weights_round_trip_bit_for_bit_and_run_as_written()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var replacements = Replacements(model);
        string dir = Path.Combine(root, "sparse");
        NativeModelWriter.Write(model, dir, replacements);
        using (var file = SafetensorsFile.Open(Path.Combine(dir, NativeFormat.WeightsFile)))
            Assert.Equal("2", file.Metadata[NativeFormat.VersionKey]);
        using var loaded = ModelLoader.Load(dir);
        foreach (var (name, written) in replacements)
        {
            var read = loaded.Weight(name);
            Assert.Equal(written.GetType(), read.GetType());
            Assert.Equal(written.StoredBytes, read.StoredBytes);
            Assert.Equal(written.Scheme, read.Scheme);
            Assert.Equal(written.Decode(), read.Decode());
        }
        using var inMemory = new Model(model.Config, model.Vocabulary, model.Tensors.Where(t => !replacements.ContainsKey(t.Name)).ToArray(), model.Source, [],
            [.. replacements.Values]);
        int[] tokens = [1, 403, 407, 262, 300, 289, 47];
        using var a = new Transformer(inMemory, new RuntimeOptions { Threads = 2 });
        using var b = new Transformer(loaded, new RuntimeOptions { Threads = 2 });
        Assert.Equal(a.Forward(tokens, tokens.Length).ToArray(), b.Forward(tokens, tokens.Length).ToArray());
    }

    private string WriteSparse(Model model)
    {
        string dir = Path.Combine(root, Guid.NewGuid().ToString("N"));
        NativeModelWriter.Write(model, dir, Replacements(model));
        return dir;
    }

    // Rewrites the weights file with the metadata and the companion bytes edited.
    private static void Rewrite(string dir, Action<IDictionary<string, string>, IDictionary<string, byte[]>> edit)
    {
        string path = Path.Combine(dir, NativeFormat.WeightsFile);
        var meta = new Dictionary<string, string>();
        var data = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        var infos = new List<(string Name, SafetensorsDType DType, long[] Shape)>();
        using (var file = SafetensorsFile.Open(path))
        {
            foreach (var (k, v) in file.Metadata)
                meta[k] = v;
            foreach (var t in file.Tensors)
            {
                data[t.Name] = file.GetBytes(t).ToArray();
                infos.Add((t.Name, t.DType, t.Shape));
            }
        }
        edit(meta, data);
        var writer = new SafetensorsWriter();
        foreach (var (k, v) in meta)
            writer.Metadata[k] = v;
        foreach (var (name, dtype, shape) in infos)
        {
            if (data.TryGetValue(name, out var bytes))
                writer.Add(name, dtype, shape, bytes);
        }
        writer.Write(path);
    }

    private static void AssertRefused(string dir, string expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir).Dispose());
        Assert.Equal(Path.Combine(dir, NativeFormat.WeightsFile), e.Path);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    private const string Key = NativeFormat.SchemeKeyPrefix;

    [Fact]
    public void Out_of_order_positions_wrong_counts_and_bad_keys_are_refused_naming_the_tensor()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        string up0 = TensorNames.Up(0), q1 = TensorNames.Query(1), down1 = TensorNames.Down(1), gate0 = TensorNames.Gate(0);

        string dir = WriteSparse(model);
        // 2:4 positions of the first two kept weights of row 0 made equal (1, 1).
        Rewrite(dir, (_, d) => d[up0 + ".indices"][0] = (byte)((d[up0 + ".indices"][0] & 0xF0) | 0b01_01));
        AssertRefused(dir, $"tensor '{up0}.indices': row 0, group 0: positions are not strictly increasing");

        dir = WriteSparse(model);
        Rewrite(dir, (_, d) => d[q1 + ".mask"][0] ^= 1);
        AssertRefused(dir, $"tensor '{q1}.mask': row 0: the mask keeps");

        dir = WriteSparse(model);
        Rewrite(dir, (_, d) => d[down1 + ".row_mask"][0] ^= 1);
        AssertRefused(dir, $"tensor '{down1}': the row mask keeps");

        dir = WriteSparse(model);
        Rewrite(dir, (m, _) => m[Key + up0] = m[Key + up0].Replace("\"n\":2", "\"n\":4", StringComparison.Ordinal));
        AssertRefused(dir, "\"n\" is 4; it must be an integer in 1..3");

        dir = WriteSparse(model);
        Rewrite(dir, (m, _) => m[Key + gate0] = m[Key + gate0].Replace("\"n\":4", "\"n\":2", StringComparison.Ordinal));
        AssertRefused(dir, $"tensor '{gate0}.indices': has shape");

        dir = WriteSparse(model);
        Rewrite(dir, (m, _) => m[Key + q1] = m[Key + q1].Replace("\"kept\":32", "\"kept\":31", StringComparison.Ordinal));
        AssertRefused(dir, "has shape");

        dir = WriteSparse(model);
        Rewrite(dir, (m, _) => m[Key + down1] = m[Key + down1].Replace("\"rows\":48", "\"rows\":65", StringComparison.Ordinal));
        AssertRefused(dir, "\"rows\" is 65; it must be an integer in 1..64");

        dir = WriteSparse(model);
        Rewrite(dir, (m, _) => m[Key + TensorNames.AttentionOutput(2)] = "{\"scheme\":\"zero\",\"rows\":1}");
        AssertRefused(dir, "unknown key");
    }

    /// <summary>Random byte flips in the sparse companions: every mutant loads and multiplies, or throws ModelFormatException.</summary>
    [Fact]
    public void Mutated_index_and_mask_bytes_load_and_multiply_or_throw_ModelFormatException()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        string dir = WriteSparse(model);
        string path = Path.Combine(dir, NativeFormat.WeightsFile);
        byte[] original = File.ReadAllBytes(path);
        string[] companions = [TensorNames.Up(0) + ".indices", TensorNames.Gate(0) + ".indices", TensorNames.Query(1) + ".mask",
            TensorNames.Down(1) + ".row_mask", TensorNames.AttentionOutput(1) + ".column_mask"];
        var random = new Random(42);
        int loaded = 0, refused = 0;
        using var context = new ComputeContext(1);
        for (int iteration = 0; iteration < 60; iteration++)
        {
            File.WriteAllBytes(path, original);
            string target = companions[random.Next(companions.Length)];
            Rewrite(dir, (_, d) =>
            {
                var bytes = d[target];
                for (int i = random.Next(1, 3); i > 0; i--)
                    bytes[random.Next(bytes.Length)] ^= (byte)random.Next(1, 256);
            });
            try
            {
                using var mutant = ModelLoader.Load(dir);
                foreach (var w in mutant.Weights)
                {
                    var x = new float[2 * w.Columns];
                    w.Multiply(x, 2, context, new float[2 * w.Rows]);
                    w.Decode();
                }
                loaded++;
            }
            catch (ModelFormatException e)
            {
                Assert.Equal(path, e.Path);
                refused++;
            }
        }
        Assert.True(refused > 0, $"{loaded} mutants loaded, none refused");
    }
}
