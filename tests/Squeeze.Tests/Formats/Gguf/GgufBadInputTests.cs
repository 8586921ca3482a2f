using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Tensors;

namespace Squeeze.Tests.Formats.Gguf;

/// <summary>Each kind of corrupt file fails with a <see cref="ModelFormatException"/> naming the file and the problem.</summary>
public class GgufBadInputTests
{
    private const string Name = "bad.gguf";

    private static ModelFormatException Rejects(byte[] bytes, string expectedFragment)
    {
        var e = Assert.Throws<ModelFormatException>(() =>
        {
            using var file = GgufFile.Parse(bytes, Name);
            using var model = GgufModelReader.FromFile(file);
        });
        Assert.Equal(Name, e.Path);
        Assert.StartsWith(Name + ": ", e.Message);
        Assert.Contains(expectedFragment, e.Message);
        return e;
    }

    [Fact]
    public void Tiny_model_seed_is_valid()
    {
        using var file = GgufFile.Parse(TinyGguf.Model(), Name);
        using var model = GgufModelReader.FromFile(file);
        Assert.Equal(32, model.Config.Dim);
        Assert.Equal(8, model.Config.HeadDim);
        Assert.Equal(16, model.Config.KvDim);
        Assert.True(model.Config.TiedEmbeddings);
        Assert.Equal(8, model.Vocabulary.Count);
        Assert.Equal(11, model.Tensors.Count);
    }

    [Fact]
    public void Empty_and_foreign_files() {
        Rejects([], "not a GGUF file");
        Rejects([1, 2, 3], "not a GGUF file");
        Rejects("PK\x03\x04 zip, not gguf"u8.ToArray(), "not a GGUF file");
    }

    [Fact]
    public void Version_1_and_unknown_versions()
    {
        Rejects(new RawGguf().Header(1, 0, 0).Bytes(), "version 1 is not supported");
        Rejects(new RawGguf().Header(0x03000000, 0, 0).Bytes(), "unsupported GGUF version");
    }

    [Fact]
    public void Truncated_header()
    {
        byte[] good = TinyGguf.Model();
        foreach (int length in new[] { 4, 8, 12, 23, 24, 100, 1000 })
            Rejects(good[..length], "truncated");
        Rejects(new RawGguf().Header(3, 0, 1).Str("general.name").U32((uint)GgufValueType.String).U64(10).Bytes(), "truncated");
    }

    [Fact]
    public void Absurd_counts_and_lengths_are_refused_before_allocating()
    {
        Rejects(new RawGguf().Header(3, 1UL << 40, 0).Bytes(), "tensor count 1099511627776");
        Rejects(new RawGguf().Header(3, 0, 1UL << 62).Bytes(), "metadata count");
        Rejects(new RawGguf().Header(3, 0, 1).U64(1UL << 60).Zeros(64).Bytes(), "string length 1152921504606846976");
        Rejects(new RawGguf().Header(3, 0, 1).Str("k").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.Float32).U64(1UL << 50).Zeros(16).Bytes(), "array of 1125899906842624");
        Rejects(new RawGguf().Header(3, 0, 1).Str("k").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.String).U64(ulong.MaxValue).Bytes(), "cannot fit");
    }

    [Fact]
    public void Deeply_nested_arrays_are_refused()
    {
        var raw = new RawGguf().Header(3, 0, 1).Str("k");
        raw.U32((uint)GgufValueType.Array);
        for (int i = 0; i < 100; i++)
            raw.U32((uint)GgufValueType.Array).U64(1);
        raw.U32((uint)GgufValueType.UInt8).U64(0);
        Rejects(raw.Bytes(), "nested deeper");
    }

    [Fact]
    public void Unknown_value_and_tensor_types()
    {
        Rejects(new RawGguf().Header(3, 0, 1).Str("k").U32(13).U32(0).Bytes(), "unknown metadata value type 13");
        Rejects(new RawGguf().Header(3, 0, 1).Str("k").U32((uint)GgufValueType.Array).U32(99).U64(0).Bytes(), "unknown metadata value type 99");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", (GgmlType)4, 0, 32).PadTo(32).Zeros(128).Bytes(), "unknown type 4");
        Rejects(new RawGguf().Header(3, 0, 1).Str("k").U32((uint)GgufValueType.Bool).U32(7).Bytes(), "neither 0 nor 1");
    }

    [Fact]
    public void Tensor_geometry_errors()
    {
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.F32, 0, 1UL << 32, 1UL << 32, 1UL << 32).PadTo(32).Bytes(), "overflows");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.Q4_K, 0, 288).PadTo(32).Zeros(1000).Bytes(), "288 values does not fit Q4_K");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.F32, 0, 0).PadTo(32).Bytes(), "dimension 0 = 0");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.F32, 0, 1, 1, 1, 1, 1).PadTo(32).Bytes(), "5 dimensions");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.F32, 64, 32).PadTo(32).Zeros(128).Bytes(), "runs past the end");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.F32, 1UL << 62, 32).PadTo(32).Zeros(128).Bytes(), "runs past the end");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.F32, 4, 32).PadTo(32).Zeros(256).Bytes(), "not a multiple of the alignment");
        Rejects(new RawGguf().Header(3, 1, 0).Tensor("t", GgmlType.F32, 0, 32).Bytes(), "past the end");
    }

    [Fact]
    public void Duplicate_and_overlapping_tensors()
    {
        Rejects(new RawGguf().Header(3, 2, 0).Tensor("t", GgmlType.F32, 0, 8).Tensor("t", GgmlType.F32, 32, 8).PadTo(32).Zeros(64).Bytes(), "appears twice");
        Rejects(new RawGguf().Header(3, 2, 0).Tensor("a", GgmlType.F32, 0, 16).Tensor("b", GgmlType.F32, 32, 16).PadTo(32).Zeros(128).Bytes(), "overlap");
        Rejects(new RawGguf().Header(3, 0, 2).KvU32("k", 1).KvU32("k", 2).Bytes(), "'k' appears twice");
    }

    [Fact]
    public void Bad_alignment()
    {
        Rejects(new RawGguf().Header(3, 0, 1).KvU32(GgufFile.AlignmentKey, 0).Bytes(), "power of two");
        Rejects(new RawGguf().Header(3, 0, 1).KvU32(GgufFile.AlignmentKey, 48).Bytes(), "power of two");
        Rejects(new RawGguf().Header(3, 0, 1).KvString(GgufFile.AlignmentKey, "32").Bytes(), "must be a u32");
    }

    private static byte[] ModelWith(string key, GgufValue value)
    {
        using var seed = GgufFile.Parse(TinyGguf.Model());
        var w = new GgufWriter();
        foreach (var (k, v) in seed.Values)
            w.AddMetadata(k, k == key ? value : v);
        if (!seed.Values.ContainsKey(key))
            w.AddMetadata(key, value);
        foreach (var t in seed.Tensors)
            w.AddTensor(t);
        var ms = new MemoryStream();
        w.Write(ms);
        return ms.ToArray();
    }

    [Fact]
    public void Bad_hyperparameters()
    {
        Rejects(ModelWith("llama.rope.freq_base", GgufValue.Scalar(GgufValueType.Float32, float.NaN)), "rope.freq_base");
        Rejects(ModelWith("llama.attention.layer_norm_rms_epsilon", GgufValue.Scalar(GgufValueType.Float32, float.PositiveInfinity)), "layer_norm_rms_epsilon");
        Rejects(ModelWith("llama.attention.layer_norm_rms_epsilon", GgufValue.Scalar(GgufValueType.Float64, -1.0)), "layer_norm_rms_epsilon");
        Rejects(ModelWith("general.architecture", GgufValue.String("mamba")), "architecture 'mamba' is not supported");
        Rejects(ModelWith("llama.block_count", GgufValue.Scalar(GgufValueType.UInt64, 1UL << 40)), "out of range");
        Rejects(ModelWith("llama.block_count", GgufValue.Scalar(GgufValueType.UInt32, 2u)), "no tensor 'blk.1.attn_norm.weight'");
        Rejects(ModelWith("llama.attention.head_count_kv", GgufValue.Scalar(GgufValueType.UInt32, 3u)), "key/value heads");
        Rejects(ModelWith("llama.embedding_length", GgufValue.String("32")), "expected an integer");
        Rejects(ModelWith("llama.embedding_length", GgufValue.Scalar(GgufValueType.UInt32, 64u)), "token_embd.weight");
        Rejects(ModelWith("tokenizer.ggml.scores", GgufValue.Array(GgufValueType.Float32, new float[3])), "scores");
        Rejects(ModelWith("tokenizer.ggml.model", GgufValue.String("t5")), "tokenizer model 't5'");
    }
}
