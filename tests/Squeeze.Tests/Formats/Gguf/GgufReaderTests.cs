using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;

namespace Squeeze.Tests.Formats.Gguf;

/// <summary>The reader on the real files in shared/golden and shared/tokenizers/llamacpp-vocab.</summary>
public class GgufReaderTests
{
    [Fact]
    public void Stories15M_f32_loads_with_its_hyperparameters()
    {
        using var model = GgufModelReader.Load(SharedData.Golden("stories15M-f32.gguf"));
        var c = model.Config;
        Assert.Equal("llama", c.Architecture);
        Assert.Equal(288, c.Dim);
        Assert.Equal(768, c.HiddenDim);
        Assert.Equal(6, c.LayerCount);
        Assert.Equal(6, c.HeadCount);
        Assert.Equal(6, c.KvHeadCount);
        Assert.Equal(48, c.HeadDim);
        Assert.Equal(32000, c.VocabSize);
        Assert.Equal(128, c.ContextLength); // what the file says (see golden/README.md)
        Assert.Equal(RopeStyle.Interleaved, c.RopeStyle);
        Assert.True(c.TiedEmbeddings);
        Assert.False(c.AttentionBias);
        Assert.False(c.QkNorm);
        Assert.Equal(1e-5f, c.RmsNormEps);
        Assert.Equal(10000f, c.RopeTheta);

        var embd = model[TensorNames.TokenEmbedding];
        Assert.Equal(GgmlType.F32, embd.Type);
        Assert.Equal([32000L, 288L], embd.Shape);
        Assert.Equal([768L, 288L], model[TensorNames.Gate(0)].Shape);
        Assert.Equal([288L, 768L], model[TensorNames.Down(0)].Shape);
        Assert.Equal(6 * 9 + 2, model.Tensors.Count);
        Assert.InRange(model.ParameterCount, 15_180_000, 15_200_000); // 15.19M (golden/README.md)

        var v = model.Vocabulary;
        Assert.Equal(TokenizerKind.SentencePiece, v.Kind);
        Assert.Equal(32000, v.Count);
        Assert.Equal(1, v.BosId);
        Assert.Equal(2, v.EosId);
        Assert.Equal(0, v.UnknownId);
        Assert.True(v.AddBos);
        Assert.Equal("<s>", v.Tokens[1]);
        Assert.Equal(TokenType.Byte, v.Types[3]); // <0x00>
        Assert.Equal("<0x00>", v.Tokens[3]);
    }

    [Fact]
    public void Stories15M_f32_tensor_bytes_are_the_floats_in_the_file()
    {
        string path = SharedData.Golden("stories15M-f32.gguf");
        using var gguf = GgufFile.Open(path);
        Assert.Equal(3u, gguf.Version);
        Assert.Equal(32, gguf.Alignment);
        Assert.Equal(0, gguf.DataOffset % 32);
        var norm = gguf.Tensors.Single(t => t.Name == TensorNames.OutputNorm);
        // Independent read: the same bytes through a FileStream at DataOffset + info offset.
        var info = gguf.TensorInfos.Single(t => t.Name == TensorNames.OutputNorm);
        var expected = new byte[288 * 4];
        using (var fs = File.OpenRead(path))
        {
            fs.Position = gguf.DataOffset + info.Offset;
            fs.ReadExactly(expected);
        }
        Assert.Equal(expected, norm.Row(0).ToArray());
        var values = new float[288];
        Dequantize.Tensor(norm, values);
        Assert.All(values, x => Assert.True(float.IsFinite(x) && x != 0));
    }

    [Fact]
    public void Stories260K_has_grouped_query_attention()
    {
        using var model = GgufModelReader.Load(SharedData.Golden("stories260K-f32.gguf"));
        var c = model.Config;
        Assert.Equal(8, c.HeadCount);
        Assert.Equal(4, c.KvHeadCount);
        Assert.Equal(512, c.VocabSize);
        Assert.Equal(c.Dim / 8, c.HeadDim);
        Assert.Equal([(long)c.KvDim, c.Dim], model[TensorNames.Key(0)].Shape);
        Assert.Equal(512, model.Vocabulary.Count);
    }

    [Theory]
    [InlineData("stories15M-Q8_0.gguf", GgmlType.Q8_0)]
    [InlineData("stories15M-Q4_0-imatrix.gguf", GgmlType.Q4_0)]
    [InlineData("stories15M-Q4_K_M-imatrix.gguf", GgmlType.Q4_K)]
    public void Quantized_stories15M_loads_and_dequantizes(string file, GgmlType expectedType)
    {
        using var model = GgufModelReader.Load(SharedData.Golden(file));
        Assert.Equal(288, model.Config.Dim);
        Assert.Contains(model.Tensors, t => t.Type == expectedType);
        Assert.Equal(new FileInfo(SharedData.Golden(file)).Length, model[TensorNames.TokenEmbedding].Buffer.Length);
        // Every tensor decodes to finite values of a sane magnitude.
        foreach (var t in model.Tensors)
        {
            var values = new float[t.ElementCount];
            Dequantize.Tensor(t, values);
            int bad = Array.FindIndex(values, x => !float.IsFinite(x) || MathF.Abs(x) >= 100);
            Assert.True(bad < 0, $"{t.Name}[{bad}] = {(bad < 0 ? 0 : values[bad])}");
        }
    }

    [Fact]
    public void Quantized_embedding_is_close_to_the_f32_one()
    {
        using var f32 = GgufModelReader.Load(SharedData.Golden("stories15M-f32.gguf"));
        using var q8 = GgufModelReader.Load(SharedData.Golden("stories15M-Q8_0.gguf"));
        var a = new float[288];
        var b = new float[288];
        Dequantize.Row(GgmlType.F32, f32[TensorNames.TokenEmbedding].Row(1000), a);
        Dequantize.Row(q8[TensorNames.TokenEmbedding].Type, q8[TensorNames.TokenEmbedding].Row(1000), b);
        float max = a.Max(MathF.Abs);
        for (int i = 0; i < a.Length; i++)
            Assert.True(MathF.Abs(a[i] - b[i]) <= max / 127f, $"[{i}] {a[i]} vs {b[i]}");
    }

    [Fact]
    public void Llama_spm_vocabulary_only_file()
    {
        using var gguf = GgufFile.Open(SharedData.Path("tokenizers", "llamacpp-vocab", "ggml-vocab-llama-spm.gguf"));
        Assert.Empty(gguf.Tensors);
        var v = GgufVocabulary.Read(gguf);
        Assert.Equal(TokenizerKind.SentencePiece, v.Kind);
        Assert.Equal(32000, v.Count);
        Assert.Equal(1, v.BosId);
        Assert.Equal(2, v.EosId);
        Assert.True(v.AddBos);
        Assert.True(v.AddSpacePrefix);
        Assert.Equal("▁the", v.Tokens[278]);
    }

    [Theory]
    [InlineData("ggml-vocab-gpt-2.gguf")]
    [InlineData("ggml-vocab-gpt-neox.gguf")]
    public void Bpe_vocabulary_only_files(string name)
    {
        var v = GgufVocabulary.Read(SharedData.Path("tokenizers", "llamacpp-vocab", name));
        Assert.Equal(TokenizerKind.BytePairEncoding, v.Kind);
        Assert.NotNull(v.Merges);
        Assert.NotEmpty(v.Merges);
        Assert.False(v.AddSpacePrefix);
        Assert.False(v.AddBos);
        Assert.Contains(' ', v.Merges[0]);
        Assert.InRange(v.EosId, 0, v.Count - 1);
    }

    [Fact]
    public void Bert_vocabulary_is_a_clear_error()
    {
        var e = Assert.Throws<ModelFormatException>(() => GgufVocabulary.Read(SharedData.Path("tokenizers", "llamacpp-vocab", "ggml-vocab-bert-bge.gguf")));
        Assert.Contains("bert", e.Message);
        Assert.Contains("ggml-vocab-bert-bge.gguf", e.Message);
    }

    [Fact]
    public void Metadata_keeps_file_order_and_exact_types()
    {
        using var gguf = GgufFile.Open(SharedData.Golden("stories260K-f32.gguf"));
        Assert.Equal("general.architecture", gguf.Metadata.Keys.First());
        Assert.Equal(gguf.Metadata.Keys, gguf.Values.Keys);
        Assert.IsType<string[]>(gguf.Metadata["tokenizer.ggml.tokens"]);
        Assert.IsType<float[]>(gguf.Metadata["tokenizer.ggml.scores"]);
        Assert.IsType<int[]>(gguf.Metadata["tokenizer.ggml.token_type"]);
        Assert.Equal(GgufValueType.Array, gguf.Values["tokenizer.ggml.tokens"].Type);
        Assert.Equal(GgufValueType.String, gguf.Values["tokenizer.ggml.tokens"].ElementType);
        Assert.Equal(GgufValueType.UInt32, gguf.Values["llama.block_count"].Type);
        Assert.IsType<uint>(gguf.Metadata["llama.block_count"]);
    }
}
