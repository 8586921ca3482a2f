namespace Squeeze.Tokenizers;

/// <summary>Reads a <see cref="Vocabulary"/> from the tokenizer files people have.</summary>
/// <remarks>Every reader validates what it reads: a truncated or corrupt file throws
/// <see cref="Tensors.ModelFormatException"/> naming the file and the problem, never another exception.</remarks>
public static partial class VocabularyReader
{
    /// <summary>Largest tokenizer file read whole into memory (the biggest real ones are a few tens of MB).</summary>
    internal const long MaxFileBytes = 1L << 30;

    /// <summary>llama2.c's <c>tokenizer.bin</c> (or <c>tok512.bin</c>): max token length, then per token a score and a length-prefixed piece.</summary>
    /// <param name="path">The file.</param>
    /// <param name="vocabSize">The number of tokens the file must hold (the checkpoint's <c>vocab_size</c>).</param>
    public static Vocabulary FromLlama2cTokenizer(string path, int vocabSize)
        => FromLlama2cTokenizer(ReadAll(path), vocabSize, path);

    /// <summary>A SentencePiece <c>tokenizer.model</c> protobuf, with the added tokens and chat template of the
    /// <c>tokenizer_config.json</c> beside it when there is one.</summary>
    public static Vocabulary FromSentencePieceModel(string path)
        => WithChatTemplateBeside(WithAddedTokensBeside(FromSentencePieceModel(ReadAll(path), path), path), path);

    /// <summary>A Hugging Face <c>tokenizer.json</c>, with <c>tokenizer_config.json</c> beside it when present (BOS/EOS, add_bos).</summary>
    public static Vocabulary FromTokenizerJson(string path)
    {
        byte[] json = ReadAll(path);
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", "tokenizer_config.json");
        byte[]? config = File.Exists(configPath) ? ReadAll(configPath) : null;
        return WithChatTemplateBeside(FromTokenizerJson(json, config, path), path);
    }

    /// <summary>
    /// <paramref name="vocabulary"/> with the chat template of the Hugging Face files beside <paramref name="path"/>:
    /// <c>chat_template.jinja</c>, else <c>tokenizer_config.json</c>'s <c>chat_template</c> (a string, or a list of
    /// named templates of which "default" is taken). Unchanged when there is none.
    /// </summary>
    private static Vocabulary WithChatTemplateBeside(Vocabulary vocabulary, string path)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        string jinja = Path.Combine(directory, "chat_template.jinja");
        if (File.Exists(jinja))
            return vocabulary.WithChatTemplate(System.Text.Encoding.UTF8.GetString(ReadAll(jinja)));
        string configPath = Path.Combine(directory, "tokenizer_config.json");
        if (!File.Exists(configPath))
            return vocabulary;
        try
        {
            using var config = System.Text.Json.JsonDocument.Parse(SkipUtf8Bom(ReadAll(configPath)).ToArray());
            var root = config.RootElement;
            if (root.ValueKind != System.Text.Json.JsonValueKind.Object || !root.TryGetProperty("chat_template", out var template))
                return vocabulary;
            if (template.ValueKind == System.Text.Json.JsonValueKind.String)
                return vocabulary.WithChatTemplate(template.GetString());
            if (template.ValueKind == System.Text.Json.JsonValueKind.Array)
            {
                foreach (var named in template.EnumerateArray())
                {
                    if (named.ValueKind == System.Text.Json.JsonValueKind.Object && GetString(named, "name") == "default")
                        return vocabulary.WithChatTemplate(GetString(named, "template"));
                }
            }
            throw new Tensors.ModelFormatException(configPath, "chat_template is neither a text nor a list holding one named \"default\"");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new Tensors.ModelFormatException(configPath, "not valid JSON: " + e.Message, e);
        }
    }

    /// <summary><paramref name="vocabulary"/> with the added tokens of the <c>tokenizer_config.json</c> beside
    /// <paramref name="path"/> (its <c>added_tokens_decoder</c>: id → {"content", "special"}), as llama.cpp's converter
    /// adds them to a SentencePiece vocabulary (<see cref="Vocabulary.WithAddedTokens"/>). Unchanged when there are none.</summary>
    private static Vocabulary WithAddedTokensBeside(Vocabulary vocabulary, string path)
    {
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", "tokenizer_config.json");
        if (!File.Exists(configPath))
            return vocabulary;
        try
        {
            using var config = System.Text.Json.JsonDocument.Parse(SkipUtf8Bom(ReadAll(configPath)).ToArray());
            if (config.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object
                || !config.RootElement.TryGetProperty("added_tokens_decoder", out var decoder) || decoder.ValueKind == System.Text.Json.JsonValueKind.Null)
                return vocabulary;
            if (decoder.ValueKind != System.Text.Json.JsonValueKind.Object)
                throw new Tensors.ModelFormatException(configPath, "added_tokens_decoder is not an object of id → token");
            var added = new List<(int, string, bool)>();
            foreach (var entry in decoder.EnumerateObject())
            {
                if (!int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id)
                    || entry.Value.ValueKind != System.Text.Json.JsonValueKind.Object
                    || !entry.Value.TryGetProperty("content", out var content) || content.ValueKind != System.Text.Json.JsonValueKind.String)
                    throw new Tensors.ModelFormatException(configPath, $"added_tokens_decoder entry \"{entry.Name}\" is not an id with a {{\"content\": text}} object");
                bool special = entry.Value.TryGetProperty("special", out var s) && s.ValueKind == System.Text.Json.JsonValueKind.True;
                added.Add((id, content.GetString()!, special));
            }
            return vocabulary.WithAddedTokens(added);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new Tensors.ModelFormatException(configPath, "not valid JSON: " + e.Message, e);
        }
    }

    private static byte[] ReadAll(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            long length = new FileInfo(path).Length;
            if (length > MaxFileBytes)
                throw new Tensors.ModelFormatException(path, $"{length} bytes is too large for a tokenizer file");
            return File.ReadAllBytes(path);
        }
        catch (IOException e) when (e is not FileNotFoundException and not DirectoryNotFoundException)
        {
            throw new Tensors.ModelFormatException(path, "cannot be read: " + e.Message, e);
        }
    }
}
