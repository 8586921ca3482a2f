using System.Collections.Concurrent;
using System.Text;

namespace Squeeze.Tokenizers;

/// <summary>
/// Byte-level BPE with ranked merges (GPT-2, Llama 3, Qwen 2; GGUF "gpt2" vocabularies), as llama.cpp's
/// <c>llm_tokenizer_bpe</c> does it: special tokens cut out, the rest split into words by the pre-tokenizer regex,
/// each word's UTF-8 bytes spelled with <see cref="ByteLevel"/> and merged pairwise, lowest merge rank first, ties to the left.
/// </summary>
/// <remarks>
/// Merges are looked up by the ids of their two sides, so a merge whose sides or result are not tokens is ignored
/// (llama.cpp would merge and then spell the result character by character; no real vocabulary has such merges).
/// Llama 3 ("llama-bpe") sets ignore_merges: a word that is itself a token is emitted whole.
/// </remarks>
internal sealed class BytePairTokenizer : Tokenizer
{
    private const int MaxCachedWords = 1 << 16;

    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> pieces;
    private readonly Dictionary<long, (int Rank, int Result)> merges;
    private readonly int[] byteTokens = new int[256];
    private readonly byte[][] tokenBytes;
    private readonly SpecialTokenSplitter splitter;
    private readonly PreTokenizer preTokenizer;
    private readonly bool ignoreMerges;
    private readonly ConcurrentDictionary<string, int[]> cache = new(StringComparer.Ordinal);

    public BytePairTokenizer(Vocabulary vocabulary)
        : base(vocabulary)
    {
        var map = new Dictionary<string, int>(vocabulary.Count, StringComparer.Ordinal);
        for (int id = 0; id < vocabulary.Count; id++)
            map[vocabulary.Tokens[id]] = id;
        pieces = map.GetAlternateLookup<ReadOnlySpan<char>>();

        for (int b = 0; b < 256; b++)
        {
            if (!map.TryGetValue(ByteLevel.ByteToChar[b].ToString(), out byteTokens[b]))
                throw new ArgumentException($"byte-level vocabulary has no token for byte 0x{b:X2} ('{ByteLevel.ByteToChar[b]}')", nameof(vocabulary));
        }

        string[] rules = vocabulary.Merges ?? throw new ArgumentException("byte-level BPE vocabulary has no merges", nameof(vocabulary));
        merges = new Dictionary<long, (int, int)>(rules.Length);
        for (int rank = 0; rank < rules.Length; rank++)
        {
            string rule = rules[rank];
            int space = rule.Length > 1 ? rule.IndexOf(' ', 1) : -1; // as llama.cpp: the first space after the first character
            if (space < 0)
                throw new ArgumentException($"merge {rank} \"{rule}\" is not \"left right\"", nameof(vocabulary));
            string left = rule[..space], right = rule[(space + 1)..];
            if (map.TryGetValue(left, out int l) && map.TryGetValue(right, out int r) && map.TryGetValue(left + right, out int result))
                merges.TryAdd(Key(l, r), (rank, result));
        }

        tokenBytes = new byte[vocabulary.Count][];
        for (int id = 0; id < vocabulary.Count; id++)
        {
            tokenBytes[id] = vocabulary.Types[id] switch
            {
                TokenType.Control => [],
                TokenType.UserDefined => Encoding.UTF8.GetBytes(vocabulary.Tokens[id]),
                _ => ByteLevel.PieceBytes(vocabulary.Tokens[id]),
            };
        }
        splitter = new SpecialTokenSplitter(vocabulary);
        preTokenizer = PreTokenizer.ForName(vocabulary.PreTokenizer);
        ignoreMerges = PreTokenizer.IgnoresMerges(vocabulary.PreTokenizer);
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    public override int[] Encode(string text, bool addBos, bool parseSpecial)
    {
        ArgumentNullException.ThrowIfNull(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos)
            output.Add(RequireBos());
        var words = new List<(int Start, int Length)>();
        foreach (Fragment fragment in splitter.Split(text, parseSpecial))
        {
            if (fragment.IsToken)
            {
                output.Add(fragment.TokenId);
                continue;
            }
            words.Clear();
            preTokenizer.Split(text.AsSpan(fragment.Start, fragment.Length), words);
            foreach (var (start, length) in words)
            {
                string word = text.Substring(fragment.Start + start, length);
                if (!cache.TryGetValue(word, out int[]? ids))
                {
                    ids = EncodeWord(word);
                    if (cache.Count >= MaxCachedWords)
                        cache.Clear();
                    cache.TryAdd(word, ids);
                }
                output.AddRange(ids);
            }
        }
        return [.. output];
    }

    private readonly record struct Bigram(int Left, int Right, int LeftId, int RightId, int Result);

    /// <summary>Queue order, smallest first: lowest merge rank, then leftmost.</summary>
    private static ulong Priority(int rank, int left) => ((ulong)(uint)rank << 32) | (uint)left;

    /// <summary>The ids of one pre-tokenized word.</summary>
    private int[] EncodeWord(string word)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(word);
        if (bytes.Length == 1)
            return [byteTokens[bytes[0]]];
        if (ignoreMerges)
        {
            Span<char> spelled = bytes.Length <= 256 ? stackalloc char[bytes.Length] : new char[bytes.Length];
            for (int i = 0; i < bytes.Length; i++)
                spelled[i] = ByteLevel.ByteToChar[bytes[i]];
            if (pieces.TryGetValue(spelled, out int whole))
                return [whole];
        }

        int count = bytes.Length;
        var ids = new int[count];
        var prev = new int[count];
        var next = new int[count];
        for (int i = 0; i < count; i++)
        {
            ids[i] = byteTokens[bytes[i]];
            prev[i] = i - 1;
            next[i] = i + 1 < count ? i + 1 : -1;
        }
        var queue = new PriorityQueue<Bigram, ulong>();
        for (int i = 1; i < count; i++)
            TryAddBigram(queue, ids, i - 1, i);
        int remaining = count;
        while (queue.TryDequeue(out Bigram bigram, out _))
        {
            int left = bigram.Left, right = bigram.Right;
            // Stale when either side was merged away or changed since the pair was queued.
            if (ids[left] != bigram.LeftId || ids[right] != bigram.RightId || next[left] != right)
                continue;
            ids[left] = bigram.Result;
            ids[right] = -1;
            next[left] = next[right];
            if (next[right] >= 0)
                prev[next[right]] = left;
            remaining--;
            if (prev[left] >= 0)
                TryAddBigram(queue, ids, prev[left], left);
            if (next[left] >= 0)
                TryAddBigram(queue, ids, left, next[left]);
        }

        var result = new int[remaining];
        int k = 0;
        for (int i = 0; i >= 0; i = next[i])
            result[k++] = ids[i];
        return result;
    }

    private void TryAddBigram(PriorityQueue<Bigram, ulong> queue, int[] ids, int left, int right)
    {
        if (merges.TryGetValue(Key(ids[left], ids[right]), out var merge))
            queue.Enqueue(new Bigram(left, right, ids[left], ids[right], merge.Result), Priority(merge.Rank, left));
    }

    public override byte[] TokenBytes(int id)
    {
        CheckId(id);
        return tokenBytes[id];
    }

    public override string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length * 4);
        foreach (int id in ids)
        {
            CheckId(id);
            bytes.AddRange(tokenBytes[id]);
        }
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }
}
