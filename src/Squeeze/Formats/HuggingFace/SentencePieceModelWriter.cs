using System.Buffers.Binary;
using System.Text;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.HuggingFace;

/// <summary>
/// Writes a SentencePiece <c>tokenizer.model</c> (a <c>ModelProto</c> protobuf) from a SentencePiece-kind
/// <see cref="Vocabulary"/>: the pieces with scores and types, a BPE trainer spec carrying the special ids, and an
/// identity normalizer with the vocabulary's dummy-prefix setting — the fields SentencePiece and Llama tokenizers read.
/// </summary>
internal static class SentencePieceModelWriter
{
    // Field numbers of sentencepiece_model.proto.
    private const int ModelPieces = 1, ModelTrainerSpec = 2, ModelNormalizerSpec = 3;
    private const int PieceText = 1, PieceScore = 2, PieceType = 3;
    private const int TrainerModelType = 3, TrainerVocabSize = 4, TrainerByteFallback = 35;
    private const int TrainerUnkId = 40, TrainerBosId = 41, TrainerEosId = 42, TrainerPadId = 43;
    private const int NormalizerName = 1, NormalizerAddDummyPrefix = 3, NormalizerRemoveExtraWhitespaces = 4, NormalizerEscapeWhitespaces = 5;
    private const int BpeModelType = 2;

    private const int Varint = 0, Fixed32 = 5, LengthDelimited = 2;

    /// <summary>The protobuf bytes of <paramref name="vocabulary"/>.</summary>
    public static byte[] Serialize(Vocabulary vocabulary)
    {
        if (vocabulary.Kind != TokenizerKind.SentencePiece)
            throw new ArgumentException($"a {vocabulary.Kind} vocabulary cannot be written as a SentencePiece model", nameof(vocabulary));
        var model = new MemoryStream();
        var piece = new MemoryStream();
        for (int id = 0; id < vocabulary.Count; id++)
        {
            piece.SetLength(0);
            WriteBytes(piece, PieceText, Encoding.UTF8.GetBytes(vocabulary.Tokens[id]));
            WriteFloat(piece, PieceScore, vocabulary.Scores[id]);
            if (vocabulary.Types[id] != TokenType.Normal)
                WriteVarint(piece, PieceType, (long)(vocabulary.Types[id] == TokenType.Undefined ? TokenType.Normal : vocabulary.Types[id]));
            WriteBytes(model, ModelPieces, piece.ToArray());
        }

        var trainer = new MemoryStream();
        WriteVarint(trainer, TrainerModelType, BpeModelType);
        WriteVarint(trainer, TrainerVocabSize, vocabulary.Count);
        WriteVarint(trainer, TrainerByteFallback, vocabulary.Types.Contains(TokenType.Byte) ? 1 : 0);
        WriteVarint(trainer, TrainerUnkId, vocabulary.UnknownId);
        WriteVarint(trainer, TrainerBosId, vocabulary.BosId);
        WriteVarint(trainer, TrainerEosId, vocabulary.EosId);
        WriteVarint(trainer, TrainerPadId, vocabulary.PaddingId);
        WriteBytes(model, ModelTrainerSpec, trainer.ToArray());

        var normalizer = new MemoryStream();
        WriteBytes(normalizer, NormalizerName, "identity"u8.ToArray());
        WriteVarint(normalizer, NormalizerAddDummyPrefix, vocabulary.AddSpacePrefix ? 1 : 0);
        WriteVarint(normalizer, NormalizerRemoveExtraWhitespaces, 0);
        WriteVarint(normalizer, NormalizerEscapeWhitespaces, 1);
        WriteBytes(model, ModelNormalizerSpec, normalizer.ToArray());
        return model.ToArray();
    }

    private static void WriteKey(Stream s, int field, int wire) => WriteRawVarint(s, (ulong)((field << 3) | wire));

    // int32 fields with negative values are sign-extended to 64 bits, as protobuf encodes them.
    private static void WriteVarint(Stream s, int field, long value)
    {
        WriteKey(s, field, Varint);
        WriteRawVarint(s, (ulong)value);
    }

    private static void WriteFloat(Stream s, int field, float value)
    {
        WriteKey(s, field, Fixed32);
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(b, value);
        s.Write(b);
    }

    private static void WriteBytes(Stream s, int field, byte[] bytes)
    {
        WriteKey(s, field, LengthDelimited);
        WriteRawVarint(s, (ulong)bytes.Length);
        s.Write(bytes);
    }

    private static void WriteRawVarint(Stream s, ulong value)
    {
        while (value >= 0x80)
        {
            s.WriteByte((byte)(value | 0x80));
            value >>= 7;
        }
        s.WriteByte((byte)value);
    }
}
