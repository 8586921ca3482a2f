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

    /// <summary>A SentencePiece <c>tokenizer.model</c> protobuf.</summary>
    public static Vocabulary FromSentencePieceModel(string path)
        => FromSentencePieceModel(ReadAll(path), path);

    /// <summary>A Hugging Face <c>tokenizer.json</c>, with <c>tokenizer_config.json</c> beside it when present (BOS/EOS, add_bos).</summary>
    public static Vocabulary FromTokenizerJson(string path)
    {
        byte[] json = ReadAll(path);
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".", "tokenizer_config.json");
        byte[]? config = File.Exists(configPath) ? ReadAll(configPath) : null;
        return FromTokenizerJson(json, config, path);
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
