using System.Text.Json.Nodes;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tests.Weights;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

/// <summary>The "rotation", "entropy" and "dfloat11" schemes: round trips through a native directory and bad input.</summary>
public sealed class LosslessSchemesTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-lossless-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
    }

    /// <summary>stories260K with four weights in the new schemes: a rotated uniform, an entropy-coded uniform, a rotated
    /// entropy-coded uniform (nesting), and a DFloat11 BF16 matrix.</summary>
    private static Dictionary<string, LinearWeight> Replacements(Model model)
    {
        LinearWeight Weight(string name) => model.Weight(name);
        float[] Values(string name) => Weight(name).Decode();
        var q = Weight("blk.0.attn_q.weight");
        var up = Weight("blk.0.ffn_up.weight");
        var down = Weight("blk.0.ffn_down.weight");
        var k = Weight("blk.1.attn_k.weight");
        var downRotation = new RandomizedHadamard(down.Columns, 12345, permute: true);
        return new Dictionary<string, LinearWeight>
        {
            [q.Name] = RotatedQuantizer.Quantize(q.Name, Values(q.Name), q.Rows, new UniformScheme(3, 32, false), new RandomizedHadamard(q.Columns, 7, false), []),
            [up.Name] = EntropyCodedWeight.Encode(UniformWeight.Encode(up.Name, Values(up.Name), up.Rows, up.Columns, new UniformScheme(4, 32, true)), chunkRows: 50),
            [down.Name] = new RotatedWeight(downRotation, EntropyCodedWeight.Encode(UniformWeight.Encode(down.Name,
                RotatedQuantizer.RotateRows(Values(down.Name), down.Rows, downRotation), down.Rows, down.Columns, new UniformScheme(2, down.Columns, false)), chunkRows: 9)),
            [k.Name] = DFloat11Weight.Encode(WeightTestData.Bf16(k.Name, Values(k.Name), k.Rows, k.Columns), chunkRows: 5),
        };
    }

    private string Write(Model model, Dictionary<string, LinearWeight> replacements, string name = "out")
    {
        string dir = Path.Combine(root, name);
        NativeModelWriter.Write(model, dir, replacements);
        return dir;
    }

    [Fact]
    public void New_schemes_round_trip_bit_for_bit_and_the_runtime_scores_them_as_in_memory()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var replacements = Replacements(model);
        string dir = Write(model, replacements);
        using (var reader = NativeModelReader.Open(dir))
        {
            Assert.Equal(2, reader.Version);
            foreach (var (name, weight) in replacements)
            {
                var info = reader.GetTensor(name);
                Assert.Equal(weight.Scheme, info.Scheme);
                Assert.Equal(weight.StoredBytes, info.StoredBytes);
            }
        }
        using var loaded = ModelLoader.Load(dir);
        foreach (var (name, weight) in replacements)
        {
            var read = loaded.Weight(name);
            Assert.Equal(weight.GetType(), read.GetType());
            Assert.Equal(weight.Decode(), read.Decode());
        }
        var scheme = SchemeJson(dir, "blk.0.ffn_down.weight");
        Assert.Equal("rotation", (string?)scheme["scheme"]);
        Assert.Equal("entropy", (string?)scheme["base"]!["scheme"]);

        using var inMemory = model.WithWeights(replacements.Values);
        var options = new EvaluationOptions { ContextLength = 64, MaxChunks = 2, Threads = 2 };
        var result = Evaluator.Evaluate(loaded, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")), options, baseModel: inMemory);
        Assert.Equal(0, result.KlDivergence!.Mean);
    }

    private static JsonNode SchemeJson(string dir, string name)
    {
        using var file = SafetensorsFile.Open(Path.Combine(dir, NativeFormat.WeightsFile));
        return JsonNode.Parse(file.Metadata[NativeFormat.SchemeKeyPrefix + name])!;
    }

    /// <summary>Rewrites the weights file with edited metadata and tensor bytes.</summary>
    private static void Rewrite(string dir, Action<Dictionary<string, string>, Dictionary<string, byte[]>> edit)
    {
        string path = Path.Combine(dir, NativeFormat.WeightsFile);
        var meta = new Dictionary<string, string>();
        var data = new Dictionary<string, byte[]>();
        var infos = new List<SafetensorsTensorInfo>();
        using (var file = SafetensorsFile.Open(path))
        {
            foreach (var (k, v) in file.Metadata)
                meta[k] = v;
            foreach (var t in file.Tensors)
            {
                data[t.Name] = file.GetBytes(t).ToArray();
                infos.Add(t);
            }
        }
        edit(meta, data);
        var writer = new SafetensorsWriter();
        foreach (var (k, v) in meta)
            writer.Metadata[k] = v;
        foreach (var t in infos)
            writer.Add(t.Name, t.DType, t.Shape, data[t.Name]);
        writer.Write(path);
    }

    private void AssertRejected(Action<Dictionary<string, string>, Dictionary<string, byte[]>> edit, string expected)
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        string dir = Write(model, Replacements(model), Guid.NewGuid().ToString("N"));
        Rewrite(dir, edit);
        var e = Assert.Throws<ModelFormatException>(() => NativeModelReader.Open(dir).Dispose());
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
        Assert.Contains(NativeFormat.WeightsFile, e.Message, StringComparison.Ordinal);
    }

    private static void EditScheme(Dictionary<string, string> meta, string name, Action<JsonObject> edit)
    {
        var json = JsonNode.Parse(meta[NativeFormat.SchemeKeyPrefix + name])!.AsObject();
        edit(json);
        meta[NativeFormat.SchemeKeyPrefix + name] = json.ToJsonString();
    }

    [Fact]
    public void A_corrupt_stream_byte_is_refused_naming_the_chunk()
        => AssertRejected((_, data) => data["blk.0.ffn_up.weight.streams"][10] ^= 0x04, "CRC-32");

    [Fact]
    public void A_corrupt_exponent_stream_is_refused()
        => AssertRejected((_, data) => data["blk.1.attn_k.weight.exponent_streams"][3] ^= 0x80, "chunk 0");

    [Fact]
    public void A_stream_that_fits_its_checksum_but_not_its_symbols_is_refused()
        => AssertRejected((_, data) =>
        {
            // Zero the first chunk's stream and give it the matching CRC: the rANS state check must catch it.
            var table = data["blk.0.ffn_up.weight.chunks"];
            int length = BitConverter.ToInt32(table, 0);
            var streams = data["blk.0.ffn_up.weight.streams"];
            Array.Clear(streams, 0, length);
            BitConverter.GetBytes(System.IO.Hashing.Crc32.HashToUInt32(streams.AsSpan(0, length))).CopyTo(table, 4);
        }, "initial state");

    [Fact]
    public void Frequencies_that_do_not_sum_to_the_total_are_refused()
        => AssertRejected((_, data) => data["blk.0.ffn_up.weight.frequencies"][0] ^= 1, "sum to");

    [Fact]
    public void A_chunk_table_that_disagrees_with_the_streams_is_refused()
        => AssertRejected((_, data) => data["blk.0.ffn_up.weight.chunks"][0] += 1, "blk.0.ffn_up.weight.streams");

    [Fact]
    public void A_chunk_row_count_that_disagrees_with_the_chunk_table_is_refused()
        => AssertRejected((meta, _) => EditScheme(meta, "blk.1.attn_k.weight", j => j["chunk_rows"] = 3), "shape");

    [Fact]
    public void Unknown_coder_transform_and_keys_and_negative_seeds_are_refused()
    {
        AssertRejected((meta, _) => EditScheme(meta, "blk.0.ffn_up.weight", j => j["coder"] = "huffman"), "\"coder\"");
        AssertRejected((meta, _) => EditScheme(meta, "blk.0.attn_q.weight", j => j["transform"] = "dct"), "\"transform\"");
        AssertRejected((meta, _) => EditScheme(meta, "blk.0.attn_q.weight", j => j["seed"] = -1), "\"seed\"");
        AssertRejected((meta, _) => EditScheme(meta, "blk.1.attn_k.weight", j => j["extra"] = 1), "unknown key \"extra\"");
        AssertRejected((meta, _) => EditScheme(meta, "blk.0.attn_q.weight", j => j.Remove("permute")), "\"permute\" is missing");
    }

    [Fact]
    public void A_rotation_scheme_in_a_version_1_file_is_refused_naming_both_versions()
        => AssertRejected((meta, _) => meta[NativeFormat.VersionKey] = "1", "version 2");

    /// <summary>Random byte flips inside the new schemes' companions: every file loads and decodes, or is refused with
    /// a ModelFormatException; never another exception, never a read out of bounds.</summary>
    [Fact]
    public void Flipped_bytes_in_the_companions_load_or_throw_ModelFormatException()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        string clean = Write(model, Replacements(model), "clean");
        string[] companions =
        [
            "blk.0.ffn_up.weight.streams", "blk.0.ffn_up.weight.chunks", "blk.0.ffn_up.weight.frequencies",
            "blk.0.ffn_down.weight.base.streams", "blk.0.ffn_down.weight.base.chunks",
            "blk.1.attn_k.weight.exponent_streams", "blk.1.attn_k.weight.exponent_chunks", "blk.1.attn_k.weight.exponent_frequencies",
        ];
        var random = new Random(8);
        int rejected = 0;
        for (int iteration = 0; iteration < 40; iteration++)
        {
            string dir = Path.Combine(root, $"m{iteration}");
            Directory.CreateDirectory(dir);
            foreach (string f in Directory.GetFiles(clean))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            string target = companions[random.Next(companions.Length)];
            Rewrite(dir, (_, data) =>
            {
                var bytes = data[target];
                for (int i = random.Next(1, 4); i > 0; i--)
                    bytes[random.Next(bytes.Length)] ^= (byte)random.Next(1, 256);
            });
            try
            {
                using var loaded = ModelLoader.Load(dir);
                foreach (var w in loaded.Weights)
                    w.Decode();
            }
            catch (ModelFormatException)
            {
                rejected++;
            }
        }
        Assert.True(rejected >= 30, $"only {rejected} of 40 corruptions were refused");
    }
}
