using Squeeze.Tokenizers;

namespace Squeeze.Tests.Tokenizers;

/// <summary>The byte-level pre-tokenizer regexes, including characters outside the BMP.</summary>
public class PreTokenizerTests
{
    private static string[] Words(string name, string text)
    {
        var words = new List<(int Start, int Length)>();
        PreTokenizer.ForName(name).Split(text, words);
        Assert.Equal(text, string.Concat(words.Select(w => text.Substring(w.Start, w.Length))));
        return [.. words.Select(w => text.Substring(w.Start, w.Length))];
    }

    [Fact]
    public void Gpt2_SplitsContractionsLettersNumbersAndSpaces()
        => Assert.Equal(["Hello", "'s", " world", " 12345", "!!", "   ", " x", "\n\n"], Words("gpt-2", "Hello's world 12345!!    x\n\n"));

    [Fact]
    public void Llama3_GroupsDigitsByThreeAndKeepsNewlines()
        => Assert.Equal(["Hello", "'S", " world", " ", "123", "45", "!!\n\n", "   ", " x"], Words("llama-bpe", "Hello'S world 12345!!\n\n    x"));

    [Fact]
    public void Qwen2_SplitsSingleDigits()
        => Assert.Equal(["a", "1", "2", "3"], Words("qwen2", "a123"));

    /// <summary>Supplementary-plane letters are letters (one word), emoji are "other", as per code point regexes.</summary>
    [Fact]
    public void SupplementaryCharacters_AreClassifiedByCategory()
    {
        Assert.Equal(["\U0001D400\U0001D401", " \U0001D7CE\U0001D7CF", " \U0001F600\U0001F601", " a"], Words("gpt-2", "\U0001D400\U0001D401 \U0001D7CE\U0001D7CF \U0001F600\U0001F601 a"));
        Assert.Equal(["\U0001D7CE\U0001D7CF\U0001D7D0", "\U0001D7D1"], Words("llama-bpe", "\U0001D7CE\U0001D7CF\U0001D7D0\U0001D7D1"));
    }

    [Fact]
    public void UnknownName_IsNotSupported()
        => Assert.Throws<NotSupportedException>(() => PreTokenizer.ForName("falcon"));
}
