namespace Squeeze.Tokenizers;

/// <summary>Text to token ids and back, built from a <see cref="Vocabulary"/>.</summary>
public abstract partial class Tokenizer
{
    protected Tokenizer(Vocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        Vocabulary = vocabulary;
    }

    public Vocabulary Vocabulary { get; }

    public int BosId => Vocabulary.BosId;

    public int EosId => Vocabulary.EosId;

    /// <summary>Token ids of <paramref name="text"/>, with BOS first when <paramref name="addBos"/> is set
    /// (as llama.cpp's tokenizer does with add_special).</summary>
    public abstract int[] Encode(string text, bool addBos);

    /// <summary>The bytes a token stands for when decoded (control tokens decode to nothing; byte tokens to their byte).</summary>
    public abstract byte[] TokenBytes(int id);

    /// <summary>Decodes ids to text (invalid UTF-8 becomes U+FFFD). SentencePiece drops the leading space after BOS, as llama.cpp does.</summary>
    public abstract string Decode(ReadOnlySpan<int> ids);
}
