using System.Text;
using System.Text.RegularExpressions;

namespace Squeeze.Tokenizers;

/// <summary>
/// Splits text into words before byte-level BPE, with the regex GGUF's <c>tokenizer.ggml.pre</c> names (the same
/// expressions llama.cpp and the Hugging Face tokenizers use). Matching is per code point: characters outside the
/// Basic Multilingual Plane are classified by their Unicode category (letter, number, other), which .NET's UTF-16
/// regex engine cannot do on surrogate pairs.
/// </summary>
internal sealed partial class PreTokenizer
{
    /// <summary>GPT-2's pattern, as in its encoder.py.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Llama 3's pattern (tokenizer.json Split regex): numbers in groups of up to three digits.</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen 2's pattern: Llama 3's with single digits.</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    [GeneratedRegex(Gpt2Pattern, RegexOptions.CultureInvariant)]
    private static partial Regex Gpt2Regex();

    [GeneratedRegex(Llama3Pattern, RegexOptions.CultureInvariant)]
    private static partial Regex Llama3Regex();

    [GeneratedRegex(Qwen2Pattern, RegexOptions.CultureInvariant)]
    private static partial Regex Qwen2Regex();

    private readonly Regex regex;

    private PreTokenizer(Regex regex) => this.regex = regex;

    /// <summary>The name a GGUF <c>tokenizer.ggml.pre</c> is known by here: "gpt-2" (also null, "default", "gpt2"),
    /// "llama-bpe" (also "llama3", "llama-v3") or "qwen2".</summary>
    /// <exception cref="NotSupportedException">Another name.</exception>
    public static string CanonicalName(string? name) => name switch
    {
        null or "default" or "gpt-2" or "gpt2" => "gpt-2",
        "llama-bpe" or "llama3" or "llama-v3" => "llama-bpe",
        "qwen2" => "qwen2",
        _ => throw new NotSupportedException($"byte-level BPE pre-tokenizer \"{name}\" is not supported (supported: gpt-2, llama-bpe, qwen2)"),
    };

    /// <summary>The regex of a GGUF <c>tokenizer.ggml.pre</c> name (<see cref="CanonicalName"/>), as a Hugging Face Split writes it.</summary>
    public static string PatternForName(string? name) => CanonicalName(name) switch
    {
        "gpt-2" => Gpt2Pattern,
        "llama-bpe" => Llama3Pattern,
        _ => Qwen2Pattern,
    };

    /// <summary>Whether the vocabulary of this pre-tokenizer sets Hugging Face's <c>ignore_merges</c>, as llama.cpp
    /// assumes for Llama 3 ("llama-bpe"): a word that is itself a token is emitted whole.</summary>
    public static bool IgnoresMerges(string? name) => CanonicalName(name) == "llama-bpe";

    /// <summary>The pre-tokenizer for a GGUF <c>tokenizer.ggml.pre</c> name (<see cref="CanonicalName"/>).</summary>
    public static PreTokenizer ForName(string? name) => new(CanonicalName(name) switch
    {
        "gpt-2" => Gpt2Regex(),
        "llama-bpe" => Llama3Regex(),
        _ => Qwen2Regex(),
    });

    /// <summary>The GGUF pre-tokenizer name for a Hugging Face Split regex, or null when it is none of the supported ones.</summary>
    public static string? NameForPattern(string pattern) => pattern switch
    {
        Gpt2Pattern => "gpt-2",
        Llama3Pattern => "llama-bpe",
        Qwen2Pattern => "qwen2",
        _ => null,
    };

    /// <summary>Appends (start, length) of each word of <paramref name="text"/> to <paramref name="words"/>, in order, covering all of it.</summary>
    public void Split(ReadOnlySpan<char> text, List<(int Start, int Length)> words)
    {
        if (!text.ContainsAnyInRange('\uD800', '\uDFFF'))
        {
            int position = 0;
            foreach (ValueMatch m in regex.EnumerateMatches(text))
            {
                if (m.Index > position)
                    words.Add((position, m.Index - position));
                if (m.Length > 0)
                    words.Add((m.Index, m.Length));
                position = m.Index + m.Length;
            }
            if (position < text.Length)
                words.Add((position, text.Length - position));
            return;
        }

        // One char per code point: supplementary characters stand in as a BMP character of the same class.
        var mapped = new char[text.Length];
        var offsets = new int[text.Length + 1]; // offsets[i]: index in text of mapped char i
        int count = 0;
        for (int i = 0; i < text.Length; count++)
        {
            offsets[count] = i;
            if (Rune.DecodeFromUtf16(text[i..], out Rune rune, out int used) == System.Buffers.OperationStatus.Done && used == 2)
            {
                mapped[count] = Rune.IsLetter(rune) ? '\uA000' : Rune.IsNumber(rune) ? '\u0660' : '\u2603';
                i += 2;
            }
            else
            {
                mapped[count] = char.IsSurrogate(text[i]) ? '\u2603' : text[i];
                i += 1;
            }
        }
        offsets[count] = text.Length;
        int at = 0;
        foreach (ValueMatch m in regex.EnumerateMatches(mapped.AsSpan(0, count)))
        {
            if (m.Index > at)
                words.Add((offsets[at], offsets[m.Index] - offsets[at]));
            if (m.Length > 0)
                words.Add((offsets[m.Index], offsets[m.Index + m.Length] - offsets[m.Index]));
            at = m.Index + m.Length;
        }
        if (at < count)
            words.Add((offsets[at], text.Length - offsets[at]));
    }
}
