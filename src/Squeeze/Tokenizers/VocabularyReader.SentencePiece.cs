using System.Buffers.Binary;
using System.Text;
using Squeeze.Tensors;

namespace Squeeze.Tokenizers;

public static partial class VocabularyReader
{
    // sentencepiece_model.proto, the fields read here:
    //   ModelProto      { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; NormalizerSpec normalizer_spec = 3; }
    //   SentencePiece   { string piece = 1; float score = 2; Type type = 3 [default NORMAL]; }
    //   TrainerSpec     { ModelType model_type = 3; int32 unk_id = 40 [0]; bos_id = 41 [1]; eos_id = 42 [2]; pad_id = 43 [-1]; }
    //   NormalizerSpec  { bool add_dummy_prefix = 3 [default true]; }
    // Type numbers (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6) equal GGUF's.

    /// <summary>Parses a SentencePiece <c>ModelProto</c>; <paramref name="name"/> names the source in errors.</summary>
    internal static Vocabulary FromSentencePieceModel(ReadOnlySpan<byte> data, string name)
    {
        var tokens = new List<string>();
        var scores = new List<float>();
        var types = new List<TokenType>();
        int modelType = 1, unkId = 0, bosId = 1, eosId = 2, padId = -1;
        bool addDummyPrefix = true;

        var model = new ProtoReader(data, name);
        while (model.Next(out int field, out int wire))
        {
            switch (field, wire)
            {
                case (1, ProtoReader.LengthDelimited):
                    {
                        var piece = new ProtoReader(model.ReadBytes(), name);
                        string? text = null;
                        float score = 0;
                        long type = 1;
                        while (piece.Next(out int f, out int w))
                        {
                            if (f == 1 && w == ProtoReader.LengthDelimited)
                                text = piece.ReadString();
                            else if (f == 2 && w == ProtoReader.Fixed32)
                                score = piece.ReadFloat();
                            else if (f == 3 && w == ProtoReader.Varint)
                                type = piece.ReadVarint();
                            else
                                piece.Skip(w);
                        }
                        if (text is null)
                            throw new ModelFormatException(name, $"piece {tokens.Count} has no text");
                        if (type is < 1 or > 6)
                            throw new ModelFormatException(name, $"piece {tokens.Count} has unknown type {type}");
                        if (!float.IsFinite(score))
                            throw new ModelFormatException(name, $"piece {tokens.Count} has a non-finite score");
                        tokens.Add(text);
                        scores.Add(score);
                        types.Add((TokenType)type);
                        break;
                    }
                case (2, ProtoReader.LengthDelimited):
                    {
                        var trainer = new ProtoReader(model.ReadBytes(), name);
                        while (trainer.Next(out int f, out int w))
                        {
                            if (w != ProtoReader.Varint)
                            {
                                trainer.Skip(w);
                                continue;
                            }
                            long v = trainer.ReadVarint();
                            switch (f)
                            {
                                case 3: modelType = (int)v; break;
                                case 40: unkId = (int)v; break;
                                case 41: bosId = (int)v; break;
                                case 42: eosId = (int)v; break;
                                case 43: padId = (int)v; break;
                            }
                        }
                        break;
                    }
                case (3, ProtoReader.LengthDelimited):
                    {
                        var normalizer = new ProtoReader(model.ReadBytes(), name);
                        while (normalizer.Next(out int f, out int w))
                        {
                            if (f == 3 && w == ProtoReader.Varint)
                                addDummyPrefix = normalizer.ReadVarint() != 0;
                            else
                                normalizer.Skip(w);
                        }
                        break;
                    }
                default:
                    model.Skip(wire);
                    break;
            }
        }

        if (tokens.Count == 0)
            throw new ModelFormatException(name, "no pieces: not a SentencePiece model");
        if (modelType != 2)
            throw new ModelFormatException(name, $"model_type {modelType} is not BPE (2): only BPE SentencePiece models are supported");
        int n = tokens.Count;
        return new Vocabulary
        {
            Kind = TokenizerKind.SentencePiece,
            Tokens = [.. tokens],
            Scores = [.. scores],
            Types = [.. types],
            BosId = ValidId(bosId, n),
            EosId = ValidId(eosId, n),
            UnknownId = ValidId(unkId, n),
            PaddingId = ValidId(padId, n),
            AddBos = ValidId(bosId, n) >= 0,
            AddSpacePrefix = addDummyPrefix,
        };
    }

    private static int ValidId(int id, int count) => id >= 0 && id < count ? id : -1;

    /// <summary>Protobuf wire format, just enough to walk fields; every read is bounds-checked.</summary>
    private ref struct ProtoReader(ReadOnlySpan<byte> data, string name)
    {
        public const int Varint = 0, Fixed64 = 1, LengthDelimited = 2, Fixed32 = 5;

        private readonly ReadOnlySpan<byte> data = data;
        private readonly string name = name;
        private int position;

        /// <summary>Reads the next field key; false at the end.</summary>
        public bool Next(out int field, out int wire)
        {
            field = wire = 0;
            if (position >= data.Length)
                return false;
            long key = ReadVarint();
            wire = (int)(key & 7);
            long number = key >> 3;
            if (number is < 1 or > int.MaxValue)
                throw new ModelFormatException(name, $"invalid protobuf field number {number} at offset {position}");
            field = (int)number;
            return true;
        }

        public long ReadVarint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (position >= data.Length)
                    throw new ModelFormatException(name, "truncated protobuf varint");
                byte b = data[position++];
                result |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80)
                    return (long)result;
            }
            throw new ModelFormatException(name, "protobuf varint longer than 10 bytes");
        }

        public ReadOnlySpan<byte> ReadBytes()
        {
            long length = ReadVarint();
            if (length < 0 || length > data.Length - position)
                throw new ModelFormatException(name, $"protobuf field of {length} bytes overruns the data at offset {position}");
            var bytes = data.Slice(position, (int)length);
            position += (int)length;
            return bytes;
        }

        public string ReadString()
        {
            try
            {
                return StrictUtf8.GetString(ReadBytes());
            }
            catch (DecoderFallbackException e)
            {
                throw new ModelFormatException(name, "protobuf string is not valid UTF-8", e);
            }
        }

        public float ReadFloat()
        {
            if (data.Length - position < 4)
                throw new ModelFormatException(name, "truncated protobuf float");
            float v = BinaryPrimitives.ReadSingleLittleEndian(data[position..]);
            position += 4;
            return v;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case Varint: ReadVarint(); break;
                case Fixed64: Advance(8); break;
                case LengthDelimited: ReadBytes(); break;
                case Fixed32: Advance(4); break;
                default: throw new ModelFormatException(name, $"unsupported protobuf wire type {wire}");
            }
        }

        private void Advance(int count)
        {
            if (data.Length - position < count)
                throw new ModelFormatException(name, "truncated protobuf field");
            position += count;
        }
    }
}
