using System.Text.Json;
using Squeeze.Formats.Gguf;
using Squeeze.Formats.HuggingFace;
using Squeeze.Tests.Formats.Llama2c;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tests.Tokenizers;
using Squeeze.Tokenizers;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.HuggingFace;

/// <summary>
/// The byte-level BPE tokenizer.json Squeeze writes (<see cref="TokenizerJsonWriter"/>, through
/// <see cref="HuggingFaceWriter.WriteTokenizer"/> as both model writers call it), from the real Llama 3 and Qwen3
/// tokenizers and GPT-2's: read back, it is the same vocabulary and gives the same ids on every corpus and on llama.cpp's
/// test vectors, with and without special-token parsing.
/// </summary>
public class TokenizerJsonWriterTests(ITestOutputHelper output)
{
    /// <summary>Characters of each corpus compared.</summary>
    private const int CorpusChars = 50_000;

    /// <summary>Texts that exercise the pre-tokenizers' edges: digit runs (Llama 3 groups three, Qwen one), whitespace
    /// runs and line breaks, contractions in both cases, letters outside the Basic Multilingual Plane, combining marks
    /// (Qwen's files normalize to NFC, Squeeze's tokenizer does not), emoji, special-token text.</summary>
    private static readonly string[] EdgeTexts =
    [
        "1234567890 12 123 1234 3.14159 1,000,000",
        "  two spaces\n\n\tthen a tab   \r\n  \n",
        "I'M sure it'S THEY'RE we'll you'd",
        "𝒜𝓁𝒾𝒸𝑒 naïve café Ünïcödé 日本語のテキスト 한국어 العربية",
        "e\u0301 a\u0308 combining marks",
        "emoji 😀🎉👍🏽 and 𝟘𝟙𝟚 digits",
        "<|begin_of_text|>Hello<|eot_id|> <|im_start|>user\nhi<|im_end|> <think>x</think> <|endoftext|>",
    ];

    public static TheoryData<string> Tokenizers => ["llama3", "qwen3", "gpt2"];

    private static string SourcePath(string name) => name == "gpt2"
        ? TokenizerTestData.Gpt2TokenizerJson(arrayMerges: false)
        : SharedData.Path("tokenizers", "hf", name, "tokenizer.json");

    [Theory]
    [MemberData(nameof(Tokenizers))]
    public void Real_tokenizer_round_trips_to_the_same_vocabulary_and_ids(string name)
    {
        var original = VocabularyReader.FromTokenizerJson(SourcePath(name));
        using var dir = new TempDirectory();
        Assert.Equal(["tokenizer.json", "tokenizer_config.json"], HuggingFaceWriter.WriteTokenizer(original, "source", dir.Path));
        var back = VocabularyReader.FromTokenizerJson(dir.File("tokenizer.json"));
        AssertSameVocabulary(original, back);
        AssertTransformersIds(dir.File("tokenizer.json"), back);
        AssertSameIds(Tokenizer.Create(original), Tokenizer.Create(back), name);
        output.WriteLine($"{name}: tokenizer.json {new FileInfo(SourcePath(name)).Length:N0} bytes, written {new FileInfo(dir.File("tokenizer.json")).Length:N0}");
    }

    /// <summary>A vocabulary from a GGUF file llama.cpp's converter wrote (tokens, types, merges, tokenizer.ggml.pre; GPT-NeoX's
    /// without a pre-tokenizer name, with user-defined whitespace tokens and an unknown token) round-trips too; on GPT-2's,
    /// the rewritten tokenizer gives llama.cpp's own ids for its test vectors (GPT-NeoX's vocabulary alone is compared: it
    /// has no token for some bytes, so Squeeze's tokenizer does not take it).</summary>
    [Theory]
    [InlineData("gpt-2")]
    [InlineData("gpt-neox")]
    public void Vocabulary_of_a_llama_cpp_gguf_round_trips(string name)
    {
        var original = GgufVocabulary.Read(SharedData.Path("tokenizers", "llamacpp-vocab", $"ggml-vocab-{name}.gguf"));
        using var dir = new TempDirectory();
        HuggingFaceWriter.WriteTokenizer(original, "source", dir.Path);
        var back = VocabularyReader.FromTokenizerJson(dir.File("tokenizer.json"));
        AssertSameVocabulary(original, back);
        AssertTransformersIds(dir.File("tokenizer.json"), back);
        if (name == "gpt-neox")
            return; // no token for byte 0xC0 (never in UTF-8 text) among others, which Squeeze's tokenizer requires of a vocabulary
        AssertSameIds(Tokenizer.Create(original), Tokenizer.Create(back), name);
        var tokenizer = Tokenizer.Create(back);
        foreach (var (text, ids) in TokenizerTestData.Vectors(name))
            Assert.Equal(ids, tokenizer.Encode(text, addBos: false));
    }

    /// <summary>The rows Qwen's embedding has past its tokens ([PAD151669] … [PAD151935], unused) are not tokens of the
    /// file, as in Qwen's own checkpoints, whose tokenizer.json has 151,669 tokens for vocab_size 151,936; padded to the
    /// rows again, as the readers do with config.json's vocab_size, it is the same vocabulary.</summary>
    [Fact]
    public void Padding_past_the_tokens_is_left_out_and_padded_again()
    {
        var padded = VocabularyReader.FromTokenizerJson(SourcePath("qwen3")).PaddedTo(151936);
        using var dir = new TempDirectory();
        HuggingFaceWriter.WriteTokenizer(padded, "source", dir.Path);
        var back = VocabularyReader.FromTokenizerJson(dir.File("tokenizer.json"));
        Assert.Equal(151669, back.Count);
        Assert.DoesNotContain("[PAD151669]", File.ReadAllText(dir.File("tokenizer.json")), StringComparison.Ordinal);
        AssertSameVocabulary(padded, back.PaddedTo(151936));
    }

    /// <summary>An id no token holds in the middle of the vocabulary (a hole, named "[PAD{id}]" as llama.cpp's converter
    /// names it) stays a hole; BOS added by a TemplateProcessing post-processor as Meta's Llama 3 file has it.</summary>
    [Fact]
    public void A_hole_in_the_ids_and_add_bos_round_trip()
    {
        var llama3 = VocabularyReader.FromTokenizerJson(SourcePath("llama3"));
        int hole = 1000;
        var types = (TokenType[])llama3.Types.Clone();
        var tokens = (string[])llama3.Tokens.Clone();
        (tokens[hole], types[hole]) = (Vocabulary.PaddingPiece(hole), TokenType.Unused);
        var edited = With(llama3, tokens, types, addBos: true);
        using var dir = new TempDirectory();
        HuggingFaceWriter.WriteTokenizer(edited, "source", dir.Path);
        using (var json = JsonDocument.Parse(File.ReadAllBytes(dir.File("tokenizer.json"))))
        {
            var processor = json.RootElement.GetProperty("post_processor");
            Assert.Equal("TemplateProcessing", processor.GetProperty("type").GetString());
            Assert.Equal("<|begin_of_text|>", processor.GetProperty("single")[0].GetProperty("SpecialToken").GetProperty("id").GetString());
        }
        var back = VocabularyReader.FromTokenizerJson(dir.File("tokenizer.json"));
        AssertSameVocabulary(edited, back);
        Assert.Equal(128000, Tokenizer.Create(back).Encode("Hello", addBos: back.AddBos)[0]);
    }

    /// <summary>Token types a tokenizer.json cannot say are refused in one line naming the model and the token (the
    /// model writers write the tokenizer first, so the refusal comes before the weights).</summary>
    [Theory]
    [InlineData(TokenType.Unknown)]
    [InlineData(TokenType.Unused)]
    [InlineData(TokenType.Byte)]
    public void A_type_tokenizer_json_cannot_say_is_refused_naming_the_token(TokenType type)
    {
        var llama3 = VocabularyReader.FromTokenizerJson(SourcePath("llama3"));
        var types = (TokenType[])llama3.Types.Clone();
        types[500] = type;
        using var dir = new TempDirectory();
        var e = Assert.Throws<NotSupportedException>(() => HuggingFaceWriter.WriteTokenizer(With(llama3, llama3.Tokens, types, llama3.AddBos), "source", dir.Path));
        Assert.Contains($"source: token 500 \"{llama3.Tokens[500]}\" is {type}", e.Message, StringComparison.Ordinal);
    }

    /// <summary>Every property of <paramref name="expected"/> that shapes tokenization and generation, in <paramref name="actual"/>;
    /// the pre-tokenizer by the name it is known by ("default" and "gpt2" are "gpt-2", "llama3" is "llama-bpe").</summary>
    internal static void AssertSameVocabulary(Vocabulary expected, Vocabulary actual)
    {
        Assert.Equal(expected.Kind, actual.Kind);
        Assert.Equal(expected.Count, actual.Count);
        for (int id = 0; id < expected.Count; id++)
        {
            if (expected.Tokens[id] != actual.Tokens[id] || expected.Types[id] != actual.Types[id])
                Assert.Fail($"token {id}: expected \"{expected.Tokens[id]}\" {expected.Types[id]}, got \"{actual.Tokens[id]}\" {actual.Types[id]}");
        }
        Assert.Equal(expected.Scores, actual.Scores);
        Assert.Equal(expected.Merges, actual.Merges);
        Assert.Equal(PreTokenizer.CanonicalName(expected.PreTokenizer), PreTokenizer.CanonicalName(actual.PreTokenizer));
        Assert.Equal((expected.BosId, expected.EosId, expected.UnknownId, expected.PaddingId, expected.EotId),
            (actual.BosId, actual.EosId, actual.UnknownId, actual.PaddingId, actual.EotId));
        Assert.Equal((expected.AddBos, expected.AddSpacePrefix), (actual.AddBos, actual.AddSpacePrefix));
        Assert.Equal(expected.ChatTemplate, actual.ChatTemplate);
    }

    /// <summary>The file's ids are the ones transformers' tokenizers library gives its tokens: it assigns an added token
    /// that is not in the model's vocab the next id after the vocab's count, so the vocab must hold ids 0 … n−1 (holes
    /// aside) and the added tokens past it must follow in order.</summary>
    private static void AssertTransformersIds(string path, Vocabulary vocabulary)
    {
        using var json = JsonDocument.Parse(File.ReadAllBytes(path));
        var vocab = json.RootElement.GetProperty("model").GetProperty("vocab").EnumerateObject().Select(p => p.Value.GetInt32()).ToList();
        Assert.Equal(Enumerable.Range(0, vocab.Count), vocab);
        int next = vocab.Count;
        foreach (var token in json.RootElement.GetProperty("added_tokens").EnumerateArray())
        {
            int id = token.GetProperty("id").GetInt32();
            if (id < vocab.Count)
                continue;
            Assert.Equal(next++, id);
            Assert.Equal(vocabulary.Types[id] == TokenType.Control, token.GetProperty("special").GetBoolean());
        }
    }

    /// <summary>The same ids from both tokenizers on the first <see cref="CorpusChars"/> of every corpus, llama.cpp's
    /// GPT-2 test vectors and <see cref="EdgeTexts"/>, each with and without special-token parsing.</summary>
    private void AssertSameIds(Tokenizer expected, Tokenizer actual, string name)
    {
        var texts = new List<string>(EdgeTexts);
        foreach (string corpus in Directory.GetFiles(SharedData.Path("corpora"), "*.txt").Order(StringComparer.Ordinal))
        {
            string text = File.ReadAllText(corpus);
            text = text[..Math.Min(text.Length, CorpusChars)];
            texts.Add(char.IsHighSurrogate(text[^1]) ? text[..^1] : text);
        }
        texts.AddRange(TokenizerTestData.Vectors("gpt-2").Select(v => v.Text));
        long count = 0;
        foreach (string text in texts)
        {
            foreach (bool parseSpecial in new[] { false, true })
            {
                int[] a = expected.Encode(text, addBos: false, parseSpecial);
                int[] b = actual.Encode(text, addBos: false, parseSpecial);
                Assert.True(a.SequenceEqual(b), $"\"{text[..Math.Min(text.Length, 60)]}\" parse_special {parseSpecial}: {TokenizerTestData.Diff(a, b)}");
                count += a.Length;
            }
        }
        output.WriteLine($"{name}: {texts.Count} texts, {count:N0} tokens, the same ids");
    }

    private static Vocabulary With(Vocabulary v, string[] tokens, TokenType[] types, bool addBos) => new()
    {
        Kind = v.Kind,
        Tokens = tokens,
        Scores = v.Scores,
        Types = types,
        Merges = v.Merges,
        PreTokenizer = v.PreTokenizer,
        BosId = v.BosId,
        EosId = v.EosId,
        UnknownId = v.UnknownId,
        PaddingId = v.PaddingId,
        AddBos = addBos,
        AddSpacePrefix = v.AddSpacePrefix,
        ChatTemplate = v.ChatTemplate,
    };
}
