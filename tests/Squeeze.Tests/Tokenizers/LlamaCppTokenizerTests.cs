using Squeeze.Formats;
using Squeeze.Quantization;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;
using Xunit.Abstractions;

namespace Squeeze.Tests.Tokenizers;

/// <summary>stories15M (the Llama-2 SentencePiece vocabulary) converted by Squeeze to GGUF F32 once for the class.</summary>
public sealed class Stories15MGguf : IDisposable
{
    private readonly TempDirectory directory = new();

    public Stories15MGguf()
    {
        Path = directory.File("stories15M-F32.gguf");
        using var model = ModelLoader.Load(SharedData.Stories15M, SharedData.Stories15MTokenizerModel);
        GgufQuantizer.Write(model, QuantizationMix.Plan(model, QuantizationMix.F32, [], pure: false), Path, importance: null, threads: 2);
    }

    public string Path { get; }

    public void Dispose() => directory.Dispose();
}

/// <summary>Squeeze's token ids equal llama.cpp's, both reading the same GGUF file Squeeze wrote.</summary>
public class LlamaCppTokenizerTests(Stories15MGguf stories15M, ITestOutputHelper output) : IClassFixture<Stories15MGguf>
{
    /// <summary>Characters of each corpus compared (its beginning), to keep the time down.</summary>
    internal const int CorpusChars = 200_000;

    [Fact]
    public void Llama2_ids_equal_llama_cpp_on_every_corpus_and_the_test_vectors()
        => AssertSameIds(stories15M.Path, output);

    /// <summary>Special-token text parsed (and not): "&lt;s&gt;" and "&lt;/s&gt;" inside the text.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Llama2_special_token_text_gives_llama_cpp_ids(bool parseSpecial)
    {
        using var llama = LlamaCpp.Load(stories15M.Path, vocabOnly: true);
        using var model = ModelLoader.Load(stories15M.Path);
        const string text = "<s>Once upon a time</s> there was<s> a cat.</s>\n</s>";
        foreach (bool bos in new[] { false, true })
            Assert.Equal(llama.Tokenize(text, bos, parseSpecial), model.Tokenizer.Encode(text, bos, parseSpecial));
    }

    /// <summary>
    /// For the GGUF file at <paramref name="path"/>: Squeeze's tokenizer of the file's vocabulary and llama.cpp's give the
    /// same ids, BOS as the file asks, for the first <see cref="CorpusChars"/> characters of every corpus in shared/corpora,
    /// and for every text of llama.cpp's tokenizer test vectors (llama-spm and gpt-2 .inp files) without BOS.
    /// </summary>
    internal static void AssertSameIds(string path, ITestOutputHelper output)
    {
        using var llama = LlamaCpp.Load(path, vocabOnly: true);
        using var model = ModelLoader.Load(path);
        Tokenizer tokenizer = model.Tokenizer;
        var failures = new List<string>();
        long tokens = 0;
        foreach (string corpus in Directory.GetFiles(SharedData.Path("corpora"), "*.txt").Order(StringComparer.Ordinal))
        {
            string text = File.ReadAllText(corpus);
            text = text[..Math.Min(text.Length, CorpusChars)];
            if (char.IsHighSurrogate(text[^1]))
                text = text[..^1];
            int[] expected = llama.Tokenize(text, addSpecial: true, parseSpecial: false);
            int[] actual = tokenizer.Encode(text, addBos: model.Vocabulary.AddBos);
            tokens += expected.Length;
            if (!actual.SequenceEqual(expected))
                failures.Add($"{Path.GetFileName(corpus)}: {TokenizerTestData.Diff(expected, actual)}");
        }
        int vectors = 0;
        foreach (string name in new[] { "llama-spm", "gpt-2" })
        {
            foreach (var (text, _) in TokenizerTestData.Vectors(name))
            {
                int[] expected = llama.Tokenize(text, addSpecial: false, parseSpecial: false);
                int[] actual = tokenizer.Encode(text, addBos: false);
                vectors++;
                if (!actual.SequenceEqual(expected))
                    failures.Add($"\"{text.ReplaceLineEndings("\\n")}\": {TokenizerTestData.Diff(expected, actual)}");
            }
        }
        output.WriteLine($"{Path.GetFileName(path)}: {tokens:N0} corpus tokens and {vectors} test vectors compared, {failures.Count} differ");
        Assert.True(failures.Count == 0, string.Join('\n', failures));
    }
}
