using System.Buffers;
using System.Text;
using Squeeze.Tokenizers;

namespace Squeeze.Zip;

/// <summary>
/// Any bytes as a sequence of symbols the coder can code and the decoder can turn back into exactly those bytes:
/// a symbol ≥ 0 is a token whose <see cref="Tokenizer.TokenBytes"/> are the next bytes; a symbol −1 − b is the byte b
/// escaped (coded outside the model's vocabulary). Valid UTF-8 runs go through the model's tokenizer and are kept when
/// the tokens' bytes give back the run exactly; otherwise the run is tried line by line, and what still does not round-trip
/// (invalid UTF-8, text the tokenizer changes) becomes single-byte tokens (SentencePiece's byte fallback &lt;0xNN&gt;, or
/// any token of that one byte) or escapes when the vocabulary has no such token.
/// </summary>
public sealed class SymbolTokenizer
{
    private readonly Tokenizer tokenizer;        // the model's own: SentencePiece adds its space prefix
    private readonly Tokenizer withoutPrefix;    // the same vocabulary without the space prefix
    private readonly byte[][] tokenBytes;        // [vocab]
    private readonly int[] byteTokens = new int[256]; // the token of each single byte, or −1

    /// <summary>Symbols of <paramref name="tokenizer"/>'s vocabulary, with a byte token or an escape for any byte it cannot spell.</summary>
    public SymbolTokenizer(Tokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        this.tokenizer = tokenizer;
        var v = tokenizer.Vocabulary;
        withoutPrefix = v.AddSpacePrefix && v.Kind == TokenizerKind.SentencePiece
            ? Tokenizer.Create(new Vocabulary
            {
                Kind = v.Kind, Tokens = v.Tokens, Scores = v.Scores, Types = v.Types, Merges = v.Merges, PreTokenizer = v.PreTokenizer,
                BosId = v.BosId, EosId = v.EosId, UnknownId = v.UnknownId, PaddingId = v.PaddingId, AddBos = v.AddBos, AddSpacePrefix = false,
            })
            : tokenizer;
        tokenBytes = new byte[v.Count][];
        Array.Fill(byteTokens, -1);
        for (int id = 0; id < v.Count; id++)
        {
            tokenBytes[id] = tokenizer.TokenBytes(id);
            if (tokenBytes[id].Length == 1 && (byteTokens[tokenBytes[id][0]] < 0 || v.Types[id] == TokenType.Byte))
                byteTokens[tokenBytes[id][0]] = id;
        }
        FeedForEscape = v.UnknownId >= 0 ? v.UnknownId : 0;
    }

    /// <summary>The tokenizer puts a space before a text (SentencePiece's prefix): a symbol sequence that starts a
    /// document (a segment, or after a break) then begins with a space that is not part of the text.</summary>
    public bool AddsSpacePrefix => withoutPrefix != tokenizer;

    /// <summary>The token the model is given in place of an escaped byte.</summary>
    public int FeedForEscape { get; }

    /// <summary>Number of byte values with a token of their own (256 means nothing is ever escaped).</summary>
    public int ByteTokenCount => byteTokens.Count(t => t >= 0);

    /// <summary>The bytes of token <paramref name="id"/>.</summary>
    public ReadOnlySpan<byte> Bytes(int id) => tokenBytes[id];

    /// <summary>
    /// The symbols of <paramref name="segment"/>. With <paramref name="tryPrefix"/>, the first run is tried with the
    /// tokenizer's space prefix first (as <c>squeeze eval</c> tokenizes a text); <paramref name="droppedSpace"/> tells that
    /// it was kept, so the symbols' bytes are a space followed by the segment: the decoder drops that first byte.
    /// </summary>
    public List<int> Tokenize(ReadOnlySpan<byte> segment, bool tryPrefix, out bool droppedSpace)
    {
        var symbols = new List<int>(segment.Length / 3 + 4);
        droppedSpace = false;
        int start = 0;
        while (start < segment.Length)
        {
            int end = start;
            while (end < segment.Length && Rune.DecodeFromUtf8(segment[end..], out _, out int used) == OperationStatus.Done)
                end += used;
            if (end > start)
            {
                var run = segment[start..end];
                if (start == 0 && tryPrefix && AddsSpacePrefix && TryTokens(tokenizer, run, prefixed: true, symbols))
                    droppedSpace = true;
                else if (!TryTokens(withoutPrefix, run, prefixed: false, symbols))
                    AddLines(run, symbols);
                start = end;
            }
            else
            {
                AddByte(segment[start], symbols);
                start++;
            }
        }
        return symbols;
    }

    private void AddLines(ReadOnlySpan<byte> run, List<int> symbols)
    {
        while (!run.IsEmpty)
        {
            int newline = run.IndexOf((byte)'\n');
            var line = newline < 0 ? run : run[..(newline + 1)];
            if (!TryTokens(withoutPrefix, line, prefixed: false, symbols))
            {
                foreach (byte b in line)
                    AddByte(b, symbols);
            }
            run = run[line.Length..];
        }
    }

    private void AddByte(byte b, List<int> symbols) => symbols.Add(byteTokens[b] >= 0 ? byteTokens[b] : -1 - b);

    /// <summary>Appends the tokens of <paramref name="run"/> when their bytes give back the run exactly (after a leading
    /// space when <paramref name="prefixed"/>), every token standing for at least one byte.</summary>
    private bool TryTokens(Tokenizer t, ReadOnlySpan<byte> run, bool prefixed, List<int> symbols)
    {
        int[] tokens = t.Encode(Encoding.UTF8.GetString(run), addBos: false);
        int offset = prefixed ? -1 : 0; // position in run of the next token byte (−1: the prefix space)
        foreach (int id in tokens)
        {
            var bytes = tokenBytes[id];
            if (bytes.Length == 0)
                return false;
            foreach (byte b in bytes)
            {
                if (offset == -1 ? b != (byte)' ' : offset >= run.Length || run[offset] != b)
                    return false;
                offset++;
            }
        }
        if (offset != run.Length)
            return false;
        symbols.AddRange(tokens);
        return true;
    }
}
