using System.Text;

namespace Squeeze.Tokenizers;

/// <summary>
/// SentencePiece-style BPE over scored pieces with byte fallback, as llama.cpp's <c>llm_tokenizer_spm</c> does it
/// (GGUF "llama" vocabularies, Llama 2, llama2.c).
/// </summary>
/// <remarks>
/// Encoding: spaces become U+2581; a space is prepended to each raw fragment that starts the text or follows a special
/// token (when <see cref="Vocabulary.AddSpacePrefix"/>); the fragment is cut into code points, and the adjacent pair
/// whose concatenation is a piece with the highest score is merged, ties to the left, until no pair is a piece.
/// Symbols that are not pieces become their UTF-8 bytes as "&lt;0xNN&gt;" tokens.
/// The whole fragment is merged at once (no pre-splitting), as llama.cpp does.
/// </remarks>
internal sealed class SentencePieceTokenizer : Tokenizer
{
    /// <summary>SentencePiece's visible space, U+2581 '▁'.</summary>
    public const char SpaceMark = '\u2581';

    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> pieces;
    private readonly int[] byteTokens = new int[256];
    private readonly byte[][] tokenBytes;
    private readonly SpecialTokenSplitter splitter;

    public SentencePieceTokenizer(Vocabulary vocabulary)
        : base(vocabulary)
    {
        var map = new Dictionary<string, int>(vocabulary.Count, StringComparer.Ordinal);
        for (int id = 0; id < vocabulary.Count; id++)
            map[vocabulary.Tokens[id]] = id; // a repeated piece maps to its last id, as llama.cpp's token_to_id does
        pieces = map.GetAlternateLookup<ReadOnlySpan<char>>();

        for (int b = 0; b < 256; b++)
        {
            if (map.TryGetValue(VocabularyReader.ByteTokenPiece((byte)b), out int id))
                byteTokens[b] = id;
            else if (b < 0x80 && map.TryGetValue(((char)b).ToString(), out id))
                byteTokens[b] = id;
            else
                byteTokens[b] = vocabulary.UnknownId;
        }

        tokenBytes = new byte[vocabulary.Count][];
        for (int id = 0; id < vocabulary.Count; id++)
            tokenBytes[id] = PieceBytes(vocabulary.Tokens[id], vocabulary.Types[id]);
        splitter = new SpecialTokenSplitter(vocabulary);
    }

    private static byte[] PieceBytes(string piece, TokenType type) => type switch
    {
        TokenType.Control => [],
        TokenType.Byte when VocabularyReader.TryParseByteToken(piece, out byte b) => [b],
        TokenType.Unknown => "\u2585"u8.ToArray(), // llama.cpp shows an unknown token as '▅'
        TokenType.UserDefined => Encoding.UTF8.GetBytes(piece), // matched in the raw text, so kept as written
        _ => Encoding.UTF8.GetBytes(piece.Replace(SpaceMark, ' ')),
    };

    public override int[] Encode(string text, bool addBos, bool parseSpecial)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos)
            output.Add(RequireBos());
        bool previousSpecial = true; // the text's start counts as following a special token
        foreach (Fragment fragment in splitter.Split(text, parseSpecial))
        {
            if (fragment.IsToken)
            {
                output.Add(fragment.TokenId);
                previousSpecial = true;
                continue;
            }
            bool prefix = Vocabulary.AddSpacePrefix && previousSpecial;
            var escaped = new char[fragment.Length + (prefix ? 1 : 0)];
            if (prefix)
                escaped[0] = SpaceMark;
            text.AsSpan(fragment.Start, fragment.Length).Replace(escaped.AsSpan(prefix ? 1 : 0), ' ', SpaceMark);
            EncodeEscaped(escaped, output);
            previousSpecial = false;
        }
        return [.. output];
    }

    private readonly record struct Bigram(int Left, int Right, int Size);

    private static readonly IComparer<(float Score, int Left)> HighestScoreLeftmost = Comparer<(float Score, int Left)>.Create(
        (a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left));

    /// <summary>Merges one escaped fragment and appends its ids.</summary>
    private void EncodeEscaped(ReadOnlySpan<char> text, List<int> output)
    {
        if (text.IsEmpty)
            return;
        // Symbols: code points, as a doubly linked list over start/length (in chars).
        int capacity = text.Length;
        var start = new int[capacity];
        var length = new int[capacity];
        var prev = new int[capacity];
        var next = new int[capacity];
        int count = 0;
        for (int i = 0; i < text.Length; count++)
        {
            int n = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            start[count] = i;
            length[count] = n;
            prev[count] = count - 1;
            next[count] = i + n < text.Length ? count + 1 : -1;
            i += n;
        }

        var queue = new PriorityQueue<Bigram, (float Score, int Left)>(HighestScoreLeftmost);
        for (int i = 1; i < count; i++)
            TryAddBigram(text, queue, start, length, i - 1, i);

        while (queue.TryDequeue(out Bigram bigram, out _))
        {
            int left = bigram.Left, right = bigram.Right;
            // Skip pairs made stale by an earlier merge.
            if (length[left] == 0 || length[right] == 0 || length[left] + length[right] != bigram.Size)
                continue;
            length[left] += length[right];
            length[right] = 0;
            next[left] = next[right];
            if (next[right] >= 0)
                prev[next[right]] = left;
            if (prev[left] >= 0)
                TryAddBigram(text, queue, start, length, prev[left], left);
            if (next[left] >= 0)
                TryAddBigram(text, queue, start, length, left, next[left]);
        }

        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i >= 0; i = next[i])
        {
            ReadOnlySpan<char> symbol = text.Slice(start[i], length[i]);
            if (pieces.TryGetValue(symbol, out int id))
            {
                output.Add(id);
                continue;
            }
            // Only single code points reach here (merges always make pieces): fall back to their bytes.
            int written = Encoding.UTF8.GetBytes(symbol, utf8);
            for (int k = 0; k < written; k++)
            {
                int token = byteTokens[utf8[k]];
                if (token < 0)
                    throw new InvalidOperationException($"no byte token <0x{utf8[k]:X2}> and no unknown token in the vocabulary");
                output.Add(token);
            }
        }
    }

    private void TryAddBigram(ReadOnlySpan<char> text, PriorityQueue<Bigram, (float, int)> queue, int[] start, int[] length, int left, int right)
    {
        int size = length[left] + length[right];
        if (pieces.TryGetValue(text.Slice(start[left], size), out int id))
            queue.Enqueue(new Bigram(left, right, size), (Vocabulary.Scores[id], left));
    }

    public override byte[] TokenBytes(int id)
    {
        CheckId(id);
        return tokenBytes[id];
    }

    /// <summary>Concatenates <see cref="TokenBytes"/>, dropping the space <see cref="Vocabulary.AddSpacePrefix"/> put before
    /// the first token that is not a control token (BOS), as SentencePiece's decoder does.</summary>
    public override string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length * 4);
        bool first = true;
        foreach (int id in ids)
        {
            CheckId(id);
            ReadOnlySpan<byte> piece = tokenBytes[id];
            if (Vocabulary.Types[id] == TokenType.Control)
                continue;
            if (first && Vocabulary.AddSpacePrefix && !piece.IsEmpty && piece[0] == (byte)' ')
                piece = piece[1..];
            first = false;
            bytes.AddRange(piece);
        }
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }
}
