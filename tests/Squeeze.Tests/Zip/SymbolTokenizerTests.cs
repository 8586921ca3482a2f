using System.Text;
using Squeeze.Coding;
using Squeeze.Formats;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;
using Squeeze.Zip;

namespace Squeeze.Tests.Zip;

public class SymbolTokenizerTests
{
    private static byte[] Join(SymbolTokenizer symbols, List<int> ids, bool droppedSpace)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (id >= 0)
                bytes.AddRange(symbols.Bytes(id).ToArray());
            else
                bytes.Add((byte)(-1 - id));
        }
        if (droppedSpace)
        {
            Assert.Equal((byte)' ', bytes[0]);
            bytes.RemoveAt(0);
        }
        return [.. bytes];
    }

    public static TheoryData<string> Inputs => new()
    {
        "Once upon a time, there was a dog.\nHe was happy.",
        " leading space, trailing space ",
        "tabs\tand\r\nwindows lines\r\n\n\n",
        "héllo wörld — ünïcödé ✓ 日本語 🙂",
        "",
        "x",
    };

    [Theory]
    [MemberData(nameof(Inputs))]
    public void Text_round_trips_through_stories15M_symbols(string text)
    {
        using var model = ModelLoader.Load(SharedData.Stories15M);
        var symbols = new SymbolTokenizer(model.Tokenizer);
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var ids = symbols.Tokenize(bytes, tryPrefix: true, out bool dropped);
        Assert.Equal(bytes, Join(symbols, ids, dropped));
        Assert.DoesNotContain(ids, id => id < 0); // stories15M has a byte token for every byte
    }

    [Fact]
    public void Plain_text_is_tokenized_as_the_model_tokenizes_it()
    {
        using var model = ModelLoader.Load(SharedData.Stories15M);
        var symbols = new SymbolTokenizer(model.Tokenizer);
        const string text = "Once upon a time, there was a little girl named Lily.";
        var ids = symbols.Tokenize(Encoding.UTF8.GetBytes(text), tryPrefix: true, out bool dropped);
        Assert.True(dropped);
        Assert.Equal(model.Tokenizer.Encode(text, addBos: false), ids);
    }

    [Fact]
    public void Invalid_utf8_and_binary_round_trip_with_byte_tokens()
    {
        using var model = ModelLoader.Load(SharedData.Stories15M);
        var symbols = new SymbolTokenizer(model.Tokenizer);
        var rng = new Random(5);
        for (int n = 0; n < 200; n += 7)
        {
            var bytes = new byte[n];
            rng.NextBytes(bytes);
            byte[] mixed = [.. "text "u8.ToArray(), .. bytes, 0xC3, .. " more"u8.ToArray(), 0xE2, 0x82];
            var ids = symbols.Tokenize(mixed, tryPrefix: true, out bool dropped);
            Assert.Equal(mixed, Join(symbols, ids, dropped));
        }
    }

    [Fact]
    public void Bytes_without_a_token_are_escaped()
    {
        // A SentencePiece vocabulary of a few pieces and no byte tokens: everything else must escape.
        var vocabulary = new Vocabulary
        {
            Kind = TokenizerKind.SentencePiece,
            Tokens = ["<unk>", "<s>", "</s>", "a", "b", "\u2581", "ab", "\u2581a"],
            Scores = [0, 0, 0, -1, -1, -1, -0.5f, -0.5f],
            Types = [TokenType.Unknown, TokenType.Control, TokenType.Control, TokenType.Normal, TokenType.Normal, TokenType.Normal, TokenType.Normal, TokenType.Normal],
            BosId = 1, EosId = 2, UnknownId = 0,
        };
        var symbols = new SymbolTokenizer(Tokenizer.Create(vocabulary));
        Assert.Equal(3, symbols.ByteTokenCount); // 'a', 'b', ' '
        byte[] input = [.. "ab ab"u8.ToArray(), 0xFF, .. "xyzé ba\n"u8.ToArray()];
        var ids = symbols.Tokenize(input, tryPrefix: true, out bool dropped);
        Assert.Equal(input, Join(symbols, ids, dropped));
        Assert.Contains(ids, id => id == -1 - 0xFF);
        Assert.Contains(ids, id => id == -1 - 'x');
        Assert.Contains(ids, id => id >= 0 && symbols.Bytes(id).Length >= 2); // merged pieces where the text allowed them
    }
}
