namespace Squeeze.Tokenizers;

/// <summary>Reads a <see cref="Vocabulary"/> from the tokenizer files people have.</summary>
public static class VocabularyReader
{
    /// <summary>llama2.c's <c>tokenizer.bin</c> (or <c>tok512.bin</c>): max token length, then per token a score and a length-prefixed piece.</summary>
    public static Vocabulary FromLlama2cTokenizer(string path, int vocabSize)
        => throw new NotImplementedException("being written on branch tokenizers");

    /// <summary>A SentencePiece <c>tokenizer.model</c> protobuf.</summary>
    public static Vocabulary FromSentencePieceModel(string path)
        => throw new NotImplementedException("being written on branch tokenizers");

    /// <summary>A Hugging Face <c>tokenizer.json</c>, with <c>tokenizer_config.json</c> beside it when present (BOS/EOS, add_bos).</summary>
    public static Vocabulary FromTokenizerJson(string path)
        => throw new NotImplementedException("being written on branch tokenizers");
}
