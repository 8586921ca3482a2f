using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Squeeze.Tensors;

namespace Squeeze.Tokenizers;

public static partial class VocabularyReader
{
    /// <summary>Longest piece llama2.c files are allowed to declare (real ones: 27 bytes; 64 KiB is far beyond any real token).</summary>
    private const int MaxLlama2cTokenLength = 1 << 16;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Parses llama2.c tokenizer bytes; <paramref name="name"/> names the source in errors.</summary>
    /// <remarks>
    /// llama2.c's exporter writes spaces as ' ' (SentencePiece's U+2581 becomes a space), BOS and EOS as "\n&lt;s&gt;\n" and
    /// "\n&lt;/s&gt;\n", and, in the 32000-token file, the byte tokens 3..258 as the character with that code point
    /// (tok512.bin keeps "&lt;0xNN&gt;"). These are mapped back to SentencePiece's pieces, so the vocabulary matches the
    /// <c>tokenizer.model</c> it was exported from.
    /// </remarks>
    internal static Vocabulary FromLlama2cTokenizer(ReadOnlySpan<byte> data, int vocabSize, string name)
    {
        if (vocabSize < 3)
            throw new ModelFormatException(name, $"vocabulary size {vocabSize} is too small (need <unk>, <s>, </s>)");
        if (data.Length < 4)
            throw new ModelFormatException(name, "truncated: no max_token_length header");
        int maxTokenLength = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxTokenLength is <= 0 or > MaxLlama2cTokenLength)
            throw new ModelFormatException(name, $"max_token_length {maxTokenLength} is out of range 1..{MaxLlama2cTokenLength}");
        // Each token takes at least 8 bytes: a size that cannot fit is rejected before allocating anything.
        if ((long)vocabSize * 8 > data.Length - 4)
            throw new ModelFormatException(name, $"{data.Length} bytes cannot hold {vocabSize} tokens");

        var tokens = new string[vocabSize];
        var scores = new float[vocabSize];
        var types = new TokenType[vocabSize];
        int offset = 4;
        for (int id = 0; id < vocabSize; id++)
        {
            if (data.Length - offset < 8)
                throw new ModelFormatException(name, $"truncated at token {id} of {vocabSize} (offset {offset})");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data[offset..]);
            int length = BinaryPrimitives.ReadInt32LittleEndian(data[(offset + 4)..]);
            offset += 8;
            if (!float.IsFinite(score))
                throw new ModelFormatException(name, $"token {id} has a non-finite score {score}");
            if (length < 0 || length > maxTokenLength)
                throw new ModelFormatException(name, $"token {id} has length {length}, outside 0..{maxTokenLength}");
            if (length > data.Length - offset)
                throw new ModelFormatException(name, $"truncated in token {id} of {vocabSize}: {length} bytes declared, {data.Length - offset} left");
            ReadOnlySpan<byte> raw = data.Slice(offset, length);
            offset += length;
            (tokens[id], types[id]) = Llama2cPiece(raw, id, name);
            scores[id] = score;
        }
        if (offset != data.Length)
            throw new ModelFormatException(name, $"{data.Length - offset} bytes after the {vocabSize} tokens: the vocabulary size does not match the file");

        return new Vocabulary
        {
            Kind = TokenizerKind.SentencePiece,
            Tokens = tokens,
            Scores = scores,
            Types = types,
            BosId = 1,
            EosId = 2,
            UnknownId = 0,
            AddBos = true,
            AddSpacePrefix = true,
        };
    }

    private static (string Piece, TokenType Type) Llama2cPiece(ReadOnlySpan<byte> raw, int id, string name)
    {
        switch (id)
        {
            case 0:
                return ("<unk>", TokenType.Unknown);
            case 1:
                return ("<s>", TokenType.Control);
            case 2:
                return ("</s>", TokenType.Control);
        }
        if (id < 3 + 256 && raw.Length == 1 && raw[0] == id - 3)
            return (ByteTokenPiece(raw[0]), TokenType.Byte); // a raw byte, possibly not valid UTF-8 on its own
        string text;
        try
        {
            text = StrictUtf8.GetString(raw);
        }
        catch (DecoderFallbackException e)
        {
            throw new ModelFormatException(name, $"token {id} is not valid UTF-8", e);
        }
        if (TryParseByteToken(text, out _))
            return (text, TokenType.Byte);
        if (id < 3 + 256 && text.Length == 1 && text[0] == id - 3)
            return (ByteTokenPiece((byte)(id - 3)), TokenType.Byte);
        return (text.Replace(' ', SentencePieceTokenizer.SpaceMark), TokenType.Normal);
    }

    /// <summary>"&lt;0xNN&gt;", SentencePiece's name for a byte-fallback token (upper-case hex, as llama.cpp formats it).</summary>
    internal static string ByteTokenPiece(byte b) => string.Create(CultureInfo.InvariantCulture, $"<0x{b:X2}>");

    /// <summary>Whether <paramref name="piece"/> is "&lt;0xNN&gt;" (hex digits of either case), and the byte it names.</summary>
    internal static bool TryParseByteToken(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }
}
