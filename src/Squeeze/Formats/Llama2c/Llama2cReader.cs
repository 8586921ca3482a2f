using System.Buffers.Binary;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.Llama2c;

/// <summary>The seven int32 values that open a legacy (version 0) llama2.c checkpoint, as run.c reads them.</summary>
/// <param name="Dim">Model width.</param>
/// <param name="HiddenDim">Feed-forward width.</param>
/// <param name="LayerCount">Number of layers.</param>
/// <param name="HeadCount">Query heads.</param>
/// <param name="KvHeadCount">Key/value heads.</param>
/// <param name="VocabSize">Vocabulary size as stored: negative when the classifier is not shared with the embedding.</param>
/// <param name="SeqLen">Context length.</param>
public readonly record struct Llama2cHeader(int Dim, int HiddenDim, int LayerCount, int HeadCount, int KvHeadCount, int VocabSize, int SeqLen)
{
    /// <summary>Bytes of the header.</summary>
    public const int Size = 7 * sizeof(int);

    /// <summary>True when the output classifier reuses the token embedding (stored vocab size positive).</summary>
    public bool SharedClassifier => VocabSize > 0;

    /// <summary>Values per attention head.</summary>
    public int HeadDim => Dim / HeadCount;

    /// <summary>Width of the key and value projections.</summary>
    public int KvDim => Dim / HeadCount * KvHeadCount;
}

/// <summary>
/// Loads a llama2.c checkpoint (the legacy "version 0" layout that run.c reads) as a <see cref="Model"/>. Every
/// tensor is an F32 view into the memory-mapped file; nothing is copied. q/k rows are in Meta's interleaved rotary
/// order, so the model has <see cref="RopeStyle.Interleaved"/>.
/// </summary>
public static class Llama2cReader
{
    // Sanity limits: far above any real llama2.c export, far below what would overflow the size arithmetic.
    private const int MaxDim = 1 << 20;
    private const int MaxLayers = 4096;
    private const int MaxVocab = 1 << 24;
    private const int MaxSeqLen = 1 << 24;

    /// <summary>Reads <paramref name="path"/>; the tokenizer is <paramref name="tokenizerPath"/> or found beside the
    /// checkpoint (<c>tokenizer.bin</c>, then <c>tok{vocab}.bin</c>, then <c>tokenizer.model</c>).</summary>
    /// <exception cref="FileNotFoundException">The checkpoint or the given tokenizer does not exist.</exception>
    /// <exception cref="ModelFormatException">The checkpoint is malformed, or no tokenizer was found.</exception>
    public static Model Load(string path, string? tokenizerPath = null)
        => Load(path, header => ReadVocabulary(path, tokenizerPath, header));

    /// <summary>Reads the checkpoint <paramref name="path"/> with an already loaded <paramref name="vocabulary"/>.</summary>
    public static Model Load(string path, Vocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        return Load(path, _ => vocabulary);
    }

    /// <summary>Reads and validates only the header of <paramref name="path"/>.</summary>
    public static Llama2cHeader ReadHeader(string path)
    {
        using var buffer = MapExisting(path);
        var header = ParseHeader(buffer);
        Validate(header, buffer);
        return header;
    }

    /// <summary>The tokenizer file used when none is given: the first of <c>tokenizer.bin</c>, <c>tok{vocabSize}.bin</c>,
    /// <c>tokenizer.model</c> beside <paramref name="checkpointPath"/> that exists, or null.</summary>
    public static string? FindTokenizer(string checkpointPath, int vocabSize)
        => TokenizerCandidates(checkpointPath, vocabSize).FirstOrDefault(File.Exists);

    private static Model Load(string path, Func<Llama2cHeader, Vocabulary> vocabulary)
    {
        var buffer = MapExisting(path);
        try
        {
            var (config, tensors) = Read(buffer);
            var header = ParseHeader(buffer);
            var vocab = vocabulary(header);
            if (vocab.Count > config.VocabSize)
                throw new ModelFormatException(path, $"the vocabulary has {vocab.Count} tokens but the checkpoint's embedding has only {config.VocabSize} rows");
            return new Model(config, vocab, tensors, path, [buffer]);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    private static NativeBuffer MapExisting(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"llama2.c checkpoint {path} does not exist", path);
        return NativeBuffer.MapFile(path);
    }

    private static IEnumerable<string> TokenizerCandidates(string checkpointPath, int vocabSize)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(checkpointPath)) ?? ".";
        yield return Path.Combine(dir, "tokenizer.bin");
        yield return Path.Combine(dir, $"tok{vocabSize}.bin");
        yield return Path.Combine(dir, "tokenizer.model");
    }

    private static Vocabulary ReadVocabulary(string checkpointPath, string? tokenizerPath, Llama2cHeader header)
    {
        int vocabSize = Math.Abs(header.VocabSize);
        string? path = tokenizerPath;
        if (path is null)
        {
            path = FindTokenizer(checkpointPath, vocabSize);
            if (path is null)
            {
                string looked = string.Join(", ", TokenizerCandidates(checkpointPath, vocabSize));
                throw new ModelFormatException(checkpointPath, $"no tokenizer found; looked for {looked}; pass the tokenizer path explicitly");
            }
        }
        else if (!File.Exists(path))
        {
            throw new FileNotFoundException($"tokenizer {path} does not exist", path);
        }
        return Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".model" => VocabularyReader.FromSentencePieceModel(path),
            ".json" => VocabularyReader.FromTokenizerJson(path),
            _ => VocabularyReader.FromLlama2cTokenizer(path, vocabSize),
        };
    }

    /// <summary>Parses and validates a checkpoint held in <paramref name="buffer"/>: the config and the tensors viewing it.</summary>
    internal static (ModelConfig Config, List<Tensor> Tensors) Read(NativeBuffer buffer)
    {
        var h = ParseHeader(buffer);
        Validate(h, buffer);
        long dim = h.Dim, hidden = h.HiddenDim, kvDim = h.KvDim;
        int layers = h.LayerCount, vocab = Math.Abs(h.VocabSize);

        var tensors = new List<Tensor>(9 * layers + 3);
        long offset = Llama2cHeader.Size;
        Tensor Take(string name, params long[] shape)
        {
            var t = new Tensor(name, GgmlType.F32, shape, buffer, offset);
            offset += t.ByteLength;
            return t;
        }
        void PerLayer(Func<int, string> name, params long[] shape)
        {
            for (int l = 0; l < layers; l++)
                tensors.Add(Take(name(l), shape));
        }

        tensors.Add(Take(TensorNames.TokenEmbedding, vocab, dim)); // [vocab, dim]
        PerLayer(TensorNames.AttentionNorm, dim);                 // rms_att [L, dim]
        PerLayer(TensorNames.Query, dim, dim);                    // wq [L, dim, dim]
        PerLayer(TensorNames.Key, kvDim, dim);                    // wk [L, kv_dim, dim]
        PerLayer(TensorNames.Value, kvDim, dim);                  // wv [L, kv_dim, dim]
        PerLayer(TensorNames.AttentionOutput, dim, dim);          // wo [L, dim, dim]
        PerLayer(TensorNames.FeedForwardNorm, dim);               // rms_ffn [L, dim]
        PerLayer(TensorNames.Gate, hidden, dim);                  // w1 [L, hidden, dim]
        PerLayer(TensorNames.Down, dim, hidden);                  // w2 [L, dim, hidden]
        PerLayer(TensorNames.Up, hidden, dim);                    // w3 [L, hidden, dim]
        tensors.Add(Take(TensorNames.OutputNorm, dim));           // rms_final [dim]
        offset += 2L * h.SeqLen * (h.HeadDim / 2) * sizeof(float); // freq_cis_real, freq_cis_imag [seq, head_size/2]: unused
        if (!h.SharedClassifier)
            tensors.Add(Take(TensorNames.Output, vocab, dim));    // wcls [vocab, dim]

        var config = new ModelConfig
        {
            Architecture = "llama",
            Dim = h.Dim,
            HiddenDim = h.HiddenDim,
            LayerCount = h.LayerCount,
            HeadCount = h.HeadCount,
            KvHeadCount = h.KvHeadCount,
            HeadDim = h.HeadDim,
            VocabSize = vocab,
            ContextLength = h.SeqLen,
            RopeTheta = 10000f,
            RopeStyle = RopeStyle.Interleaved,
            RmsNormEps = 1e-5f,
            TiedEmbeddings = h.SharedClassifier,
        };
        return (config, tensors);
    }

    private static Llama2cHeader ParseHeader(NativeBuffer buffer)
    {
        if (buffer.Length < Llama2cHeader.Size)
            throw new ModelFormatException(buffer.Origin, $"file is {buffer.Length} bytes, shorter than the {Llama2cHeader.Size}-byte llama2.c header");
        Span<int> v = stackalloc int[7];
        var b = buffer.Span(0, Llama2cHeader.Size);
        for (int i = 0; i < v.Length; i++)
            v[i] = BinaryPrimitives.ReadInt32LittleEndian(b[(4 * i)..]);
        return new Llama2cHeader(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    }

    /// <summary>Bytes a checkpoint with header <paramref name="h"/> must have (the header must be validated first).</summary>
    internal static long ExpectedBytes(Llama2cHeader h)
    {
        long dim = h.Dim, hidden = h.HiddenDim, kvDim = h.KvDim, layers = h.LayerCount, vocab = Math.Abs((long)h.VocabSize);
        long floats = checked(
            vocab * dim                                  // token_embedding
            + layers * (2 * dim                          // rms_att, rms_ffn
                        + 2 * dim * dim                  // wq, wo
                        + 2 * kvDim * dim                // wk, wv
                        + 3 * hidden * dim)              // w1, w2, w3
            + dim                                        // rms_final
            + 2L * h.SeqLen * (h.HeadDim / 2)            // freq_cis_real, freq_cis_imag
            + (h.SharedClassifier ? 0 : vocab * dim));   // wcls
        return checked(Llama2cHeader.Size + floats * sizeof(float));
    }

    private static void Validate(Llama2cHeader h, NativeBuffer buffer)
    {
        string file = buffer.Origin;
        string header = $"dim={h.Dim} hidden_dim={h.HiddenDim} n_layers={h.LayerCount} n_heads={h.HeadCount} n_kv_heads={h.KvHeadCount} vocab_size={h.VocabSize} seq_len={h.SeqLen}";
        void Fail(string problem) => throw new ModelFormatException(file, $"{problem} (header: {header})");

        // "ak42" little-endian: the magic of llama2.c's newer export versions, which run.c does not read.
        if (h.Dim == 0x616b3432)
            Fail($"this is a llama2.c version {h.HiddenDim} export (magic \"ak42\"); only the legacy version 0 layout that run.c reads is supported");
        if (h.Dim <= 0 || h.Dim > MaxDim)
            Fail($"dim {h.Dim} is not in [1, {MaxDim}]");
        if (h.HiddenDim <= 0 || h.HiddenDim > 4 * MaxDim)
            Fail($"hidden_dim {h.HiddenDim} is not in [1, {4 * MaxDim}]");
        if (h.LayerCount <= 0 || h.LayerCount > MaxLayers)
            Fail($"n_layers {h.LayerCount} is not in [1, {MaxLayers}]");
        if (h.HeadCount <= 0 || h.HeadCount > h.Dim)
            Fail($"n_heads {h.HeadCount} is not in [1, dim]");
        if (h.Dim % h.HeadCount != 0)
            Fail($"n_heads {h.HeadCount} does not divide dim {h.Dim}");
        if (h.HeadDim % 2 != 0)
            Fail($"head size {h.HeadDim} is odd; rotary embedding needs pairs");
        if (h.KvHeadCount <= 0 || h.KvHeadCount > h.HeadCount)
            Fail($"n_kv_heads {h.KvHeadCount} is not in [1, n_heads]");
        if (h.HeadCount % h.KvHeadCount != 0)
            Fail($"n_kv_heads {h.KvHeadCount} does not divide n_heads {h.HeadCount}");
        if (h.VocabSize == 0 || h.VocabSize < -MaxVocab || h.VocabSize > MaxVocab)
            Fail($"vocab_size {h.VocabSize} is not in [1, {MaxVocab}] (negative when the classifier is unshared)");
        if (h.SeqLen <= 0 || h.SeqLen > MaxSeqLen)
            Fail($"seq_len {h.SeqLen} is not in [1, {MaxSeqLen}]");

        long expected = ExpectedBytes(h);
        if (buffer.Length != expected)
        {
            long diff = buffer.Length - expected;
            Fail(diff < 0
                ? $"file is {buffer.Length} bytes but the header implies {expected}: {-diff} bytes missing (truncated?)"
                : $"file is {buffer.Length} bytes but the header implies {expected}: {diff} unexpected bytes at the end");
        }
    }
}
