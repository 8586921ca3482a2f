using System.Text.Json;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Architectures;

/// <summary>Gemma 3 (text, as <see cref="Gemma3Checkpoint"/>) whose tokenizer is a tokenizer.json alone (Llama 3's real
/// one: 128,000 vocab entries and 256 added tokens) over 64 embedding rows more than its tokens.</summary>
public sealed class Gemma3TokenizerJsonCheckpoint() : ArchitectureCheckpoint(Random)
{
    public const int Rows = 128_320;

    public static RandomCheckpoint Random => Gemma3Checkpoint.Random with
    {
        VocabSize = Rows,
        TokenizerDirectory = SharedData.Path("tokenizers", "hf", "llama3"),
    };

    /// <summary>What llama.cpp's converter counts as the tokenizer's tokens: tokenizer.json's vocab entries plus its added_tokens.</summary>
    public static int ConverterCount(string directory)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(directory, "tokenizer.json")));
        return doc.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject().Count() + doc.RootElement.GetProperty("added_tokens").GetArrayLength();
    }
}

/// <summary>
/// llama.cpp's converter keeps only the first (tokenizer.json's vocab + added_tokens) rows of a Gemma 3 embedding whose
/// tokenizer is tokenizer.json alone; Squeeze reads such a checkpoint so (views of those rows, a token for each), so its
/// GGUF has the converter's token_embd and a token list of the same length, which llama.cpp loads and agrees with.
/// </summary>
public class Gemma3TokenizerJsonTests(Gemma3TokenizerJsonCheckpoint gemma, ITestOutputHelper output) : IClassFixture<Gemma3TokenizerJsonCheckpoint>
{
    [Fact]
    public void Embedding_keeps_the_rows_llama_cpp_s_converter_keeps()
    {
        int count = Gemma3TokenizerJsonCheckpoint.ConverterCount(gemma.HuggingFace);
        Assert.Equal(128_256, count);
        using (var model = ModelLoader.Load(gemma.HuggingFace))
        {
            Assert.Equal(count, model.Config.VocabSize);
            Assert.Equal(count, model.Vocabulary.Count);
            Assert.Equal(new long[] { count, 64 }, model[TensorNames.TokenEmbedding].Shape);
        }
        string gguf = gemma.Gguf("F32");
        using (var file = GgufFile.Open(gguf))
        {
            Assert.True(file.TryGetTensor(TensorNames.TokenEmbedding, out var embedding));
            Assert.Equal(new long[] { count, 64 }, embedding.Shape);
            Assert.Equal(count, file.GetInteger("gemma3.vocab_size"));
        }
        using (var llama = LlamaCpp.Load(gguf, vocabOnly: true))
            Assert.Equal(count, llama.VocabSize);
        GemmaChecks.AssertSameAsCheckpoint(gemma, gguf);
    }

    [Theory]
    [InlineData("F32")]
    [InlineData("Q4_K_M")]
    public void Gguf_files_load_in_llama_cpp_and_run_alike(string mix) => gemma.AssertLlamaCppAgrees(mix, output);

    /// <summary>A tokenizer.json with more tokens than embedding rows (which the converter's assertion refuses) is one line naming the directory.</summary>
    [Fact]
    public void More_tokens_than_rows_is_one_line()
    {
        using var dir = new TempDirectory();
        string hf = (Gemma3TokenizerJsonCheckpoint.Random with { VocabSize = 128_000 }).Write(dir.File("hf"));
        ArchitectureBadInputTests.AssertOneLine(Assert.Throws<ModelFormatException>(() => ModelLoader.Load(hf)), hf,
            "the tokenizer has 128256 tokens but config.json's vocab_size is 128000");
    }
}
