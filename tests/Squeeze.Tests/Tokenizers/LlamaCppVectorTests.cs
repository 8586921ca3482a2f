using Squeeze.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;

namespace Squeeze.Tests.Tokenizers;

/// <summary>llama.cpp's tokenizer test vectors (tests/test-tokenizer-0), every one exact.</summary>
public class LlamaCppVectorTests
{
    private static void AssertVectors(Tokenizer tokenizer, string vocabName)
    {
        var failures = new List<string>();
        foreach (var (text, expected) in TokenizerTestData.Vectors(vocabName))
        {
            int[] actual = tokenizer.Encode(text, addBos: false);
            if (!actual.SequenceEqual(expected))
                failures.Add($"\"{text.ReplaceLineEndings("\\n")}\": {TokenizerTestData.Diff(expected, actual)}");
        }
        Assert.True(failures.Count == 0, string.Join('\n', failures));
    }

    /// <summary>stories15M's vocabulary is Llama 2's, the one ggml-vocab-llama-spm.gguf holds.</summary>
    [Fact]
    public void LlamaSpmVectors_MatchWithStories15MTokenizerModel()
        => AssertVectors(TokenizerTestData.Stories15MModelTokenizer.Value, "llama-spm");

    [Fact]
    public void LlamaSpmVectors_MatchWithStories15MTokenizerBin()
        => AssertVectors(Tokenizer.Create(TokenizerTestData.Stories15MBin.Value), "llama-spm");

    [Fact]
    public void Gpt2Vectors_MatchWithTokenizerJsonFromVocabAndMerges()
        => AssertVectors(TokenizerTestData.Gpt2.Value, "gpt-2");

    [Theory]
    [InlineData("llama-spm")]
    [InlineData("gpt-2")]
    public void Vectors_MatchWithGgufVocabulary(string vocabName)
    {
        Vocabulary vocabulary = GgufVocabulary.Read(SharedData.Path("tokenizers", "llamacpp-vocab", $"ggml-vocab-{vocabName}.gguf"));
        AssertVectors(Tokenizer.Create(vocabulary), vocabName);
    }

    /// <summary>The GGUF llama-spm vocabulary and stories15M's tokenizer.model are the same Llama 2 vocabulary.</summary>
    [Fact]
    public void LlamaSpmGguf_HasStories15MPiecesScoresAndTypes()
    {
        Vocabulary gguf = GgufVocabulary.Read(SharedData.Path("tokenizers", "llamacpp-vocab", "ggml-vocab-llama-spm.gguf"));
        Vocabulary model = TokenizerTestData.Stories15MModel.Value;
        Assert.Equal(model.Tokens, gguf.Tokens);
        Assert.Equal(model.Scores, gguf.Scores);
        Assert.Equal(model.Types, gguf.Types);
    }
}
