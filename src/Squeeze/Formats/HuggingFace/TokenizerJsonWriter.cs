using System.Text.Encodings.Web;
using System.Text.Json;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.HuggingFace;

/// <summary>
/// Writes a Hugging Face <c>tokenizer.json</c> from a byte-level BPE <see cref="Vocabulary"/> (GGUF "gpt2", whether it
/// was read from a tokenizer.json or a GGUF file), in the shape Llama 3's and Qwen's files have, so that
/// <see cref="VocabularyReader.FromTokenizerJson(string)"/> reads back the same tokens, ids, types and merges and the
/// same ids come out of any text, and transformers' fast tokenizer tokenizes as the original:
/// <list type="bullet">
/// <item>model: BPE, <c>vocab</c> (the normal tokens and the control/user-defined ones below the last normal id, in id
/// order), <c>merges</c> as "left right" strings in rank order, <c>ignore_merges</c> for the pre-tokenizers that set it
/// (Llama 3's), <c>unk_token</c> when the vocabulary has one;</item>
/// <item>added_tokens: every control token (special) and user-defined token (not special) with its id — those past
/// the vocab are only here, as in Llama 3's and Qwen's files, whose special tokens follow the vocab's ids;</item>
/// <item>normalizer: NFC for "qwen2" (Qwen's files have it; Squeeze's tokenizer, like llama.cpp's, does not normalize),
/// else none; pre-tokenizer: a Split of the <c>tokenizer.ggml.pre</c> name's regex (GPT-2's, Llama 3's or Qwen 2's),
/// then ByteLevel without its own regex; decoder ByteLevel; post-processor: a TemplateProcessing that puts BOS first
/// when the vocabulary adds it, else ByteLevel.</item>
/// </list>
/// Ids no token holds (a padding piece "[PAD{id}]" of type unused, as llama.cpp's converter and the reader name a hole
/// or the embedding rows past the tokenizer) are left out: the file has fewer tokens than the embedding has rows, as a
/// Qwen checkpoint's has, and readers pad it to config.json's vocab_size again. BOS, EOS, padding, add_bos and the chat
/// template go into tokenizer_config.json (<see cref="HuggingFaceWriter"/>).
/// </summary>
internal static class TokenizerJsonWriter
{
    /// <summary>Writes <paramref name="vocabulary"/> (of the model at <paramref name="source"/>, which refusals name) as
    /// tokenizer.json to <paramref name="destination"/>.</summary>
    /// <exception cref="ArgumentException">The vocabulary is not byte-level BPE, or has no merges.</exception>
    /// <exception cref="NotSupportedException">A token has a type a tokenizer.json cannot say (unknown, byte, undefined,
    /// unused other than a padding piece), two tokens of the vocab share a piece, or the pre-tokenizer is not supported.</exception>
    public static void Write(Vocabulary vocabulary, string source, Stream destination)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        ArgumentNullException.ThrowIfNull(destination);
        if (vocabulary.Kind != TokenizerKind.BytePairEncoding)
            throw new ArgumentException($"a {vocabulary.Kind} vocabulary cannot be written as a byte-level tokenizer.json", nameof(vocabulary));
        string[] merges = vocabulary.Merges ?? throw new ArgumentException("the byte-level vocabulary has no merges", nameof(vocabulary));
        string pre;
        try
        {
            pre = PreTokenizer.CanonicalName(vocabulary.PreTokenizer);
        }
        catch (NotSupportedException e)
        {
            throw new NotSupportedException($"{source}: {e.Message}", e);
        }

        // Which ids go where: padding pieces nowhere, added tokens in added_tokens, and the vocab runs to the last normal id.
        int lastNormal = -1;
        for (int id = 0; id < vocabulary.Count; id++)
        {
            TokenType type = vocabulary.Types[id];
            switch (type)
            {
                case TokenType.Normal:
                    lastNormal = id;
                    break;
                case TokenType.Control or TokenType.UserDefined:
                    break;
                case TokenType.Unused when vocabulary.Tokens[id] == Vocabulary.PaddingPiece(id):
                    break;
                default:
                    throw new NotSupportedException($"{source}: token {id} \"{vocabulary.Tokens[id]}\" is {type}; a byte-level tokenizer.json holds normal, control and user-defined tokens only");
            }
        }
        bool Padding(int id) => vocabulary.Types[id] == TokenType.Unused;
        bool Added(int id) => vocabulary.Types[id] is TokenType.Control or TokenType.UserDefined;

        using var w = new Utf8JsonWriter(destination, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        w.WriteStartObject();
        w.WriteString("version", "1.0");
        w.WriteNull("truncation");
        w.WriteNull("padding");

        w.WriteStartArray("added_tokens");
        for (int id = 0; id < vocabulary.Count; id++)
        {
            if (!Added(id))
                continue;
            w.WriteStartObject();
            w.WriteNumber("id", id);
            w.WriteString("content", vocabulary.Tokens[id]);
            w.WriteBoolean("single_word", false);
            w.WriteBoolean("lstrip", false);
            w.WriteBoolean("rstrip", false);
            w.WriteBoolean("normalized", false);
            w.WriteBoolean("special", vocabulary.Types[id] == TokenType.Control);
            w.WriteEndObject();
        }
        w.WriteEndArray();

        if (pre == "qwen2")
        {
            w.WriteStartObject("normalizer");
            w.WriteString("type", "NFC");
            w.WriteEndObject();
        }
        else
        {
            w.WriteNull("normalizer");
        }

        w.WriteStartObject("pre_tokenizer");
        w.WriteString("type", "Sequence");
        w.WriteStartArray("pretokenizers");
        w.WriteStartObject();
        w.WriteString("type", "Split");
        w.WriteStartObject("pattern");
        w.WriteString("Regex", PreTokenizer.PatternForName(pre));
        w.WriteEndObject();
        w.WriteString("behavior", "Isolated");
        w.WriteBoolean("invert", false);
        w.WriteEndObject();
        WriteByteLevel(w, null);
        w.WriteEndArray();
        w.WriteEndObject();

        if (vocabulary.AddBos && vocabulary.BosId >= 0)
            WriteBosTemplate(w, vocabulary.Tokens[vocabulary.BosId], vocabulary.BosId);
        else
            WriteByteLevel(w, "post_processor");
        WriteByteLevel(w, "decoder");

        w.WriteStartObject("model");
        w.WriteString("type", "BPE");
        w.WriteNull("dropout");
        if (vocabulary.UnknownId >= 0)
            w.WriteString("unk_token", vocabulary.Tokens[vocabulary.UnknownId]);
        else
            w.WriteNull("unk_token");
        w.WriteNull("continuing_subword_prefix");
        w.WriteNull("end_of_word_suffix");
        w.WriteBoolean("fuse_unk", false);
        w.WriteBoolean("byte_fallback", false);
        w.WriteBoolean("ignore_merges", PreTokenizer.IgnoresMerges(pre));
        w.WriteStartObject("vocab");
        var seen = new Dictionary<string, int>(lastNormal + 1, StringComparer.Ordinal);
        for (int id = 0; id <= lastNormal; id++)
        {
            if (Padding(id))
                continue;
            string piece = vocabulary.Tokens[id];
            if (!seen.TryAdd(piece, id))
                throw new NotSupportedException($"{source}: tokens {seen[piece]} and {id} are both \"{piece}\"; a tokenizer.json vocab holds each piece once");
            w.WriteNumber(piece, id);
        }
        w.WriteEndObject();
        w.WriteStartArray("merges");
        foreach (string merge in merges)
            w.WriteStringValue(merge);
        w.WriteEndArray();
        w.WriteEndObject();

        w.WriteEndObject();
    }

    // A ByteLevel component with its own regex off: the Split before it has cut the words (Llama 3's and Qwen's shape).
    private static void WriteByteLevel(Utf8JsonWriter w, string? property)
    {
        if (property is null)
            w.WriteStartObject();
        else
            w.WriteStartObject(property);
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", false);
        w.WriteBoolean("trim_offsets", false);
        w.WriteBoolean("use_regex", false);
        w.WriteEndObject();
    }

    // The post-processor that puts BOS before a sequence (and before each of a pair), as Meta's Llama 3 tokenizer.json has it.
    private static void WriteBosTemplate(Utf8JsonWriter w, string bos, int bosId)
    {
        void Special(int typeId)
        {
            w.WriteStartObject();
            w.WriteStartObject("SpecialToken");
            w.WriteString("id", bos);
            w.WriteNumber("type_id", typeId);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        void Sequence(string id, int typeId)
        {
            w.WriteStartObject();
            w.WriteStartObject("Sequence");
            w.WriteString("id", id);
            w.WriteNumber("type_id", typeId);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteStartObject("post_processor");
        w.WriteString("type", "TemplateProcessing");
        w.WriteStartArray("single");
        Special(0);
        Sequence("A", 0);
        w.WriteEndArray();
        w.WriteStartArray("pair");
        Special(0);
        Sequence("A", 0);
        Special(1);
        Sequence("B", 1);
        w.WriteEndArray();
        w.WriteStartObject("special_tokens");
        w.WriteStartObject(bos);
        w.WriteString("id", bos);
        w.WriteStartArray("ids");
        w.WriteNumberValue(bosId);
        w.WriteEndArray();
        w.WriteStartArray("tokens");
        w.WriteStringValue(bos);
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
