using System.Buffers.Binary;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Tests.Formats;

/// <summary>A NativeBuffer over memory owned by someone else: lets mutation tests parse many lengths of one allocation.</summary>
internal sealed unsafe class ViewBuffer : NativeBuffer
{
    public ViewBuffer(byte* pointer, long length, string origin)
    {
        Pointer = pointer;
        Length = length;
        Origin = origin;
    }

    public override string Origin { get; }

    protected override void Release()
    {
    }
}

/// <summary>A temporary directory deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "squeeze-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        if (Directory.Exists(Path))
            Directory.Delete(Path, recursive: true);
    }
}

internal static class FormatTestHelpers
{
    /// <summary>A SentencePiece-kind vocabulary of <paramref name="count"/> made-up pieces, for loading checkpoints without tokenizer files.</summary>
    public static Vocabulary InlineVocabulary(int count) => new()
    {
        Kind = TokenizerKind.SentencePiece,
        Tokens = [.. Enumerable.Range(0, count).Select(i => i switch { 0 => "<unk>", 1 => "<s>", 2 => "</s>", _ => $"\u2581t{i}" })],
        Scores = [.. Enumerable.Range(0, count).Select(i => -(float)i)],
        Types = [.. Enumerable.Range(0, count).Select(i => i switch { 0 => TokenType.Unknown, 1 or 2 => TokenType.Control, _ => TokenType.Normal })],
        BosId = 1,
        EosId = 2,
        UnknownId = 0,
        AddBos = true,
    };

    /// <summary>A llama2.c file: the seven header ints, then <paramref name="floats"/> floats whose values are their index.</summary>
    public static void WriteLlama2c(string path, int[] header, long floats)
    {
        var bytes = new byte[28 + floats * 4];
        for (int i = 0; i < 7; i++)
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * i), header[i]);
        for (long i = 0; i < floats; i++)
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(28 + 4 * i)), i);
        System.IO.File.WriteAllBytes(path, bytes);
    }

    /// <summary>Floats a llama2.c checkpoint with this header holds after the header, computed term by term as run.c walks it.</summary>
    public static long Llama2cFloats(int dim, int hidden, int layers, int heads, int kvHeads, int vocab, int seq)
    {
        long headSize = dim / heads, kvDim = dim * kvHeads / heads, v = Math.Abs(vocab);
        long n = v * dim;              // token_embedding_table
        n += layers * dim;             // rms_att_weight
        n += layers * dim * dim;       // wq
        n += layers * kvDim * dim;     // wk
        n += layers * kvDim * dim;     // wv
        n += layers * dim * dim;       // wo
        n += layers * dim;             // rms_ffn_weight
        n += layers * hidden * dim;    // w1
        n += layers * dim * hidden;    // w2
        n += layers * hidden * dim;    // w3
        n += dim;                      // rms_final_weight
        n += seq * headSize / 2;       // freq_cis_real
        n += seq * headSize / 2;       // freq_cis_imag
        if (vocab < 0)
            n += v * dim;              // wcls
        return n;
    }
}
