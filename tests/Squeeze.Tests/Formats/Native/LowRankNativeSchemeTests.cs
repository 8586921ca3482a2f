using System.Runtime.InteropServices;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class LowRankNativeSchemeTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-native-lowrank-{Guid.NewGuid():N}");

    public LowRankNativeSchemeTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    [Fact]
    public void Stories260K_with_low_rank_weights_round_trips_bit_for_bit_and_runs()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var rng = new Random(5);
        var replacements = new Dictionary<string, LinearWeight>();
        // An f16 low-rank weight, one with uniform-quantized factors, and EoRA's form: uniform + low-rank correction.
        var q = model.Weight("blk.0.attn_q.weight");
        replacements[q.Name] = Factored(q.Name, q.Rows, q.Columns, 8, rng, quantized: false);
        var up = model.Weight("blk.1.ffn_up.weight");
        replacements[up.Name] = Factored(up.Name, up.Rows, up.Columns, 16, rng, quantized: true);
        var down = model.Weight("blk.2.attn_output.weight");
        var baseWeight = UniformWeight.Encode(down.Name, down.Decode(), down.Rows, down.Columns, new UniformScheme(3, 32, symmetric: false));
        replacements[down.Name] = new SumWeight(down.Name, [baseWeight, Factored(down.Name, down.Rows, down.Columns, 4, rng, quantized: false)]);

        string dir = Path.Combine(root, "model");
        NativeModelWriter.Write(model, dir, replacements);
        using var loaded = ModelLoader.Load(dir);
        foreach (var (name, written) in replacements)
        {
            var read = loaded.Weight(name);
            Assert.Equal(written.Scheme, read.Scheme);
            Assert.Equal(written.StoredBytes, read.StoredBytes);
            Assert.Equal(written.Decode(), read.Decode());
        }
        Assert.IsType<LowRankWeight>(loaded.Weight(q.Name));
        var lowRank = (LowRankWeight)loaded.Weight(up.Name);
        Assert.IsType<UniformWeight>(lowRank.A);
        Assert.Equal(16, lowRank.Rank);

        var options = new Squeeze.Evaluation.EvaluationOptions { ContextLength = 64, MaxChunks = 1, Threads = 2 };
        var result = Squeeze.Evaluation.Evaluator.Evaluate(loaded, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")), options, baseModel: model);
        Assert.True(double.IsFinite(result.Perplexity));
        Assert.True(result.KlDivergence!.Mean > 0, "random factors must change the model");
    }

    /// <summary>The sample of <see cref="NativeFormatErrorTests"/> (version 2) plus "lr" [6, 40] = A [6, 3] (plain F16)
    /// · B [3, 40] (uniform 4-bit, group 8, symmetric).</summary>
    private static SafetensorsWriter Sample(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>>? edit = null)
        => NativeFormatErrorTests.Sample((m, t) =>
        {
            m[NativeFormat.VersionKey] = "2";
            m[NativeFormat.SchemeKeyPrefix + "lr"] =
                "{\"scheme\":\"lowrank\",\"rank\":3,\"a\":{\"scheme\":\"plain\"},\"b\":{\"scheme\":\"uniform\",\"bits\":4,\"group\":8,\"symmetric\":true,\"scale\":\"f16\"}}";
            var a = Enumerable.Range(0, 18).Select(i => BitConverter.HalfToUInt16Bits((Half)(0.1f * (i - 9)))).ToArray();
            t["lr.a"] = (SafetensorsDType.F16, [6, 3], MemoryMarshal.AsBytes(a.AsSpan()).ToArray());
            t["lr.b.codes"] = (SafetensorsDType.U8, [3, 20], Enumerable.Range(0, 60).Select(i => (byte)(i * 37)).ToArray());
            var scales = Enumerable.Range(0, 15).Select(i => BitConverter.HalfToUInt16Bits((Half)(0.01f * (i + 1)))).ToArray();
            t["lr.b.scales"] = (SafetensorsDType.F16, [3, 5], MemoryMarshal.AsBytes(scales.AsSpan()).ToArray());
            edit?.Invoke(m, t);
        });

    private static readonly Dictionary<string, long[]> Shapes = new(NativeFormatErrorTests.SampleShapes) { ["lr"] = [6, 40] };

    private void AssertRejected(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>> edit, string expected)
    {
        string path = Path.Combine(root, $"{Guid.NewGuid():N}.safetensors");
        Sample(edit).Write(path);
        NativeMutations.AssertRefused(path, Shapes, expected);
    }

    private static void SetScheme(IDictionary<string, string> m, string json) => m[NativeFormat.SchemeKeyPrefix + "lr"] = json;

    [Fact]
    public void The_sample_decodes_as_a_times_b()
    {
        string path = Path.Combine(root, "sample.safetensors");
        Sample().Write(path);
        using var file = SafetensorsFile.Open(path);
        var weights = NativeWeights.Parse(file, Shapes);
        var lr = Assert.IsType<LowRankWeight>(weights.Weights.Single(w => w.Name == "lr"));
        var a = lr.A.Decode();
        var b = lr.B.Decode();
        var row = new float[40];
        for (int r = 0; r < 6; r++)
        {
            lr.DecodeRow(r, row);
            for (int c = 0; c < 40; c++)
                Assert.Equal(a[r * 3] * b[c] + a[r * 3 + 1] * b[40 + c] + a[r * 3 + 2] * b[80 + c], row[c], 1e-6);
        }
        Assert.Equal(4 + 2 + 6, NativeMutations.ParseAndDecode(file, Shapes).Rows);
    }

    [Fact]
    public void A_lowrank_scheme_in_a_version_1_file_is_refused()
        => AssertRejected((m, _) => m[NativeFormat.VersionKey] = "1", "scheme \"lowrank\" is defined by format version 2, but the file says version 1");

    [Theory]
    [InlineData(0, "\"rank\"")]
    [InlineData(7, "\"rank\"")]
    public void A_rank_outside_1_to_min_rows_columns_is_refused(int rank, string expected)
        => AssertRejected((m, _) => SetScheme(m, $"{{\"scheme\":\"lowrank\",\"rank\":{rank},\"a\":{{\"scheme\":\"plain\"}},\"b\":{{\"scheme\":\"plain\"}}}}"), expected);

    [Fact]
    public void A_rank_that_disagrees_with_the_factors_is_refused()
        => AssertRejected((m, _) => SetScheme(m,
            "{\"scheme\":\"lowrank\",\"rank\":2,\"a\":{\"scheme\":\"plain\"},\"b\":{\"scheme\":\"uniform\",\"bits\":4,\"group\":8,\"symmetric\":true,\"scale\":\"f16\"}}"),
            "'lr.a': has shape [6, 3], expected [6, 2]");

    [Fact]
    public void Missing_factors_keys_and_companions_are_refused()
    {
        AssertRejected((m, _) => SetScheme(m, "{\"scheme\":\"lowrank\",\"rank\":3,\"a\":{\"scheme\":\"plain\"}}"), "\"b\"");
        AssertRejected((m, _) => SetScheme(m,
            "{\"scheme\":\"lowrank\",\"rank\":3,\"a\":{\"scheme\":\"plain\"},\"b\":{\"scheme\":\"uniform\",\"bits\":4,\"group\":8,\"symmetric\":true,\"scale\":\"f16\"},\"c\":1}"), "\"c\"");
        AssertRejected((_, t) => t.Remove("lr.a"), "'lr.a': companion tensor is missing");
        AssertRejected((_, t) => t["lr.b.scales"] = (SafetensorsDType.F16, [3, 4], new byte[24]), "'lr.b.scales': has shape [3, 4], expected [3, 5]");
        AssertRejected((_, t) => t["lr.a"] = (SafetensorsDType.I32, [6, 3], new byte[72]), "'lr.a': is I32");
        AssertRejected((m, _) => SetScheme(m,
            "{\"scheme\":\"lowrank\",\"rank\":3,\"a\":{\"scheme\":\"plain\"},\"b\":{\"scheme\":\"uniform\",\"bits\":4,\"group\":16,\"symmetric\":true,\"scale\":\"f16\"}}"),
            "group 16 does not divide the row length 40");
    }

    [Fact]
    public void A_factor_claimed_by_another_scheme_or_left_unclaimed_is_refused()
    {
        AssertRejected((m, t) => t["lr.c"] = (SafetensorsDType.F16, [2], new byte[4]), "lr.c");
        AssertRejected((m, _) => m[NativeFormat.SchemeKeyPrefix + "s"] = "{\"scheme\":\"lowrank\",\"rank\":1,\"a\":{\"scheme\":\"plain\"},\"b\":{\"scheme\":\"plain\"}}", "'s.a'");
    }

    // Tokens the mutations swap into the header (besides digit changes and byte flips).
    private static readonly string[] Swaps =
    [
        "lowrank", "plain", "uniform", "sum", "\\\"rank\\\"", "\\\"a\\\"", "\\\"b\\\"", "lr.a", "lr.b.codes", "lr.b.scales", "F16", "U8", "I32",
        "0", "1", "3", "6", "40", "-1", "null", "{}", "[]",
    ];

    /// <summary>Every mutation of the sample either parses and decodes every row, or throws ModelFormatException
    /// naming the file; never another exception (so decoding a low-rank weight cannot read out of bounds).</summary>
    [Fact]
    public void Mutated_files_with_low_rank_weights_load_or_throw_ModelFormatException()
    {
        var stream = new MemoryStream();
        Sample().WriteTo(stream);
        var (loaded, rejected) = NativeMutations.Run(stream.ToArray(), Swaps, 3000, 9, file => NativeMutations.ParseAndDecode(file, Shapes));
        Assert.True(loaded > 100, $"only {loaded} mutants loaded");
        Assert.True(rejected > 500, $"only {rejected} mutants rejected");
    }

    private static LowRankWeight Factored(string name, int rows, int columns, int rank, Random rng, bool quantized)
    {
        var a = Enumerable.Range(0, rows * rank).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var b = Enumerable.Range(0, rank * columns).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.1f).ToArray();
        if (!quantized)
            return LowRankWeight.Float16(name, a, b, rows, rank, columns);
        return new LowRankWeight(name,
            UniformWeight.Encode(name + ".a", a, rows, rank, new UniformScheme(4, rank, symmetric: false)),
            UniformWeight.Encode(name + ".b", b, rank, columns, new UniformScheme(4, 32, symmetric: false)));
    }
}
