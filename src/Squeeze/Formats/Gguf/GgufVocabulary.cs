using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.Gguf;

/// <summary>Reads the <c>tokenizer.ggml.*</c> metadata of a GGUF file as a <see cref="Vocabulary"/>, with llama.cpp's
/// defaults (llama-vocab.cpp) for absent keys.</summary>
public static class GgufVocabulary
{
    // BPE pre-tokenizers for which llama.cpp turns add_bos on when tokenizer.ggml.add_bos_token is absent.
    private static readonly HashSet<string> BpeAddBosByDefault = new(StringComparer.Ordinal)
    {
        "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "tekken", "chameleon",
    };

    /// <summary>
    /// The vocabulary of <paramref name="file"/>. <c>tokenizer.ggml.model</c> "llama" is SentencePiece (defaults: BOS 1,
    /// EOS 2, UNK 0, add BOS, add a space prefix), "gpt2" is byte-level BPE (defaults: BOS = EOS = 11, no UNK, no space
    /// prefix, add BOS only for the Llama-3-style pre-tokenizers). Scores default to zeros and token types to Normal.
    /// Works on vocabulary-only files (no tensors, no architecture).
    /// </summary>
    /// <exception cref="ModelFormatException">Keys are missing, of the wrong type, or inconsistent; or the tokenizer model is not supported.</exception>
    public static Vocabulary Read(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        string model = file.GetString("tokenizer.ggml.model") ?? throw Fail(file, "no 'tokenizer.ggml.model': the file has no vocabulary");
        string[] tokens = file.GetArray<string>("tokenizer.ggml.tokens") ?? throw Fail(file, "no 'tokenizer.ggml.tokens'");
        if (tokens.Length == 0)
            throw Fail(file, "'tokenizer.ggml.tokens' is empty");

        float[] scores = file.GetArray<float>("tokenizer.ggml.scores") ?? new float[tokens.Length];
        if (scores.Length != tokens.Length)
            throw Fail(file, $"'tokenizer.ggml.scores' has {scores.Length} entries for {tokens.Length} tokens");
        int[]? rawTypes = file.GetArray<int>("tokenizer.ggml.token_type");
        var types = new TokenType[tokens.Length];
        if (rawTypes is null)
        {
            Array.Fill(types, TokenType.Normal);
        }
        else
        {
            if (rawTypes.Length != tokens.Length)
                throw Fail(file, $"'tokenizer.ggml.token_type' has {rawTypes.Length} entries for {tokens.Length} tokens");
            for (int i = 0; i < types.Length; i++)
            {
                if (rawTypes[i] is < 0 or > (int)TokenType.Byte)
                    throw Fail(file, $"token {i} has unknown type {rawTypes[i]}");
                types[i] = (TokenType)rawTypes[i];
            }
        }

        string? pre = file.GetString("tokenizer.ggml.pre");
        TokenizerKind kind;
        int bos, eos, unk, pad = -1;
        bool addBos, addSpacePrefix;
        switch (model)
        {
            case "llama":
                kind = TokenizerKind.SentencePiece;
                (bos, eos, unk) = (1, 2, 0);
                addBos = true;
                addSpacePrefix = true;
                break;
            case "gpt2":
                kind = TokenizerKind.BytePairEncoding;
                (bos, eos, unk) = (11, 11, -1);
                addBos = pre is not null && BpeAddBosByDefault.Contains(pre);
                addSpacePrefix = false;
                break;
            default:
                throw Fail(file, $"tokenizer model '{model}' is not supported (only \"llama\" and \"gpt2\")");
        }

        string[]? merges = file.GetArray<string>("tokenizer.ggml.merges");
        if (kind == TokenizerKind.BytePairEncoding && merges is null)
            throw Fail(file, "a gpt2 tokenizer needs 'tokenizer.ggml.merges'");

        return new Vocabulary
        {
            Kind = kind,
            Tokens = tokens,
            Scores = scores,
            Types = types,
            Merges = merges,
            PreTokenizer = pre,
            BosId = TokenId(file, "tokenizer.ggml.bos_token_id", bos, tokens.Length),
            EosId = TokenId(file, "tokenizer.ggml.eos_token_id", eos, tokens.Length),
            UnknownId = TokenId(file, "tokenizer.ggml.unknown_token_id", unk, tokens.Length),
            PaddingId = TokenId(file, "tokenizer.ggml.padding_token_id", pad, tokens.Length),
            AddBos = file.GetBool("tokenizer.ggml.add_bos_token") ?? addBos,
            AddSpacePrefix = file.GetBool("tokenizer.ggml.add_space_prefix") ?? addSpacePrefix,
            ChatTemplate = file.GetString("tokenizer.chat_template"),
            EotId = file.GetInteger("tokenizer.ggml.eot_token_id") is long eot && eot >= 0 && eot < tokens.Length
                ? (int)eot : Vocabulary.FindEndOfTurn(tokens, types),
        };
    }

    /// <summary>Opens <paramref name="path"/> (a model or a vocabulary-only GGUF) and reads its vocabulary.</summary>
    public static Vocabulary Read(string path)
    {
        using var file = GgufFile.Open(path);
        return Read(file);
    }

    // A stored id outside the vocabulary is ignored and the default kept, as llama.cpp does (it only warns).
    private static int TokenId(GgufFile file, string key, int fallback, int count)
    {
        long? id = file.GetInteger(key);
        int result = id is long v && v >= 0 && v < count ? (int)v : fallback;
        return result < count ? result : -1;
    }

    private static ModelFormatException Fail(GgufFile file, string problem) => new(file.Path, problem);
}
