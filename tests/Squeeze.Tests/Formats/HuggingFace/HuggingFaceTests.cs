using System.Buffers.Binary;
using System.Text.Json;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Llama2c;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats.HuggingFace;

public class HuggingFaceTests
{
    [Theory]
    [InlineData("model.embed_tokens.weight", "token_embd.weight")]
    [InlineData("model.norm.weight", "output_norm.weight")]
    [InlineData("lm_head.weight", "output.weight")]
    [InlineData("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight")]
    [InlineData("model.layers.12.self_attn.k_proj.bias", "blk.12.attn_k.bias")]
    [InlineData("model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight")]
    [InlineData("model.layers.3.self_attn.q_norm.weight", "blk.3.attn_q_norm.weight")]
    [InlineData("model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight")]
    [InlineData("model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight")]
    [InlineData("model.layers.3.input_layernorm.weight", "blk.3.attn_norm.weight")]
    [InlineData("model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight")]
    public void Names_map_both_ways(string hf, string gguf)
    {
        Assert.True(HuggingFaceNames.TryToGguf(hf, out string g));
        Assert.Equal(gguf, g);
        Assert.True(HuggingFaceNames.TryToHuggingFace(gguf, out string h));
        Assert.Equal(hf, h);
    }

    [Theory]
    [InlineData("model.layers.01.mlp.up_proj.weight")]
    [InlineData("model.layers.-1.mlp.up_proj.weight")]
    [InlineData("model.layers.x.mlp.up_proj.weight")]
    [InlineData("model.layers.1.mlp.fc1.weight")]
    [InlineData("transformer.wte.weight")]
    public void Unknown_names_do_not_map(string hf) => Assert.False(HuggingFaceNames.TryToGguf(hf, out _));

    [Fact]
    public unsafe void Rotate_half_rows_move_to_interleaved_positions()
    {
        // 2 heads of size 4, one column whose value is the Hugging Face row index.
        using var buffer = NativeBuffer.Allocate(8 * 4);
        for (int i = 0; i < 8; i++)
            ((float*)buffer.Pointer)[i] = i;
        var hf = new Tensor("q", GgmlType.F32, [8, 1], buffer, 0);
        var owned = new List<IDisposable>();
        var meta = RotaryOrder.Permute(hf, heads: 2, toInterleaved: true, owned);
        // Within a head, rotate-half pairs (0,2), (1,3) become interleaved pairs at rows (0,1), (2,3).
        Assert.Equal(new float[] { 0, 2, 1, 3, 4, 6, 5, 7 }, new ReadOnlySpan<float>(meta.Data, 8).ToArray());
        var back = RotaryOrder.Permute(meta, heads: 2, toInterleaved: false, owned);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4, 5, 6, 7 }, new ReadOnlySpan<float>(back.Data, 8).ToArray());
        owned.ForEach(d => d.Dispose());
    }

    /// <summary>The proof: stories260K written as a Hugging Face directory reads back byte-identical.</summary>
    [Fact]
    public unsafe void Stories260K_round_trips_through_a_Hugging_Face_directory()
    {
        using var dir = new TempDirectory();
        string target = dir.File("stories260K-hf");
        using var source = Llama2cReader.Load(SharedData.Stories260K);
        var files = HuggingFaceWriter.Write(source, target);
        Assert.Equal(["model.safetensors", "config.json", "tokenizer.model", "tokenizer_config.json"], files);
        Assert.Equal(["stories260K-hf"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName));

        using var loaded = HuggingFaceReader.Load(target);
        Assert.Equal(source.Config, loaded.Config);
        Assert.Equal(source.Tensors.Select(t => t.Name).Order(), loaded.Tensors.Select(t => t.Name).Order());
        foreach (var t in source.Tensors)
        {
            var u = loaded[t.Name];
            Assert.Equal(t.Type, u.Type);
            Assert.Equal(t.Shape, u.Shape);
            Assert.True(new ReadOnlySpan<byte>(t.Data, (int)t.ByteLength).SequenceEqual(new ReadOnlySpan<byte>(u.Data, (int)u.ByteLength)), t.Name);
        }
        var (a, b) = (source.Vocabulary, loaded.Vocabulary);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.Equal(a.Scores, b.Scores);
        Assert.Equal(a.Types, b.Types);
        Assert.Equal((a.Kind, a.BosId, a.EosId, a.UnknownId, a.PaddingId, a.AddBos, a.AddSpacePrefix), (b.Kind, b.BosId, b.EosId, b.UnknownId, b.PaddingId, b.AddBos, b.AddSpacePrefix));

        // On disk q/k are in rotate-half order: HF row i of a head is llama2.c row 2i, HF row i + hd/2 is row 2i + 1.
        using var file = SafetensorsFile.Open(Path.Combine(target, "model.safetensors"));
        Assert.Equal("pt", file.Metadata["format"]);
        var stored = file.GetBytes(file.GetInfo("model.layers.2.self_attn.k_proj.weight"));
        var original = source[TensorNames.Key(2)];
        int hd = 8, rowBytes = 64 * 4;
        for (int h = 0; h < 4; h++)
        {
            for (int i = 0; i < hd / 2; i++)
            {
                Assert.True(stored.Slice((h * hd + i) * rowBytes, rowBytes).SequenceEqual(original.Row(h * hd + 2 * i)));
                Assert.True(stored.Slice((h * hd + hd / 2 + i) * rowBytes, rowBytes).SequenceEqual(original.Row(h * hd + 2 * i + 1)));
            }
        }
        Assert.False(stored.SequenceEqual(new ReadOnlySpan<byte>(original.Data, (int)original.ByteLength)));
        Assert.False(file.TryGetInfo("lm_head.weight", out _));

        using var config = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(target, "config.json")));
        Assert.Equal("LlamaForCausalLM", config.RootElement.GetProperty("architectures")[0].GetString());
        Assert.True(config.RootElement.GetProperty("tie_word_embeddings").GetBoolean());
        Assert.Throws<IOException>(() => HuggingFaceWriter.Write(source, target));
    }

    [Fact]
    public void Writing_a_quantized_model_is_refused()
    {
        using var dir = new TempDirectory();
        using var buffer = NativeBuffer.Allocate(1024);
        var config = new ModelConfig { Architecture = "llama", Dim = 32, HiddenDim = 32, LayerCount = 1, HeadCount = 1, KvHeadCount = 1, HeadDim = 32, VocabSize = 4, ContextLength = 8 };
        using var model = new Model(config, FormatTestHelpers.InlineVocabulary(4), [new Tensor(TensorNames.TokenEmbedding, GgmlType.Q8_0, [4, 32], buffer, 0)], "test", []);
        var e = Assert.Throws<NotSupportedException>(() => HuggingFaceWriter.Write(model, dir.File("out")));
        Assert.Contains("Q8_0", e.Message);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    /// <summary>A tiny checkpoint directory written from a config and deterministic tensors.</summary>
    private static Dictionary<string, byte[]> WriteCheckpoint(string dir, string config, Dictionary<string, long[]> shapes, SafetensorsDType dtype = SafetensorsDType.F32, int shards = 1)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), config);
        var random = new Random(7);
        var data = new Dictionary<string, byte[]>();
        var writers = Enumerable.Range(0, shards).Select(_ => new SafetensorsWriter()).ToArray();
        var map = new Dictionary<string, string>();
        int n = 0;
        foreach (var (name, shape) in shapes)
        {
            var bytes = new byte[shape.Aggregate(1L, (a, d) => a * d) * SafetensorsDTypes.Size(dtype)];
            random.NextBytes(bytes);
            data[name] = bytes;
            int shard = n++ % shards;
            writers[shard].Add(name, dtype, shape, bytes);
            map[name] = $"model-{shard + 1:D5}-of-{shards:D5}.safetensors";
        }
        if (shards == 1)
        {
            writers[0].Write(Path.Combine(dir, "model.safetensors"));
        }
        else
        {
            for (int s = 0; s < shards; s++)
                writers[s].Write(Path.Combine(dir, $"model-{s + 1:D5}-of-{shards:D5}.safetensors"));
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = map }));
        }
        return data;
    }

    private static Dictionary<string, long[]> Shapes(int dim, int hidden, int layers, int qDim, int kvDim, int vocab, bool bias, bool qkNorm, int headDim, bool lmHead)
    {
        var s = new Dictionary<string, long[]> { ["model.embed_tokens.weight"] = [vocab, dim], ["model.norm.weight"] = [dim] };
        if (lmHead)
            s["lm_head.weight"] = [vocab, dim];
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            s[p + "input_layernorm.weight"] = [dim];
            s[p + "post_attention_layernorm.weight"] = [dim];
            s[p + "self_attn.q_proj.weight"] = [qDim, dim];
            s[p + "self_attn.k_proj.weight"] = [kvDim, dim];
            s[p + "self_attn.v_proj.weight"] = [kvDim, dim];
            s[p + "self_attn.o_proj.weight"] = [dim, qDim];
            s[p + "mlp.gate_proj.weight"] = [hidden, dim];
            s[p + "mlp.up_proj.weight"] = [hidden, dim];
            s[p + "mlp.down_proj.weight"] = [dim, hidden];
            if (bias)
            {
                s[p + "self_attn.q_proj.bias"] = [qDim];
                s[p + "self_attn.k_proj.bias"] = [kvDim];
                s[p + "self_attn.v_proj.bias"] = [kvDim];
            }
            if (qkNorm)
            {
                s[p + "self_attn.q_norm.weight"] = [headDim];
                s[p + "self_attn.k_norm.weight"] = [headDim];
            }
        }
        return s;
    }

    private const string LlamaConfig = """{"architectures":["LlamaForCausalLM"],"hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10,"max_position_embeddings":64,"rope_theta":500000.0,"rms_norm_eps":1e-06,"tie_word_embeddings":false,"hidden_act":"silu","rope_scaling":null}""";

    [Fact]
    public unsafe void Llama_q_and_k_are_reordered_to_interleaved_and_the_rest_is_viewed_in_place()
    {
        using var dir = new TempDirectory();
        var data = WriteCheckpoint(dir.Path, LlamaConfig, Shapes(16, 24, 2, 16, 8, 10, bias: false, qkNorm: false, 4, lmHead: true), SafetensorsDType.BF16);
        using var model = HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10));
        var c = model.Config;
        Assert.Equal(("llama", 16, 24, 2, 4, 2, 4, 10, 64), (c.Architecture, c.Dim, c.HiddenDim, c.LayerCount, c.HeadCount, c.KvHeadCount, c.HeadDim, c.VocabSize, c.ContextLength));
        Assert.Equal((500000f, 1e-6f, false, RopeStyle.Interleaved, false, false), (c.RopeTheta, c.RmsNormEps, c.TiedEmbeddings, c.RopeStyle, c.AttentionBias, c.QkNorm));
        Assert.Equal(GgmlType.BF16, model[TensorNames.Query(0)].Type);
        // k: 2 heads of 4 rows of 16 bf16 values; interleaved row 2i + j = HF row j * 2 + i.
        var k = model[TensorNames.Key(1)];
        byte[] hfK = data["model.layers.1.self_attn.k_proj.weight"];
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++)
                    Assert.True(k.Row(h * 4 + 2 * i + j).SequenceEqual(hfK.AsSpan((h * 4 + j * 2 + i) * 32, 32)));
        Assert.Equal("memory", k.Buffer.Origin);
        var v = model[TensorNames.Value(1)];
        Assert.EndsWith("model.safetensors", v.Buffer.Origin);
        Assert.True(new ReadOnlySpan<byte>(v.Data, (int)v.ByteLength).SequenceEqual(data["model.layers.1.self_attn.v_proj.weight"]));
        Assert.True(model.TryGetTensor(TensorNames.Output, out _));
    }

    [Fact]
    public unsafe void Qwen2_keeps_Hugging_Face_order_and_loads_biases_from_shards()
    {
        using var dir = new TempDirectory();
        string config = """{"architectures":["Qwen2ForCausalLM"],"hidden_size":16,"intermediate_size":24,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":12,"max_position_embeddings":32768,"rope_theta":1000000.0,"rms_norm_eps":1e-06,"tie_word_embeddings":true,"use_sliding_window":false,"sliding_window":4096}""";
        var data = WriteCheckpoint(dir.Path, config, Shapes(16, 24, 2, 16, 8, 12, bias: true, qkNorm: false, 4, lmHead: false), SafetensorsDType.F16, shards: 3);
        using var model = HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10));
        var c = model.Config;
        Assert.Equal(("qwen2", RopeStyle.Neox, true, true, 32768, 1000000f), (c.Architecture, c.RopeStyle, c.AttentionBias, c.TiedEmbeddings, c.ContextLength, c.RopeTheta));
        foreach (var (hfName, bytes) in data)
        {
            Assert.True(HuggingFaceNames.TryToGguf(hfName, out string name));
            var t = model[name];
            Assert.Equal(GgmlType.F16, t.Type);
            Assert.True(new ReadOnlySpan<byte>(t.Data, (int)t.ByteLength).SequenceEqual(bytes), name);
        }
        Assert.Equal(data.Count, model.Tensors.Count);
    }

    [Fact]
    public void Qwen3_has_qk_norm_and_its_own_head_dim()
    {
        using var dir = new TempDirectory();
        string config = """{"architectures":["Qwen3ForCausalLM"],"hidden_size":16,"intermediate_size":24,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"vocab_size":10,"max_position_embeddings":40960,"rope_theta":1000000,"rms_norm_eps":1e-06,"tie_word_embeddings":true,"attention_bias":false}""";
        WriteCheckpoint(dir.Path, config, Shapes(16, 24, 1, 32, 16, 10, bias: false, qkNorm: true, 8, lmHead: false));
        using var model = HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10));
        Assert.Equal(("qwen3", 8, 32, 16, true, RopeStyle.Neox), (model.Config.Architecture, model.Config.HeadDim, model.Config.QDim, model.Config.KvDim, model.Config.QkNorm, model.Config.RopeStyle));
        Assert.Equal(new long[] { 8 }, model[TensorNames.QueryNorm(0)].Shape);
        Assert.Equal(new long[] { 16, 32 }, model[TensorNames.AttentionOutput(0)].Shape);
    }

    [Fact]
    public void Mistral_keeps_its_context_and_slides_every_layer()
    {
        string config = LlamaConfig.Replace("LlamaForCausalLM", "MistralForCausalLM", StringComparison.Ordinal).Replace("\"max_position_embeddings\":64", "\"max_position_embeddings\":32768,\"sliding_window\":4096", StringComparison.Ordinal);
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), config);
        var c = HuggingFaceReader.ReadConfig(dir.File("config.json"));
        Assert.Equal(("llama", 32768, 4096, RopeStyle.Interleaved), (c.Architecture, c.ContextLength, c.SlidingWindow, c.RopeStyle));
        Assert.True(c.IsSlidingLayer(0) && c.IsSlidingLayer(1));
    }

    [Theory]
    [InlineData("\"LlamaForCausalLM\"", "\"GPT2LMHeadModel\"", "GPT2LMHeadModel")]
    [InlineData("\"rope_scaling\":null", "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0}", "yarn")]
    [InlineData("\"rope_scaling\":null", "\"rope_scaling\":{\"rope_type\":\"dynamic\",\"factor\":2.0}", "\"dynamic\" (NTK) is not supported: llama.cpp has no dynamic NTK scaling at runtime")]
    [InlineData("\"rope_scaling\":null", "\"rope_scaling\":{\"type\":\"linear\"}", "of type \"linear\" has no \"factor\"")]
    [InlineData("\"rope_scaling\":null", "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":-8.0}", "\"factor\" is -8.0")]
    [InlineData("\"rope_scaling\":null", "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":4.0,\"high_freq_factor\":1.0}", "high_freq_factor 1 must exceed low_freq_factor 4")]
    [InlineData("\"hidden_size\":16,", "", "\"hidden_size\" is missing")]
    [InlineData("\"num_key_value_heads\":2", "\"num_key_value_heads\":3", "num_key_value_heads 3 does not divide")]
    [InlineData("\"num_attention_heads\":4", "\"num_attention_heads\":5", "does not divide hidden_size")]
    [InlineData("\"hidden_act\":\"silu\"", "\"hidden_act\":\"gelu\"", "gelu")]
    [InlineData("\"vocab_size\":10", "\"vocab_size\":-10", "\"vocab_size\" is -10")]
    public void Bad_configs_are_rejected_naming_the_value(string find, string replace, string message)
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), LlamaConfig.Replace(find, replace, StringComparison.Ordinal));
        var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(dir.File("config.json")));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void A_config_that_is_not_an_object_is_rejected()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("config.json"), "[1, 2]");
        var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(dir.File("config.json")));
        Assert.Contains("not a JSON object", e.Message);
        File.WriteAllText(dir.File("config.json"), "{\"hidden_size\":");
        e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.ReadConfig(dir.File("config.json")));
        Assert.Contains("not valid JSON", e.Message);
    }

    [Fact]
    public void Missing_wrong_and_unexpected_tensors_are_rejected()
    {
        var shapes = Shapes(16, 24, 2, 16, 8, 10, bias: false, qkNorm: false, 4, lmHead: true);
        using (var dir = new TempDirectory())
        {
            var s = new Dictionary<string, long[]>(shapes);
            s.Remove("lm_head.weight");
            WriteCheckpoint(dir.Path, LlamaConfig, s);
            var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)));
            Assert.Contains("'lm_head.weight' is missing", e.Message);
        }
        using (var dir = new TempDirectory())
        {
            var s = new Dictionary<string, long[]>(shapes) { ["model.layers.1.mlp.up_proj.weight"] = [24, 15] };
            WriteCheckpoint(dir.Path, LlamaConfig, s);
            var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)));
            Assert.Contains("[24, 15]", e.Message);
        }
        using (var dir = new TempDirectory())
        {
            var s = new Dictionary<string, long[]>(shapes) { ["model.layers.0.self_attn.q_proj.bias"] = [16] };
            WriteCheckpoint(dir.Path, LlamaConfig, s);
            var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)));
            Assert.Contains("not expected", e.Message);
        }
        using (var dir = new TempDirectory())
        {
            WriteCheckpoint(dir.Path, LlamaConfig, shapes, SafetensorsDType.I32);
            var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)));
            Assert.Contains("I32", e.Message);
        }
        using (var dir = new TempDirectory())
        {
            File.WriteAllText(dir.File("config.json"), LlamaConfig);
            File.WriteAllText(dir.File("pytorch_model.bin"), "x");
            var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)));
            Assert.Contains("pytorch_model.bin", e.Message);
        }
    }

    [Fact]
    public void Index_entries_must_name_files_inside_the_directory_that_hold_the_tensor()
    {
        using var dir = new TempDirectory();
        WriteCheckpoint(dir.Path, LlamaConfig, Shapes(16, 24, 2, 16, 8, 10, false, false, 4, true), shards: 2);
        string index = dir.File("model.safetensors.index.json");
        string text = File.ReadAllText(index);
        using (HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)))
        {
        }
        string wrong = text.Contains("\"model.norm.weight\":\"model-00001", StringComparison.Ordinal)
            ? text.Replace("\"model.norm.weight\":\"model-00001", "\"model.norm.weight\":\"model-00002", StringComparison.Ordinal)
            : text.Replace("\"model.norm.weight\":\"model-00002", "\"model.norm.weight\":\"model-00001", StringComparison.Ordinal);
        File.WriteAllText(index, wrong);
        var e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)));
        Assert.Contains("does not hold it", e.Message);
        File.WriteAllText(index, text.Replace("\"model.norm.weight\":\"model-0000", "\"model.norm.weight\":\"../model-0000", StringComparison.Ordinal));
        e = Assert.Throws<ModelFormatException>(() => HuggingFaceReader.Load(dir.Path, FormatTestHelpers.InlineVocabulary(10)));
        Assert.Contains("not a file in the checkpoint directory", e.Message);
    }
}
