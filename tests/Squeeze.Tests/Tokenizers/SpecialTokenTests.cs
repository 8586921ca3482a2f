using Squeeze.Tokenizers;

namespace Squeeze.Tests.Tokenizers;

/// <summary>Special tokens written in the text, as llama.cpp treats them: control tokens only with parse_special,
/// user-defined tokens always; SentencePiece prefixes a space to text that follows a special token.</summary>
public class SpecialTokenTests
{
    [Fact]
    public void Gpt2_EndOfText_IsParsedOnlyWithParseSpecial()
    {
        Tokenizer tokenizer = TokenizerTestData.Gpt2.Value;
        Assert.Equal([15496, 50256, 995], tokenizer.Encode("Hello<|endoftext|> world", addBos: false, parseSpecial: true));
        int[] plain = tokenizer.Encode("Hello<|endoftext|> world", addBos: false);
        Assert.DoesNotContain(50256, plain);
        Assert.Equal("Hello<|endoftext|> world", tokenizer.Decode(plain));
        Assert.Empty(tokenizer.TokenBytes(50256));
    }

    [Fact]
    public void SentencePiece_ControlTokenInText_StartsANewSpacePrefixedFragment()
    {
        Tokenizer tokenizer = TokenizerTestData.Stories15MModelTokenizer.Value;
        // The fragment after <s> gets its own space prefix, so "world" becomes "▁world" (llama.cpp's is_prev_special).
        int[] ids = tokenizer.Encode("Hello<s>world", addBos: false, parseSpecial: true);
        Assert.Equal([15043, 1, 3186], ids); // "▁Hello", <s>, "▁world"
        Assert.NotEqual(ids, tokenizer.Encode("Hello<s>world", addBos: false));
    }

    [Fact]
    public void UserDefinedTokens_AreAlwaysCutOut()
    {
        Vocabulary gpt2 = TokenizerTestData.Gpt2.Value.Vocabulary;
        TokenType[] types = (TokenType[])gpt2.Types.Clone();
        types[50256] = TokenType.UserDefined;
        var tokenizer = Tokenizer.Create(new Vocabulary
        {
            Kind = gpt2.Kind, Tokens = gpt2.Tokens, Scores = gpt2.Scores, Types = types, Merges = gpt2.Merges, PreTokenizer = gpt2.PreTokenizer,
        });
        int[] ids = tokenizer.Encode("a<|endoftext|>b", addBos: false);
        Assert.Equal([64, 50256, 65], ids);
        Assert.Equal("a<|endoftext|>b", tokenizer.Decode(ids));
    }

    [Fact]
    public void AddBos_PutsBosFirst_AndEmptyTextIsEmpty()
    {
        Tokenizer tokenizer = TokenizerTestData.Stories15MModelTokenizer.Value;
        Assert.Equal([1], tokenizer.Encode("", addBos: true));
        Assert.Empty(tokenizer.Encode("", addBos: false));
        Tokenizer noBos = Tokenizer.Create(WithoutBos(TokenizerTestData.Gpt2.Value.Vocabulary));
        Assert.Throws<InvalidOperationException>(() => noBos.Encode("x", addBos: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.TokenBytes(32000));
    }

    private static Vocabulary WithoutBos(Vocabulary v) => new()
    {
        Kind = v.Kind, Tokens = v.Tokens, Scores = v.Scores, Types = v.Types, Merges = v.Merges, PreTokenizer = v.PreTokenizer, BosId = -1,
    };
}
