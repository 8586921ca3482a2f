using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Squeeze.Formats;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;
using Xunit.Abstractions;

namespace Squeeze.Tests.Tokenizers;

/// <summary>The vocabulary readers on real files, and on broken ones: every failure is a <see cref="ModelFormatException"/>
/// naming the file.</summary>
public class VocabularyReaderTests(ITestOutputHelper output)
{
    private const string Name = "tok512.bin";

    private static byte[] Tok512() => File.ReadAllBytes(SharedData.Stories260KTokenizer);

    private static ModelFormatException LoadFails(byte[] data, int vocabSize = 512)
    {
        var e = Assert.Throws<ModelFormatException>(() => VocabularyReader.FromLlama2cTokenizer(data, vocabSize, Name));
        Assert.Equal(Name, e.Path);
        return e;
    }

    [Fact]
    public void Tok512_Loads()
    {
        Vocabulary v = VocabularyReader.FromLlama2cTokenizer(SharedData.Stories260KTokenizer, 512);
        Assert.Equal(512, v.Count);
        Assert.Equal(TokenizerKind.SentencePiece, v.Kind);
        Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], v.Tokens[..4]);
        Assert.Equal([TokenType.Unknown, TokenType.Control, TokenType.Control], v.Types[..3]);
        Assert.All(v.Types[3..259], t => Assert.Equal(TokenType.Byte, t));
        Assert.All(v.Types[259..], t => Assert.Equal(TokenType.Normal, t));
        Assert.Equal(("\u2581t", -1f), (v.Tokens[259], v.Scores[260]));
        Assert.Equal((1, 2, 0, true, true), (v.BosId, v.EosId, v.UnknownId, v.AddBos, v.AddSpacePrefix));
    }

    [Fact]
    public void Llama2c_EveryTruncation_Throws()
    {
        byte[] data = Tok512();
        for (int length = 0; length < data.Length; length++)
            LoadFails(data[..length]);
    }

    [Fact]
    public void Llama2c_VocabularySizeMismatch_Throws()
    {
        Assert.Contains("after the 511 tokens", LoadFails(Tok512(), 511).Problem);
        Assert.Contains("truncated", LoadFails(Tok512(), 513).Problem);
        Assert.Contains("cannot hold", LoadFails(Tok512(), int.MaxValue).Problem);
        Assert.Contains("too small", LoadFails(Tok512(), 0).Problem);
    }

    [Theory]
    [InlineData(int.MaxValue)]
    [InlineData(-1)]
    [InlineData(8)] // above max_token_length (7)
    public void Llama2c_AbsurdTokenLength_Throws(int length)
    {
        byte[] data = Tok512();
        BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(4 + 4), length); // token 0's length
        Assert.Contains("length", LoadFails(data).Problem);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-5)]
    [InlineData(int.MaxValue)]
    public void Llama2c_AbsurdMaxTokenLength_Throws(int max)
    {
        byte[] data = Tok512();
        BinaryPrimitives.WriteInt32LittleEndian(data, max);
        Assert.Contains("max_token_length", LoadFails(data).Problem);
    }

    [Fact]
    public void Llama2c_NaNScoreAndInvalidUtf8_Throw()
    {
        byte[] data = Tok512();
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4), float.NaN);
        Assert.Contains("score", LoadFails(data).Problem);
        data = Tok512();
        int offset = 4;
        for (int id = 0; id < 300; id++)
            offset += 8 + BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(offset + 4));
        data[offset + 8] = 0xFF; // token 300's first byte
        Assert.Contains("UTF-8", LoadFails(data).Problem);
    }

    [Fact]
    public void Llama2c_FileErrorsNameTheFile()
    {
        string path = Path.Combine(Path.GetTempPath(), $"squeeze-truncated-{Environment.ProcessId}.bin");
        File.WriteAllBytes(path, Tok512()[..100]);
        try
        {
            var e = Assert.Throws<ModelFormatException>(() => VocabularyReader.FromLlama2cTokenizer(path, 512));
            Assert.Equal(path, e.Path);
            Assert.Contains(path, e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>10,000 seeded mutations of tok512.bin (byte overwrites, bit flips, cuts, insertions, length-field rewrites):
    /// each loads or throws <see cref="ModelFormatException"/>; whatever loads can build a tokenizer and encode.</summary>
    [Fact]
    public void Llama2c_MutatedFiles_LoadOrThrowModelFormatException()
    {
        byte[] original = Tok512();
        var random = new Random(42);
        var clock = Stopwatch.StartNew();
        int loaded = 0, rejected = 0;
        for (int iteration = 0; iteration < 10_000; iteration++)
        {
            byte[] data = Mutate(original, random);
            Vocabulary vocabulary;
            try
            {
                vocabulary = VocabularyReader.FromLlama2cTokenizer(data, 512, Name);
            }
            catch (ModelFormatException)
            {
                rejected++;
                continue;
            }
            loaded++;
            if (loaded % 50 == 1)
            {
                var tokenizer = Tokenizer.Create(vocabulary);
                int[] ids = tokenizer.Encode("Once upon a time, naïve 😀", addBos: true);
                Assert.All(ids, id => Assert.InRange(id, 0, 511));
            }
        }
        output.WriteLine($"{loaded} loaded, {rejected} rejected in {clock.Elapsed.TotalSeconds:F2} s");
        Assert.True(loaded > 100 && rejected > 1000, $"{loaded} loaded, {rejected} rejected: the mutations are not exercising both paths");
    }

    private static byte[] Mutate(byte[] original, Random random)
    {
        byte[] data = (byte[])original.Clone();
        switch (random.Next(6))
        {
            case 0: // overwrite a few bytes
                for (int k = random.Next(1, 9); k > 0; k--)
                    data[random.Next(data.Length)] = (byte)random.Next(256);
                return data;
            case 1: // flip one bit
                data[random.Next(data.Length)] ^= (byte)(1 << random.Next(8));
                return data;
            case 2: // cut
                return data[..random.Next(data.Length)];
            case 3: // insert random bytes
                {
                    int at = random.Next(data.Length);
                    byte[] extra = new byte[random.Next(1, 16)];
                    random.NextBytes(extra);
                    return [.. data[..at], .. extra, .. data[at..]];
                }
            case 4: // rewrite an int32 at a random 4-aligned offset with a boundary value
                {
                    int[] values = [0, -1, 1, 7, 8, 255, int.MaxValue, int.MinValue, 1 << 20];
                    int at = random.Next(data.Length / 4) * 4;
                    BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(at), values[random.Next(values.Length)]);
                    return data;
                }
            default: // harmless change to a normal piece: usually still loads
                {
                    int at = 4;
                    int target = random.Next(259, 512);
                    for (int id = 0; id < target; id++)
                        at += 8 + BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(at + 4));
                    int length = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(at + 4));
                    if (length > 0)
                        data[at + 8 + random.Next(length)] = (byte)random.Next(0x21, 0x7F);
                    return data;
                }
        }
    }

    [Fact]
    public void SentencePieceModel_Stories15M_Loads()
    {
        Vocabulary v = TokenizerTestData.Stories15MModel.Value;
        Assert.Equal(32000, v.Count);
        Assert.Equal(("<unk>", TokenType.Unknown), (v.Tokens[0], v.Types[0]));
        Assert.Equal(("<s>", TokenType.Control), (v.Tokens[1], v.Types[1]));
        Assert.Equal(("<0xFF>", TokenType.Byte), (v.Tokens[258], v.Types[258]));
        Assert.Equal(("\u2581t", -1f), (v.Tokens[260], v.Scores[260]));
        Assert.Equal((1, 2, 0, -1, true, true), (v.BosId, v.EosId, v.UnknownId, v.PaddingId, v.AddBos, v.AddSpacePrefix));
    }

    /// <summary>Truncations and seeded byte mutations of tokenizer.model load or throw <see cref="ModelFormatException"/>.</summary>
    [Fact]
    public void SentencePieceModel_BrokenFiles_LoadOrThrowModelFormatException()
    {
        byte[] original = File.ReadAllBytes(SharedData.Stories15MTokenizerModel);
        var random = new Random(7);
        int rejected = 0;
        for (int iteration = 0; iteration < 300; iteration++)
        {
            byte[] data = iteration < 100 ? original[..random.Next(original.Length)] : (byte[])original.Clone();
            if (iteration >= 100)
            {
                for (int k = random.Next(1, 5); k > 0; k--)
                    data[random.Next(data.Length)] = (byte)random.Next(256);
            }
            try
            {
                VocabularyReader.FromSentencePieceModel(data, "tokenizer.model");
            }
            catch (ModelFormatException e)
            {
                Assert.Equal("tokenizer.model", e.Path);
                rejected++;
            }
        }
        Assert.True(rejected >= 100, $"only {rejected} rejected");
        Assert.Throws<ModelFormatException>(() => VocabularyReader.FromSentencePieceModel([], "empty"));
        Assert.Throws<ModelFormatException>(() => VocabularyReader.FromSentencePieceModel(File.ReadAllBytes(SharedData.Stories260KTokenizer), "tok512.bin"));
    }

    [Fact]
    public void TokenizerJson_Gpt2_StringAndArrayMergesReadAlike()
    {
        Vocabulary strings = VocabularyReader.FromTokenizerJson(TokenizerTestData.Gpt2TokenizerJson(arrayMerges: false));
        Vocabulary arrays = VocabularyReader.FromTokenizerJson(TokenizerTestData.Gpt2TokenizerJson(arrayMerges: true));
        Assert.Equal(TokenizerKind.BytePairEncoding, strings.Kind);
        Assert.Equal(50257, strings.Count);
        Assert.Equal(50000, strings.Merges!.Length);
        Assert.Equal("\u0120 t", strings.Merges[0]);
        Assert.Equal(strings.Merges, arrays.Merges);
        Assert.Equal(strings.Tokens, arrays.Tokens);
        Assert.Equal("gpt-2", strings.PreTokenizer);
        Assert.Equal(TokenType.Control, strings.Types[50256]);
        Assert.Equal((50256, 50256, false), (strings.BosId, strings.EosId, strings.AddBos));
    }

    [Theory]
    [InlineData(PreTokenizer.Llama3Pattern, "llama-bpe", true)]
    [InlineData(PreTokenizer.Qwen2Pattern, "qwen2", false)]
    [InlineData(PreTokenizer.Gpt2Pattern, "gpt-2", false)]
    public void TokenizerJson_SplitRegex_NamesThePreTokenizer(string pattern, string expected, bool template)
    {
        string post = template
            ? """{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}"""
            : "null";
        string json = $$$"""
            {"added_tokens": [{"id": 3, "content": "<|begin_of_text|>", "special": true}, {"id": 4, "content": "<tool>", "special": false}],
             "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": {{{JsonString(pattern)}}}}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},
             "post_processor": {{{post}}},
             "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}
            """;
        Vocabulary v = VocabularyReader.FromTokenizerJson(Encoding.UTF8.GetBytes(json), [], "tokenizer.json");
        Assert.Equal(expected, v.PreTokenizer);
        Assert.Equal(["a b"], v.Merges!);
        Assert.Equal([TokenType.Normal, TokenType.Normal, TokenType.Normal, TokenType.Control, TokenType.UserDefined], v.Types);
        Assert.Equal(template, v.AddBos);
        Assert.Equal(template ? 3 : -1, v.BosId);
    }

    private static string JsonString(string s) => System.Text.Json.JsonSerializer.Serialize(s);

    [Theory]
    [InlineData("")]
    [InlineData("{")]
    [InlineData("[]")]
    [InlineData("""{"model": {"type": "Unigram", "vocab": []}}""")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": -3}, "merges": []}}""")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}""")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}, "decoder": {"type": "ByteLevel"}}""")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}""")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""")]
    [InlineData("""{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}}, "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""")]
    public void TokenizerJson_Invalid_Throws(string json)
    {
        var e = Assert.Throws<ModelFormatException>(() => VocabularyReader.FromTokenizerJson(Encoding.UTF8.GetBytes(json), [], "bad.json"));
        Assert.Equal("bad.json", e.Path);
    }
}
