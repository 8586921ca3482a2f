namespace Squeeze.Tokenizers;

public abstract partial class Tokenizer
{
    /// <summary>The tokenizer for a vocabulary: SentencePiece-style or byte-level BPE by <see cref="Vocabulary.Kind"/>.</summary>
    /// <exception cref="ArgumentException">The vocabulary is inconsistent (array lengths, missing byte tokens or merges).</exception>
    /// <exception cref="NotSupportedException">The byte-level pre-tokenizer is not one of gpt-2, llama-bpe, qwen2.</exception>
    public static Tokenizer Create(Vocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        if (vocabulary.Scores.Length != vocabulary.Count || vocabulary.Types.Length != vocabulary.Count)
            throw new ArgumentException($"vocabulary has {vocabulary.Count} tokens, {vocabulary.Scores.Length} scores and {vocabulary.Types.Length} types", nameof(vocabulary));
        return vocabulary.Kind switch
        {
            TokenizerKind.SentencePiece => new SentencePieceTokenizer(vocabulary),
            TokenizerKind.BytePairEncoding => new BytePairTokenizer(vocabulary),
            _ => throw new NotSupportedException($"tokenizer kind {vocabulary.Kind}"),
        };
    }
}
