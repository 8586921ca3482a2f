using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats;

public class ModelLoaderTests
{
    [Fact]
    public unsafe void Detects_llama2c_Hugging_Face_and_GGUF_and_they_agree()
    {
        using var dir = new TempDirectory();
        string hf = dir.File("hf");
        using var llama2c = ModelLoader.Load(SharedData.Stories260K);
        Assert.Equal(SharedData.Stories260K, llama2c.Source);
        HuggingFaceWriter.Write(llama2c, hf);
        using var fromDirectory = ModelLoader.Load(hf);
        using var fromSafetensors = ModelLoader.Load(Path.Combine(hf, "model.safetensors"));
        using var gguf = ModelLoader.Load(SharedData.Golden("stories260K-f32.gguf"));
        Assert.Equal(llama2c.Config, fromDirectory.Config);
        Assert.Equal(hf, fromSafetensors.Source.TrimEnd('/'));
        var (a, b) = (llama2c.Config, gguf.Config);
        Assert.Equal((a.Architecture, a.Dim, a.HiddenDim, a.LayerCount, a.HeadCount, a.KvHeadCount, a.VocabSize, a.RopeStyle), (b.Architecture, b.Dim, b.HiddenDim, b.LayerCount, b.HeadCount, b.KvHeadCount, b.VocabSize, b.RopeStyle));
        // llama.cpp's llama2.c converter keeps the interleaved order: the f32 GGUF's weights equal the llama2.c ones.
        foreach (string name in new[] { TensorNames.Query(1), TensorNames.Key(3), TensorNames.Down(4), TensorNames.TokenEmbedding })
        {
            var (t, u) = (llama2c[name], gguf[name]);
            Assert.Equal(t.Shape, u.Shape);
            Assert.True(new ReadOnlySpan<byte>(t.Data, (int)t.ByteLength).SequenceEqual(new ReadOnlySpan<byte>(u.Data, (int)u.ByteLength)), name);
        }
    }

    [Fact]
    public void Explicit_tokenizer_is_passed_through()
    {
        using var model = ModelLoader.Load(SharedData.Stories15M, SharedData.Stories15MTokenizerModel);
        Assert.Equal(32000, model.Vocabulary.Count);
        Assert.Throws<ArgumentException>(() => ModelLoader.Load(SharedData.Golden("stories260K-f32.gguf"), SharedData.Stories260KTokenizer));
    }

    [Fact]
    public void Missing_paths_and_unknown_files_are_clear_errors()
    {
        Assert.Throws<FileNotFoundException>(() => ModelLoader.Load("/nonexistent/model.bin"));
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("notes.txt"), "this is not a model at all, just text");
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.File("notes.txt")));
        Assert.Contains("not a recognized model", e.Message);
        Assert.Throws<ModelFormatException>(() => ModelLoader.Load(dir.Path)); // a directory without config.json
    }

    [Fact]
    public void Llama2c_header_can_be_read_alone()
    {
        var h = Llama2cReader.ReadHeader(SharedData.Stories15M);
        Assert.Equal(new Llama2cHeader(288, 768, 6, 6, 6, 32000, 256), h);
        Assert.True(h.SharedClassifier);
    }
}
