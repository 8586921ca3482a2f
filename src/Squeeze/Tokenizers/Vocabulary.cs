namespace Squeeze.Tokenizers;

/// <summary>Which algorithm turns text into tokens.</summary>
public enum TokenizerKind
{
    /// <summary>SentencePiece-style BPE over scored pieces with byte fallback (Llama 2, llama2.c; GGUF "llama").</summary>
    SentencePiece,

    /// <summary>Byte-level BPE with ranked merges (GPT-2, Llama 3, Qwen 2; GGUF "gpt2").</summary>
    BytePairEncoding,
}

/// <summary>Token types, numbered as GGUF's <c>tokenizer.ggml.token_type</c> numbers them.</summary>
public enum TokenType
{
    /// <summary>No type given.</summary>
    Undefined = 0,

    /// <summary>An ordinary piece.</summary>
    Normal = 1,

    /// <summary>The unknown token (&lt;unk&gt;).</summary>
    Unknown = 2,

    /// <summary>A control token (BOS, EOS, chat markers): decodes to nothing; recognised in text only with parse_special.</summary>
    Control = 3,

    /// <summary>A user-defined token: always cut out of the text whole, decodes to its text.</summary>
    UserDefined = 4,

    /// <summary>A reserved, unused id.</summary>
    Unused = 5,

    /// <summary>A byte-fallback token "&lt;0xNN&gt;" (SentencePiece): decodes to that byte.</summary>
    Byte = 6,
}

/// <summary>
/// Everything a tokenizer is made from, in the shape GGUF stores it (<c>tokenizer.ggml.*</c>), whatever file it was
/// read from: llama2.c <c>tokenizer.bin</c>, SentencePiece <c>tokenizer.model</c>, Hugging Face <c>tokenizer.json</c>, GGUF.
/// </summary>
public sealed class Vocabulary
{
    /// <summary>Which algorithm the vocabulary is for.</summary>
    public required TokenizerKind Kind { get; init; }

    /// <summary>Token pieces, by id. SentencePiece pieces use U+2581 for a space; byte-level BPE pieces use GPT-2's byte-to-unicode map.</summary>
    public required string[] Tokens { get; init; }

    /// <summary>Merge priority of each piece (SentencePiece), or zeros.</summary>
    public required float[] Scores { get; init; }

    /// <summary>Type of each token, by id.</summary>
    public required TokenType[] Types { get; init; }

    /// <summary>Ranked merges "a b" (byte-level BPE only).</summary>
    public string[]? Merges { get; init; }

    /// <summary>GGUF <c>tokenizer.ggml.pre</c>: the pre-tokenizer's name ("gpt-2", "llama-bpe", "qwen2", "default").</summary>
    public string? PreTokenizer { get; init; }

    /// <summary>Beginning-of-sequence token, or -1.</summary>
    public int BosId { get; init; } = -1;

    /// <summary>End-of-sequence token, or -1.</summary>
    public int EosId { get; init; } = -1;

    /// <summary>Unknown token, or -1.</summary>
    public int UnknownId { get; init; } = -1;

    /// <summary>Padding token, or -1.</summary>
    public int PaddingId { get; init; } = -1;

    /// <summary>Whether a BOS token starts every encoded text.</summary>
    public bool AddBos { get; init; }

    /// <summary>SentencePiece: prepend a space to the text before encoding (llama's "add_dummy_prefix").</summary>
    public bool AddSpacePrefix { get; init; } = true;

    /// <summary>The model's chat template as its files carry it (Hugging Face <c>tokenizer_config.json</c>'s
    /// <c>chat_template</c>, GGUF <c>tokenizer.chat_template</c>): a Jinja text, or a llama.cpp template name; null when
    /// there is none.</summary>
    public string? ChatTemplate { get; init; }

    /// <summary>End-of-turn token (a chat model's end of its answer), or -1. When the file states none, the first of
    /// llama.cpp's end-of-turn texts (<see cref="EndOfTurnTexts"/>) that is a control or user-defined token, as llama.cpp
    /// finds it when it loads a vocabulary.</summary>
    public int EotId
    {
        get => eotId ??= FindEndOfTurn(Tokens, Types);
        init => eotId = value;
    }

    private int? eotId;

    /// <summary>The texts llama.cpp takes for the end-of-turn token when a file names none (llama-vocab.cpp).</summary>
    public static IReadOnlyList<string> EndOfTurnTexts { get; } =
        ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>", "<\uFF5Cend\u2581of\u2581sentence\uFF5C>"];

    /// <summary>Whether <paramref name="id"/> ends a generation: the end-of-sequence or the end-of-turn token.</summary>
    public bool EndsGeneration(int id) => id >= 0 && (id == EosId || id == EotId);

    /// <summary>Number of tokens.</summary>
    public int Count => Tokens.Length;

    /// <summary>The first of <see cref="EndOfTurnTexts"/> that is a control or user-defined token of <paramref name="tokens"/>, or -1.</summary>
    public static int FindEndOfTurn(string[] tokens, TokenType[] types)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(types);
        foreach (string text in EndOfTurnTexts)
        {
            int id = Array.IndexOf(tokens, text);
            if (id >= 0 && types[id] is TokenType.Control or TokenType.UserDefined)
                return id;
        }
        return -1;
    }

    /// <summary>The piece llama.cpp's converter writes for an id the tokenizer does not use: "[PAD{id}]", of type
    /// <see cref="TokenType.Unused"/>.</summary>
    public static string PaddingPiece(int id) => $"[PAD{id}]";

    /// <summary>
    /// This vocabulary with ids [Count, <paramref name="count"/>) added as unused <see cref="PaddingPiece"/> tokens (score 0),
    /// as llama.cpp's converter pads the token list to the embedding's rows (Qwen 2.5 / 3: 151,936 rows, 151,669 tokens),
    /// so that a GGUF file has a token for every row. Itself when it already has <paramref name="count"/> tokens.
    /// </summary>
    public Vocabulary PaddedTo(int count)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, Count);
        if (count == Count)
            return this;
        return With([.. Tokens, .. Enumerable.Range(Count, count - Count).Select(PaddingPiece)], [.. Scores, .. new float[count - Count]],
            [.. Types, .. Enumerable.Repeat(TokenType.Unused, count - Count)], ChatTemplate);
    }

    /// <summary>
    /// This vocabulary with Hugging Face's added tokens, as llama.cpp's converter puts them into a SentencePiece
    /// vocabulary (tokenizer_config.json's <c>added_tokens_decoder</c>): each id whose piece is not already the token's
    /// text gets that text, score −1000 and type <see cref="TokenType.Control"/> when special, else
    /// <see cref="TokenType.UserDefined"/>; ids past the end extend the vocabulary (unused <see cref="PaddingPiece"/>
    /// tokens fill any gap). Itself when nothing changes.
    /// </summary>
    public Vocabulary WithAddedTokens(IReadOnlyList<(int Id, string Content, bool Special)> added)
    {
        ArgumentNullException.ThrowIfNull(added);
        var changes = added.Where(a => a.Id >= Count || Tokens[a.Id] != a.Content).ToList();
        if (changes.Count == 0)
            return this;
        int count = Math.Max(Count, changes.Max(a => a.Id) + 1);
        var tokens = Tokens.Concat(Enumerable.Range(Count, count - Count).Select(PaddingPiece)).ToArray();
        var scores = Scores.Concat(new float[count - Count]).ToArray();
        var types = Types.Concat(Enumerable.Repeat(TokenType.Unused, count - Count)).ToArray();
        foreach (var (id, content, special) in changes)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(id, nameof(added));
            tokens[id] = content;
            scores[id] = -1000f;
            types[id] = special ? TokenType.Control : TokenType.UserDefined;
        }
        return With(tokens, scores, types, ChatTemplate);
    }

    /// <summary>This vocabulary with <see cref="ChatTemplate"/> set to <paramref name="template"/>, sharing its arrays.</summary>
    public Vocabulary WithChatTemplate(string? template) => With(Tokens, Scores, Types, template);

    // This vocabulary with these tokens and chat template, every other property the same.
    private Vocabulary With(string[] tokens, float[] scores, TokenType[] types, string? chatTemplate) => new()
    {
        Kind = Kind,
        Tokens = tokens,
        Scores = scores,
        Types = types,
        Merges = Merges,
        PreTokenizer = PreTokenizer,
        BosId = BosId,
        EosId = EosId,
        UnknownId = UnknownId,
        PaddingId = PaddingId,
        AddBos = AddBos,
        AddSpacePrefix = AddSpacePrefix,
        ChatTemplate = chatTemplate,
        EotId = EotId,
    };
}
