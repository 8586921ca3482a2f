namespace Squeeze.Tokenizers;

public abstract partial class Tokenizer
{
    /// <summary>The tokenizer for a vocabulary: SentencePiece-style or byte-level BPE by <see cref="Vocabulary.Kind"/>.</summary>
    public static Tokenizer Create(Vocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        throw new NotImplementedException("tokenizers are being written (helper: tokenizers)");
    }
}
