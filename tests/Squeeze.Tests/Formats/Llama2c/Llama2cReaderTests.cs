using System.Buffers.Binary;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats.Llama2c;

public class Llama2cReaderTests
{
    [Fact]
    public void Stories15M_loads_with_the_published_hyperparameters()
    {
        using var model = Llama2cReader.Load(SharedData.Stories15M);
        var c = model.Config;
        Assert.Equal(("llama", 288, 768, 6, 6, 6, 48, 32000, 256), (c.Architecture, c.Dim, c.HiddenDim, c.LayerCount, c.HeadCount, c.KvHeadCount, c.HeadDim, c.VocabSize, c.ContextLength));
        Assert.True(c.TiedEmbeddings);
        Assert.Equal(RopeStyle.Interleaved, c.RopeStyle);
        Assert.Equal(10000f, c.RopeTheta);
        Assert.Equal(1e-5f, c.RmsNormEps);
        Assert.Equal(15_191_712, model.ParameterCount); // "15.19M": every float but the 2 × 256 × 24 freq_cis values
        Assert.Equal(1 + 9 * 6 + 1, model.Tensors.Count);
        Assert.False(model.TryGetTensor(TensorNames.Output, out _));
        Assert.Equal(32000, model.Vocabulary.Count);
        Assert.All(model.Tensors, t => Assert.Equal(GgmlType.F32, t.Type));
    }

    [Fact]
    public void Stories260K_finds_tok512_and_has_grouped_query_attention()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var c = model.Config;
        Assert.Equal((64, 172, 5, 8, 4, 8, 512, 512), (c.Dim, c.HiddenDim, c.LayerCount, c.HeadCount, c.KvHeadCount, c.HeadDim, c.VocabSize, c.ContextLength));
        Assert.Equal(32, c.KvDim);
        Assert.Equal(new long[] { 32, 64 }, model[TensorNames.Key(4)].Shape);
        Assert.Equal(new long[] { 172, 64 }, model[TensorNames.Gate(0)].Shape);
        Assert.Equal(new long[] { 64, 172 }, model[TensorNames.Down(0)].Shape);
        Assert.Equal(512, model.Vocabulary.Count);
    }

    [Fact]
    public unsafe void Tensors_view_the_mapped_file_at_the_offsets_run_c_walks()
    {
        string path = SharedData.Stories260K;
        using var model = Llama2cReader.Load(path);
        byte[] file = File.ReadAllBytes(path);
        const int dim = 64, hidden = 172, layers = 5, kvDim = 32, vocab = 512;
        // Offsets of a few tensors, counted independently (floats after the header).
        long embd = 0, rmsAtt = embd + vocab * dim, wq = rmsAtt + layers * dim, wk = wq + layers * dim * dim;
        long wv = wk + layers * kvDim * dim, wo = wv + layers * kvDim * dim, rmsFfn = wo + layers * dim * dim;
        long w1 = rmsFfn + layers * dim, w2 = w1 + layers * hidden * dim, w3 = w2 + layers * dim * hidden, rmsFinal = w3 + layers * hidden * dim;
        var expected = new (string Name, long Float)[]
        {
            (TensorNames.TokenEmbedding, embd), (TensorNames.AttentionNorm(2), rmsAtt + 2 * dim), (TensorNames.Query(1), wq + dim * dim),
            (TensorNames.Key(3), wk + 3 * kvDim * dim), (TensorNames.Value(4), wv + 4 * kvDim * dim), (TensorNames.AttentionOutput(0), wo),
            (TensorNames.FeedForwardNorm(1), rmsFfn + dim), (TensorNames.Gate(2), w1 + 2 * hidden * dim), (TensorNames.Down(3), w2 + 3 * dim * hidden),
            (TensorNames.Up(4), w3 + 4 * hidden * dim), (TensorNames.OutputNorm, rmsFinal),
        };
        foreach (var (name, floatOffset) in expected)
        {
            var t = model[name];
            Assert.Equal(28 + 4 * floatOffset, t.Offset);
            Assert.Equal(path, t.Buffer.Origin);
            Assert.True(new ReadOnlySpan<byte>(t.Data, (int)t.ByteLength).SequenceEqual(file.AsSpan((int)t.Offset, (int)t.ByteLength)), name);
        }
        // After rms_final come only the two freq_cis tables [seq, head_size / 2].
        Assert.Equal(file.Length, model[TensorNames.OutputNorm].Offset + 4 * dim + 2 * 512 * 4 * 4);
    }

    [Fact]
    public void Negative_vocab_size_means_an_unshared_classifier_at_the_end()
    {
        using var dir = new TempDirectory();
        string path = dir.File("untied.bin");
        int[] header = [8, 16, 2, 2, 1, -10, 4];
        long floats = FormatTestHelpers.Llama2cFloats(8, 16, 2, 2, 1, -10, 4);
        FormatTestHelpers.WriteLlama2c(path, header, floats);
        using var model = Llama2cReader.Load(path, FormatTestHelpers.InlineVocabulary(10));
        Assert.False(model.Config.TiedEmbeddings);
        Assert.Equal(10, model.Config.VocabSize);
        var output = model[TensorNames.Output];
        Assert.Equal(new long[] { 10, 8 }, output.Shape);
        // Values are float indices: the classifier is the last 10 × 8 floats of the file.
        float first = BinaryPrimitives.ReadSingleLittleEndian(output.Row(0));
        Assert.Equal(floats - 80, (long)first);
        Assert.Equal(new long[] { 4, 8 }, model[TensorNames.Key(1)].Shape);
    }

    [Theory]
    [InlineData(-4, "4 bytes missing")]
    [InlineData(-1000, "1000 bytes missing")]
    [InlineData(12, "12 unexpected bytes")]
    public void File_size_must_match_the_header_exactly(int delta, string message)
    {
        using var dir = new TempDirectory();
        string path = dir.File("model.bin");
        byte[] original = File.ReadAllBytes(SharedData.Stories260K);
        var bytes = new byte[original.Length + delta];
        original.AsSpan(0, Math.Min(original.Length, bytes.Length)).CopyTo(bytes);
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ModelFormatException>(() => Llama2cReader.Load(path, FormatTestHelpers.InlineVocabulary(512)));
        Assert.Contains(message, e.Message);
        Assert.Equal(path, e.Path);
    }

    [Theory]
    [InlineData(new[] { 64, 172, 5, 7, 7, 512, 512 }, "n_heads 7 does not divide dim 64")]
    [InlineData(new[] { 64, 172, 5, 8, 3, 512, 512 }, "n_kv_heads 3 does not divide n_heads 8")]
    [InlineData(new[] { -64, 172, 5, 8, 4, 512, 512 }, "dim -64")]
    [InlineData(new[] { 64, 0, 5, 8, 4, 512, 512 }, "hidden_dim 0")]
    [InlineData(new[] { 64, 172, int.MaxValue, 8, 4, 512, 512 }, "n_layers 2147483647")]
    [InlineData(new[] { 64, 172, 5, 8, 16, 512, 512 }, "n_kv_heads 16")]
    [InlineData(new[] { 64, 172, 5, 8, 4, int.MinValue, 512 }, "vocab_size -2147483648")]
    [InlineData(new[] { 64, 172, 5, 8, 4, 512, 0 }, "seq_len 0")]
    [InlineData(new[] { 64, 172, 5, 64, 4, 512, 512 }, "head size 1 is odd")]
    [InlineData(new[] { 0x616b3432, 1, 5, 8, 4, 512, 512 }, "version 1 export")]
    public void Bad_headers_are_rejected_with_the_problem_named(int[] header, string message)
    {
        using var dir = new TempDirectory();
        string path = dir.File("bad.bin");
        FormatTestHelpers.WriteLlama2c(path, header, 100);
        var e = Assert.Throws<ModelFormatException>(() => Llama2cReader.Load(path, FormatTestHelpers.InlineVocabulary(3)));
        Assert.Contains(message, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Shorter_than_the_header_is_rejected()
    {
        using var dir = new TempDirectory();
        string path = dir.File("short.bin");
        File.WriteAllBytes(path, new byte[27]);
        var e = Assert.Throws<ModelFormatException>(() => Llama2cReader.Load(path));
        Assert.Contains("27 bytes", e.Message);
    }

    [Fact]
    public void Missing_tokenizer_names_every_place_looked()
    {
        using var dir = new TempDirectory();
        string path = dir.File("model.bin");
        FormatTestHelpers.WriteLlama2c(path, [8, 16, 1, 2, 2, 10, 4], FormatTestHelpers.Llama2cFloats(8, 16, 1, 2, 2, 10, 4));
        var e = Assert.Throws<ModelFormatException>(() => Llama2cReader.Load(path));
        Assert.Contains(dir.File("tokenizer.bin"), e.Message);
        Assert.Contains(dir.File("tok10.bin"), e.Message);
        Assert.Contains(dir.File("tokenizer.model"), e.Message);
    }

    [Fact]
    public void An_explicit_SentencePiece_tokenizer_is_used()
    {
        using var model = Llama2cReader.Load(SharedData.Stories15M, SharedData.Stories15MTokenizerModel);
        using var fromBin = Llama2cReader.Load(SharedData.Stories15M);
        Assert.Equal(32000, model.Vocabulary.Count);
        Assert.Equal(fromBin.Vocabulary.Tokens[1000..1100], model.Vocabulary.Tokens[1000..1100]);
    }

    [Fact]
    public void A_vocabulary_larger_than_the_embedding_is_rejected()
    {
        var e = Assert.Throws<ModelFormatException>(() => Llama2cReader.Load(SharedData.Stories260K, FormatTestHelpers.InlineVocabulary(513)));
        Assert.Contains("513 tokens", e.Message);
    }

    [Fact]
    public void Missing_checkpoint_is_file_not_found()
        => Assert.Throws<FileNotFoundException>(() => Llama2cReader.Load("/nonexistent/model.bin"));
}
