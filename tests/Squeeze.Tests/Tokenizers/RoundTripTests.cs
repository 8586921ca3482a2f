using System.Diagnostics;
using System.Text;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;
using Xunit.Abstractions;

namespace Squeeze.Tests.Tokenizers;

/// <summary>Decode(Encode(text)) == text, and the tokens' bytes concatenate to the text's UTF-8 bytes exactly. SentencePiece
/// adds a space before the text (add_dummy_prefix): the bytes then equal UTF-8(" " + text), and Decode drops that space.</summary>
public class RoundTripTests(ITestOutputHelper output)
{
    public static TheoryData<string> Corpora() =>
    [
        "alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt", "tinyshakespeare.txt",
        "tinystories-calib.txt", "tinystories-eval.txt", "tinystories-sample.txt", "wikitext2-test.txt",
    ];

    private static void AssertRoundTrip(Tokenizer tokenizer, string text, bool addBos, string expectedBytesOf)
    {
        int[] ids = tokenizer.Encode(text, addBos);
        Assert.Equal(text, tokenizer.Decode(ids));
        var bytes = new MemoryStream();
        foreach (int id in ids)
            bytes.Write(tokenizer.TokenBytes(id));
        byte[] expected = Encoding.UTF8.GetBytes(expectedBytesOf);
        byte[] actual = bytes.ToArray();
        Assert.Equal(expected.Length, actual.Length);
        Assert.True(expected.AsSpan().SequenceEqual(actual), "token bytes differ from the text's UTF-8 bytes");
    }

    [Theory]
    [MemberData(nameof(Corpora))]
    public void SentencePiece_Stories15M_RoundTrips(string corpus)
    {
        string text = File.ReadAllText(SharedData.Corpus(corpus));
        AssertRoundTrip(TokenizerTestData.Stories15MModelTokenizer.Value, text, addBos: true, " " + text);
    }

    [Theory]
    [MemberData(nameof(Corpora))]
    public void BytePairEncoding_Gpt2_RoundTrips(string corpus)
    {
        string text = File.ReadAllText(SharedData.Corpus(corpus));
        AssertRoundTrip(TokenizerTestData.Gpt2.Value, text, addBos: false, text);
    }

    /// <summary>stories260K's 512-token vocabulary spells most text with byte tokens, including partial UTF-8 sequences.</summary>
    [Fact]
    public void SentencePiece_Tok512_RoundTripsWithByteFallback()
    {
        var tokenizer = Tokenizer.Create(VocabularyReader.FromLlama2cTokenizer(SharedData.Stories260KTokenizer, 512));
        string text = File.ReadAllText(SharedData.Corpus("tinystories-sample.txt")) + " naïve café — 日本語 😀 \t\r\n";
        AssertRoundTrip(tokenizer, text, addBos: true, " " + text);
        int[] ids = tokenizer.Encode("😀", addBos: false);
        Assert.Equal(5, ids.Length); // '▁' then the emoji's four bytes, each its own token
        Assert.Equal(new byte[] { 0xF0 }, tokenizer.TokenBytes(ids[1]));
    }

    [Fact]
    public void VectorTexts_RoundTrip()
    {
        foreach (var (text, _) in TokenizerTestData.Vectors("llama-spm"))
        {
            AssertRoundTrip(TokenizerTestData.Stories15MModelTokenizer.Value, text, addBos: true, text.Length == 0 ? "" : " " + text);
            AssertRoundTrip(TokenizerTestData.Gpt2.Value, text, addBos: false, text);
        }
    }

    [Fact]
    public void Decode_SkipsBosAndDropsOnlyTheAddedSpace()
    {
        Tokenizer tokenizer = TokenizerTestData.Stories15MModelTokenizer.Value;
        int[] ids = tokenizer.Encode("  Hello", addBos: true);
        Assert.Equal(new[] { 1, 259, 15043 }, ids); // BOS, "▁▁", "▁Hello": llama.cpp's ids for "  Hello" after BOS
        Assert.Equal("  Hello", tokenizer.Decode(ids));
        Assert.Empty(tokenizer.TokenBytes(1));
    }

    /// <summary>Encoding 1 MB stays far from a super-linear blow-up (llama.cpp-like merge queues, per-word cache for BPE):
    /// it takes about 1 s on a quiet machine; the bound is loose enough for a machine shared by many jobs, so it catches
    /// a quadratic algorithm (minutes), not a slowdown. Speed itself is the benchmark harness's business.</summary>
    [Fact]
    public void Encode_OneMegabyte_IsFast()
    {
        string text = File.ReadAllText(SharedData.Corpus("tinyshakespeare.txt"));
        var spm = Tokenizer.Create(TokenizerTestData.Stories15MModel.Value);
        var bpe = Tokenizer.Create(VocabularyReader.FromTokenizerJson(TokenizerTestData.Gpt2TokenizerJson(arrayMerges: false)));
        var clock = Stopwatch.StartNew();
        int spmCount = spm.Encode(text, addBos: true).Length;
        double spmSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        int bpeCount = bpe.Encode(text, addBos: false).Length;
        double bpeSeconds = clock.Elapsed.TotalSeconds;
        output.WriteLine($"{text.Length / 1e6:F2} M chars: SentencePiece {spmCount} tokens in {spmSeconds:F2} s, GPT-2 BPE {bpeCount} tokens in {bpeSeconds:F2} s");
        Assert.InRange(spmSeconds, 0, 30);
        Assert.InRange(bpeSeconds, 0, 30);
    }
}
