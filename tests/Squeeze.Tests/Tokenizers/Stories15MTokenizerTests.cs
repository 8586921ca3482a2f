using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;
using Tokenizer = Squeeze.Tokenizers.Tokenizer;

namespace Squeeze.Tests.Tokenizers;

/// <summary>stories15M's vocabulary read three ways (tokenizer.bin, tokenizer.model, a Llama-2-style tokenizer.json) tokenizes
/// identically, and as Microsoft.ML.Tokenizers' LlamaTokenizer does.</summary>
public class Stories15MTokenizerTests
{
    private static IEnumerable<string> Texts()
        => TokenizerTestData.EvalLines().Concat(TokenizerTestData.Vectors("llama-spm").Select(v => v.Text));

    private static void AssertSameIds(Tokenizer expected, Tokenizer actual)
    {
        int n = 0;
        foreach (string text in Texts())
        {
            int[] a = expected.Encode(text, addBos: true), b = actual.Encode(text, addBos: true);
            Assert.True(a.SequenceEqual(b), $"\"{text}\": {TokenizerTestData.Diff(a, b)}");
            n++;
        }
        Assert.True(n > 200, $"only {n} texts");
    }

    [Fact]
    public void TokenizerBin_HasTheSamePiecesScoresAndTypesAsTokenizerModel()
    {
        Vocabulary bin = TokenizerTestData.Stories15MBin.Value, model = TokenizerTestData.Stories15MModel.Value;
        Assert.Equal(32000, bin.Count);
        Assert.Equal(model.Tokens, bin.Tokens);
        Assert.Equal(model.Scores, bin.Scores);
        Assert.Equal(model.Types, bin.Types);
        Assert.Equal((model.BosId, model.EosId, model.UnknownId, model.AddBos, model.AddSpacePrefix), (bin.BosId, bin.EosId, bin.UnknownId, bin.AddBos, bin.AddSpacePrefix));
        Assert.Equal(("<0x0A>", TokenType.Byte), (bin.Tokens[13], bin.Types[13]));
        Assert.Equal(("\u2581\u2581", -1e9f), (bin.Tokens[259], bin.Scores[259]));
    }

    [Fact]
    public void TokenizerBinAndTokenizerModel_GiveIdenticalIds()
        => AssertSameIds(TokenizerTestData.Stories15MModelTokenizer.Value, Tokenizer.Create(TokenizerTestData.Stories15MBin.Value));

    /// <summary>Microsoft.ML.Tokenizers' LlamaTokenizer agrees on every TinyStories line. On llama.cpp's vector texts it
    /// breaks some score ties differently from llama.cpp (e.g. "!!!!!!"); there we require llama.cpp's ids, which ours give.</summary>
    [Fact]
    public void MatchesMicrosoftMLLlamaTokenizer_ExceptWhereItDiffersFromLlamaCpp()
    {
        using var stream = File.OpenRead(SharedData.Stories15MTokenizerModel);
        LlamaTokenizer reference = LlamaTokenizer.Create(stream, addBeginOfSentence: true, addEndOfSentence: false);
        Tokenizer ours = TokenizerTestData.Stories15MModelTokenizer.Value;
        foreach (string text in TokenizerTestData.EvalLines())
        {
            int[] expected = [.. reference.EncodeToIds(text)];
            int[] actual = ours.Encode(text, addBos: true);
            Assert.True(expected.SequenceEqual(actual), $"\"{text}\": {TokenizerTestData.Diff(expected, actual)}");
        }
        int agree = 0;
        foreach (var (text, llamaCpp) in TokenizerTestData.Vectors("llama-spm").Where(v => v.Text.Length > 0))
        {
            int[] ml = [.. reference.EncodeToIds(text).Skip(1)];
            int[] actual = ours.Encode(text, addBos: false);
            if (ml.SequenceEqual(actual))
                agree++;
            else
                Assert.False(ml.SequenceEqual(llamaCpp), $"\"{text}\": ML.Tokenizers agrees with llama.cpp but not with us");
        }
        Assert.True(agree >= 40, $"ML.Tokenizers agrees on only {agree} vector texts");
    }

    /// <summary>A Llama-2-style tokenizer.json (BPE with byte_fallback, ▁ normalizer) made from tokenizer.model the way
    /// Hugging Face's converter does: a merge for every split of a piece into two pieces, ordered by the piece's score.</summary>
    [Fact]
    public void LlamaStyleTokenizerJson_TokenizesLikeTokenizerModel()
    {
        Vocabulary model = TokenizerTestData.Stories15MModel.Value;
        Vocabulary json = VocabularyReader.FromTokenizerJson(WriteLlamaTokenizerJson(model));
        Assert.Equal(TokenizerKind.SentencePiece, json.Kind);
        Assert.Equal(model.Tokens, json.Tokens);
        Assert.Equal(model.Types, json.Types);
        Assert.Equal((1, 2, 0, true, true), (json.BosId, json.EosId, json.UnknownId, json.AddBos, json.AddSpacePrefix));
        AssertSameIds(TokenizerTestData.Stories15MModelTokenizer.Value, Tokenizer.Create(json));
    }

    private static string WriteLlamaTokenizerJson(Vocabulary model)
    {
        var ids = new Dictionary<string, int>();
        for (int i = 0; i < model.Count; i++)
            ids[model.Tokens[i]] = i;
        var merges = new List<(string Left, string Right, int Piece)>();
        for (int id = 0; id < model.Count; id++)
        {
            if (model.Types[id] != TokenType.Normal)
                continue;
            string piece = model.Tokens[id];
            var local = new List<(string, string, int)>();
            for (int split = 1; split < piece.Length; split++)
            {
                if (char.IsLowSurrogate(piece[split]))
                    continue;
                if (ids.ContainsKey(piece[..split]) && ids.ContainsKey(piece[split..]))
                    local.Add((piece[..split], piece[split..], id));
            }
            merges.AddRange(local.OrderBy(m => ids[m.Item1]).ThenBy(m => ids[m.Item2]));
        }
        var ordered = merges.OrderByDescending(m => model.Scores[m.Piece]).ToList(); // stable, as Python's sorted

        string directory = Path.Combine(Path.GetTempPath(), "squeeze-tests", "llama-json-" + Environment.ProcessId);
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, "tokenizer.json");
        using (var stream = File.Create(path))
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            w.WriteStartArray("added_tokens");
            foreach (int id in new[] { 0, 1, 2 })
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", model.Tokens[id]);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("normalizer");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("normalizers");
            w.WriteStartObject();
            w.WriteString("type", "Prepend");
            w.WriteString("prepend", "\u2581");
            w.WriteEndObject();
            w.WriteStartObject();
            w.WriteString("type", "Replace");
            w.WriteStartObject("pattern");
            w.WriteString("String", " ");
            w.WriteEndObject();
            w.WriteString("content", "\u2581");
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteNull("pre_tokenizer");
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteString("unk_token", "<unk>");
            w.WriteBoolean("fuse_unk", true);
            w.WriteBoolean("byte_fallback", true);
            w.WriteStartObject("vocab");
            for (int i = 0; i < model.Count; i++)
                w.WriteNumber(model.Tokens[i], i);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (left, right, _) in ordered)
                w.WriteStringValue(left + " " + right);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"),
            """{"add_bos_token": true, "add_eos_token": false, "bos_token": {"content": "<s>"}, "eos_token": "</s>"}""", Encoding.UTF8);
        return path;
    }
}
