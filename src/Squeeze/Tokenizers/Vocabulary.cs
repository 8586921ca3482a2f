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
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>
/// Everything a tokenizer is made from, in the shape GGUF stores it (<c>tokenizer.ggml.*</c>), whatever file it was
/// read from: llama2.c <c>tokenizer.bin</c>, SentencePiece <c>tokenizer.model</c>, Hugging Face <c>tokenizer.json</c>, GGUF.
/// </summary>
public sealed class Vocabulary
{
    public required TokenizerKind Kind { get; init; }

    /// <summary>Token pieces, by id. SentencePiece pieces use U+2581 for a space; byte-level BPE pieces use GPT-2's byte-to-unicode map.</summary>
    public required string[] Tokens { get; init; }

    /// <summary>Merge priority of each piece (SentencePiece), or zeros.</summary>
    public required float[] Scores { get; init; }

    public required TokenType[] Types { get; init; }

    /// <summary>Ranked merges "a b" (byte-level BPE only).</summary>
    public string[]? Merges { get; init; }

    /// <summary>GGUF <c>tokenizer.ggml.pre</c>: the pre-tokenizer's name ("gpt-2", "llama-bpe", "qwen2", "default").</summary>
    public string? PreTokenizer { get; init; }

    public int BosId { get; init; } = -1;

    public int EosId { get; init; } = -1;

    public int UnknownId { get; init; } = -1;

    public int PaddingId { get; init; } = -1;

    /// <summary>Whether a BOS token starts every encoded text.</summary>
    public bool AddBos { get; init; }

    /// <summary>SentencePiece: prepend a space to the text before encoding (llama's "add_dummy_prefix").</summary>
    public bool AddSpacePrefix { get; init; } = true;

    public int Count => Tokens.Length;
}
