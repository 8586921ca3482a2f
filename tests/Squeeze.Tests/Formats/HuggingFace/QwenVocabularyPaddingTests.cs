using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tests.Tokenizers;
using Squeeze.Tokenizers;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.HuggingFace;

/// <summary>
/// A real Qwen 2.5 / Qwen3 checkpoint has 151,936 embedding rows and a tokenizer of 151,669 tokens. llama.cpp's
/// converter pads the GGUF token list to the rows with unused "[PAD{id}]" tokens, and llama.cpp refuses a file whose
/// token list is shorter than token_embd.weight; Squeeze pads as it does. A tiny random Qwen3 checkpoint (width 64,
/// the real 151,936 rows, q/k norms, the real Qwen3 tokenizer) goes through Squeeze to GGUF F32 and into llama.cpp.
/// </summary>
public class QwenVocabularyPaddingTests(ITestOutputHelper output)
{
    private const int Rows = 151936;
    private const int Tokens = 151669;

    /// <summary>A Qwen3 checkpoint at width 64 with the real tokenizer and Qwen3's 151,936 embedding rows.</summary>
    public static RandomCheckpoint Qwen3 => new()
    {
        Architecture = "Qwen3ForCausalLM",
        ModelType = "qwen3",
        VocabSize = Rows,
        TokenizerDirectory = SharedData.Path("tokenizers", "hf", "qwen3"),
        HeadDim = 16,
        QkNorm = true,
        TieWordEmbeddings = true,
        RopeTheta = 1000000,
        RmsNormEps = 1e-6,
        MaxPositions = 40960,
    };

    [Fact]
    public void Qwen3_with_more_rows_than_tokens_converts_to_a_GGUF_llama_cpp_loads_and_agrees_with()
    {
        using var dir = new TempDirectory();
        string hf = Qwen3.Write(dir.File("qwen3-hf"));

        string gguf = RopeScalingTests.ConvertToF32(hf, dir.File("qwen3-F32.gguf"));
        using (var model = ModelLoader.Load(hf))
        {
            var v = model.Vocabulary;
            Assert.Equal(Rows, v.Count);
            Assert.Equal(("<|im_end|>", TokenType.Control), (v.Tokens[Tokens - 26 + 2], v.Types[Tokens - 26 + 2]));
            Assert.Equal(("[PAD151669]", TokenType.Unused), (v.Tokens[Tokens], v.Types[Tokens]));
            Assert.Equal(("[PAD151935]", TokenType.Unused), (v.Tokens[Rows - 1], v.Types[Rows - 1]));
        }
        using (var back = ModelLoader.Load(gguf))
            Assert.Equal(Rows, back.Vocabulary.Count);
        using (var llama = LlamaCpp.Load(gguf, vocabOnly: true))
            Assert.Equal(Rows, llama.VocabSize);

        LlamaCppAgreementTests.AssertAgreement(gguf, LlamaCppAgreementTests.Tokens(gguf), floats: true, output);
        LlamaCppTokenizerTests.AssertSameIds(gguf, output);
    }
}
