namespace Squeeze.Tokenizers;

/// <summary>Text to token ids and back, built from a <see cref="Vocabulary"/>.</summary>
public abstract partial class Tokenizer
{
    /// <summary>Keeps <paramref name="vocabulary"/>; subclasses build their lookup tables from it.</summary>
    protected Tokenizer(Vocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        Vocabulary = vocabulary;
    }

    /// <summary>The vocabulary this tokenizer was built from.</summary>
    public Vocabulary Vocabulary { get; }

    /// <summary>The beginning-of-sequence token, or -1.</summary>
    public int BosId => Vocabulary.BosId;

    /// <summary>The end-of-sequence token, or -1.</summary>
    public int EosId => Vocabulary.EosId;

    /// <summary>Token ids of <paramref name="text"/>, with BOS first when <paramref name="addBos"/> is set
    /// (as llama.cpp's tokenizer does with add_special). Control tokens written in the text are not recognised
    /// (llama.cpp's parse_special = false); user-defined tokens are.</summary>
    public int[] Encode(string text, bool addBos) => Encode(text, addBos, parseSpecial: false);

    /// <summary>Token ids of <paramref name="text"/>; with <paramref name="parseSpecial"/>, control tokens written in the
    /// text ("&lt;s&gt;", "&lt;|endoftext|&gt;") become their ids, as llama.cpp's parse_special does.</summary>
    public abstract int[] Encode(string text, bool addBos, bool parseSpecial);

    /// <summary>The bytes a token stands for when decoded (control tokens decode to nothing; byte tokens to their byte).
    /// The bytes are exact, including partial UTF-8 sequences: concatenating them over an encoding gives the encoded text's
    /// UTF-8 bytes (SentencePiece: preceded by the space <see cref="Vocabulary.AddSpacePrefix"/> added).</summary>
    public abstract byte[] TokenBytes(int id);

    /// <summary>Decodes ids to text (invalid UTF-8 becomes U+FFFD). SentencePiece drops the leading space after BOS, as llama.cpp does.</summary>
    public abstract string Decode(ReadOnlySpan<int> ids);

    /// <summary>Throws unless <paramref name="id"/> is a token of the vocabulary.</summary>
    protected void CheckId(int id)
    {
        if ((uint)id >= (uint)Vocabulary.Count)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id outside the vocabulary of {Vocabulary.Count}");
    }

    /// <summary>The BOS id, or an exception when the vocabulary has none.</summary>
    protected int RequireBos()
        => BosId >= 0 && BosId < Vocabulary.Count ? BosId : throw new InvalidOperationException("the vocabulary has no BOS token");
}
