using System.Text;
using System.Text.Json;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;

namespace Squeeze.Tests.Tokenizers;

/// <summary>Shared fixtures for the tokenizer tests: llama.cpp's test vectors, the stories15M vocabularies, a GPT-2 tokenizer.json.</summary>
internal static class TokenizerTestData
{
    private const string Separator = "\n__ggml_vocab_test__\n";

    /// <summary>llama.cpp's test vectors for <c>ggml-vocab-NAME.gguf</c>, read as <c>tests/test-tokenizer-0.cpp</c> reads them:
    /// the .inp file holds texts each followed by "\n__ggml_vocab_test__\n"; the .out file one line of ids per text, made with
    /// add_special = false (no BOS) and parse_special = false.</summary>
    public static List<(string Text, int[] Ids)> Vectors(string vocabName)
    {
        string directory = SharedData.Path("tokenizers", "llamacpp-vocab");
        string all = File.ReadAllText(Path.Combine(directory, $"ggml-vocab-{vocabName}.gguf.inp"), Encoding.UTF8);
        var texts = new List<string>();
        int position = 0;
        for (int at; (at = all.IndexOf(Separator, position, StringComparison.Ordinal)) >= 0; position = at + Separator.Length)
            texts.Add(all[position..at]);
        string[] lines = File.ReadAllLines(Path.Combine(directory, $"ggml-vocab-{vocabName}.gguf.out"));
        Assert.Equal(texts.Count, lines.Length);
        Assert.True(texts.Count > 40, $"only {texts.Count} vectors read");
        return [.. texts.Select((t, i) => (t, lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray()))];
    }

    public static readonly Lazy<Vocabulary> Stories15MModel = new(() => VocabularyReader.FromSentencePieceModel(SharedData.Stories15MTokenizerModel));

    public static readonly Lazy<Vocabulary> Stories15MBin = new(() => VocabularyReader.FromLlama2cTokenizer(SharedData.Stories15MTokenizerBin, 32000));

    public static readonly Lazy<Tokenizer> Stories15MModelTokenizer = new(() => Tokenizer.Create(Stories15MModel.Value));

    public static readonly Lazy<Tokenizer> Gpt2 = new(() => Tokenizer.Create(VocabularyReader.FromTokenizerJson(Gpt2TokenizerJson(arrayMerges: false))));

    /// <summary>Lines of the TinyStories eval corpus, non-empty.</summary>
    public static string[] EvalLines() => [.. File.ReadAllLines(SharedData.Corpus("tinystories-eval.txt")).Where(l => l.Length > 0)];

    /// <summary>A GPT-2 tokenizer.json (as Hugging Face ships it) written from the shared vocab.json and merges.txt into a temp
    /// folder, with a tokenizer_config.json beside it; returns the tokenizer.json path.</summary>
    public static string Gpt2TokenizerJson(bool arrayMerges)
    {
        string directory = Path.Combine(Path.GetTempPath(), "squeeze-tests", "gpt2-" + (arrayMerges ? "array" : "string") + "-" + Environment.ProcessId);
        string path = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(path))
            return path;
        Directory.CreateDirectory(directory);
        using var vocab = JsonDocument.Parse(File.ReadAllBytes(SharedData.Path("tokenizers", "gpt2", "vocab.json")));
        string[] merges = [.. File.ReadAllLines(SharedData.Path("tokenizers", "gpt2", "merges.txt")).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal))];
        using (var stream = File.Create(path))
        using (var json = new Utf8JsonWriter(stream))
        {
            json.WriteStartObject();
            json.WriteString("version", "1.0");
            json.WriteStartArray("added_tokens");
            json.WriteStartObject();
            json.WriteNumber("id", 50256);
            json.WriteString("content", "<|endoftext|>");
            json.WriteBoolean("special", true);
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteNull("normalizer");
            json.WriteStartObject("pre_tokenizer");
            json.WriteString("type", "ByteLevel");
            json.WriteBoolean("add_prefix_space", false);
            json.WriteBoolean("trim_offsets", true);
            json.WriteBoolean("use_regex", true);
            json.WriteEndObject();
            json.WriteStartObject("decoder");
            json.WriteString("type", "ByteLevel");
            json.WriteEndObject();
            json.WriteStartObject("model");
            json.WriteString("type", "BPE");
            json.WritePropertyName("vocab");
            vocab.RootElement.WriteTo(json);
            json.WriteStartArray("merges");
            foreach (string merge in merges)
            {
                if (arrayMerges)
                {
                    string[] parts = merge.Split(' ');
                    json.WriteStartArray();
                    json.WriteStringValue(parts[0]);
                    json.WriteStringValue(parts[1]);
                    json.WriteEndArray();
                }
                else
                {
                    json.WriteStringValue(merge);
                }
            }
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndObject();
        }
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"),
            """{"add_bos_token": false, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}""");
        return path;
    }

    /// <summary>First differences between two id sequences, for failure messages.</summary>
    public static string Diff(IReadOnlyList<int> expected, IReadOnlyList<int> actual)
    {
        int i = 0;
        while (i < expected.Count && i < actual.Count && expected[i] == actual[i])
            i++;
        return $"first difference at {i}: expected [{string.Join(' ', expected.Skip(i).Take(8))}] actual [{string.Join(' ', actual.Skip(i).Take(8))}] (lengths {expected.Count}, {actual.Count})";
    }
}
