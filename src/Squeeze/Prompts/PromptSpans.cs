using Squeeze.Tokenizers;

namespace Squeeze.Prompts;

/// <summary>A prompt's tokens cut into the pieces the methods keep or drop whole: characters (a token that continues a
/// UTF-8 character stays with the one that started it), words (from a token that starts with a space or follows a line
/// break; line breaks stay with the word before them) and sentences (from the first word after '.', '!' or '?', closing quotes allowed, or after a line break).
/// Each cut is a list of bounds: piece i is tokens [bounds[i], bounds[i + 1]).</summary>
internal sealed class PromptSpans
{
    public PromptSpans(Tokenizer tokenizer, int[] tokens)
    {
        Tokens = tokens;
        var characters = new List<int>();
        var words = new List<int>();
        var sentences = new List<int>();
        byte last = (byte)'\n';      // the prompt's last byte so far; a line break before the first token starts everything
        byte lastNonClosing = (byte)'.';
        for (int i = 0; i < tokens.Length; i++)
        {
            byte[] bytes = tokenizer.TokenBytes(tokens[i]);
            if (bytes.Length == 0 || (bytes[0] & 0xC0) != 0x80)
            {
                characters.Add(i);
                // a line break stays with the word before it; the token after it starts a word
                bool word = i == 0 || last == (byte)'\n' || (bytes.Length > 0 && bytes[0] == (byte)' ');
                if (word)
                {
                    words.Add(i);
                    if (i == 0 || last == (byte)'\n' || lastNonClosing is (byte)'.' or (byte)'!' or (byte)'?')
                        sentences.Add(i);
                }
            }
            foreach (byte b in bytes)
            {
                last = b;
                if (b is not ((byte)'"' or (byte)'\'' or (byte)')' or (byte)' '))
                    lastNonClosing = b;
            }
        }
        Characters = Close(characters, tokens.Length);
        Words = Close(words, tokens.Length);
        Sentences = Close(sentences, tokens.Length);
    }

    private PromptSpans(int[] tokens, int[] characters, int[] words, int[] sentences)
    {
        Tokens = tokens;
        Characters = characters;
        Words = words;
        Sentences = sentences;
    }

    /// <summary>The spans of the prompt's first <paramref name="end"/> tokens (<paramref name="end"/> a word's start, or
    /// the prompt's length).</summary>
    public PromptSpans Prefix(int end) => new(Tokens[..end], Cut(Characters, end), Cut(Words, end), Cut(Sentences, end));

    private static int[] Cut(int[] bounds, int end) => [.. bounds.Where(b => b < end), end];

    /// <summary>The prompt's token ids, without BOS.</summary>
    public int[] Tokens { get; }

    /// <summary>Bounds of the characters.</summary>
    public int[] Characters { get; }

    /// <summary>Bounds of the words.</summary>
    public int[] Words { get; }

    /// <summary>Bounds of the sentences.</summary>
    public int[] Sentences { get; }

    private static int[] Close(List<int> starts, int length)
    {
        if (starts.Count == 0 && length > 0)
            starts.Add(0);
        starts.Add(length);
        return [.. starts];
    }

    /// <summary>Keeps whole pieces in the order of their scores (highest first, the earlier piece on ties), each one that
    /// still fits in <paramref name="budget"/> tokens (<paramref name="contiguous"/>: up to the first that does not);
    /// marks their tokens in <paramref name="keep"/>. Returns the tokens kept.</summary>
    public static int KeepBest(int[] bounds, ReadOnlySpan<double> scores, int budget, bool[] keep, bool contiguous = false)
    {
        int pieces = bounds.Length - 1;
        var order = Enumerable.Range(0, pieces).ToArray();
        double[] copy = scores.ToArray();
        Array.Sort(order, (x, y) => copy[y].CompareTo(copy[x]) is int c && c != 0 ? c : x.CompareTo(y));
        int kept = 0;
        foreach (int p in order)
        {
            int length = bounds[p + 1] - bounds[p];
            if (kept + length > budget)
            {
                if (contiguous)
                    break;
                continue;
            }
            for (int t = bounds[p]; t < bounds[p + 1]; t++)
                keep[t] = true;
            kept += length;
            if (kept == budget)
                break;
        }
        return kept;
    }

    /// <summary>Sums <paramref name="values"/> over each piece of <paramref name="bounds"/>.</summary>
    public static double[] Sum(int[] bounds, ReadOnlySpan<float> values)
    {
        var sums = new double[bounds.Length - 1];
        for (int p = 0; p < sums.Length; p++)
        {
            for (int t = bounds[p]; t < bounds[p + 1]; t++)
                sums[p] += values[t];
        }
        return sums;
    }
}
