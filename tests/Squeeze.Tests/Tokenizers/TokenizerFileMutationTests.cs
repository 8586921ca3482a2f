using System.Text;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;

namespace Squeeze.Tests.Tokenizers;

/// <summary>At least 10,000 mutated files per tokenizer format: each loads or throws <see cref="ModelFormatException"/>
/// naming the file; never another exception, a hang or an allocation beyond the file's size.</summary>
public class TokenizerFileMutationTests
{
    private const int Cases = 10_000;

    [Fact]
    public void Mutated_sentencepiece_models_load_or_throw_ModelFormatException()
    {
        // A small real model: stories260K's 512-token vocabulary as a SentencePiece protobuf.
        var vocabulary = VocabularyReader.FromLlama2cTokenizer(SharedData.Stories260KTokenizer, 512);
        byte[] original = SentencePieceModelWriter.Serialize(vocabulary);
        Assert.Equal(vocabulary.Tokens, VocabularyReader.FromSentencePieceModel(original, "tokenizer.model").Tokens);
        int rejected = Run(original, data => VocabularyReader.FromSentencePieceModel(data, "tokenizer.model"), "tokenizer.model", seed: 11);
        Assert.InRange(rejected, Cases / 10, Cases);
    }

    [Fact]
    public void Mutated_tokenizer_json_files_load_or_throw_ModelFormatException()
    {
        byte[] original = Encoding.UTF8.GetBytes(SmallByteLevelTokenizerJson());
        Assert.Equal(TokenizerKind.BytePairEncoding, VocabularyReader.FromTokenizerJson(original, [], "tokenizer.json").Kind);
        int rejected = Run(original, data => VocabularyReader.FromTokenizerJson(data, [], "tokenizer.json"), "tokenizer.json", seed: 12);
        Assert.InRange(rejected, Cases / 10, Cases);
    }

    private static int Run(byte[] original, Action<byte[]> read, string name, int seed)
    {
        var random = new Random(seed);
        int rejected = 0;
        for (int i = 0; i < Cases; i++)
        {
            byte[] data = Mutate(original, random);
            try
            {
                read(data);
            }
            catch (ModelFormatException e)
            {
                Assert.Equal(name, e.Path);
                rejected++;
            }
        }
        return rejected;
    }

    /// <summary>A truncation, a few random bytes, or an extreme 4- or 8-byte value at a random place.</summary>
    private static byte[] Mutate(byte[] original, Random random)
    {
        switch (random.Next(3))
        {
            case 0:
                return original[..random.Next(original.Length)];
            case 1:
            {
                byte[] data = (byte[])original.Clone();
                for (int k = random.Next(1, 6); k > 0; k--)
                    data[random.Next(data.Length)] = (byte)random.Next(256);
                return data;
            }
            default:
            {
                byte[] data = (byte[])original.Clone();
                int width = random.Next(2) == 0 ? 4 : 8;
                int at = random.Next(data.Length - width);
                byte fill = random.Next(3) switch { 0 => 0xFF, 1 => 0x7F, _ => 0x80 };
                for (int k = 0; k < width; k++)
                    data[at + k] = fill;
                return data;
            }
        }
    }

    /// <summary>A byte-level BPE tokenizer.json with the 256 byte symbols and a few merges.</summary>
    private static string SmallByteLevelTokenizerJson()
    {
        var symbols = new List<string>();
        for (int b = 0; b < 256; b++)
        {
            int code = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255 ? b : 256 + symbols.Count(s => s[0] >= 256);
            symbols.Add(((char)code).ToString());
        }
        string[] merges = ["Ġ t", "h e", "Ġ a", "Ġt he", "i n", "Ġ s"];
        var vocab = symbols.Concat(merges.Select(m => m.Replace(" ", "", StringComparison.Ordinal))).Distinct().ToList();
        var json = new StringBuilder();
        json.Append("{\"version\":\"1.0\",\"added_tokens\":[{\"id\":").Append(vocab.Count).Append(",\"content\":\"<|endoftext|>\",\"special\":true}],");
        json.Append("\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},");
        json.Append("\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{");
        json.AppendJoin(',', vocab.Select((t, i) => $"{System.Text.Json.JsonSerializer.Serialize(t)}:{i}"));
        json.Append("},\"merges\":[");
        json.AppendJoin(',', merges.Select(m => System.Text.Json.JsonSerializer.Serialize(m)));
        json.Append("]}}");
        return json.ToString();
    }
}
