using System.Text;
using LLama.Native;

namespace Squeeze.Tests.Infrastructure;

/// <summary>
/// llama.cpp itself (the build LLamaSharp.Backend.Cpu ships) as the judge of Squeeze's GGUF files, runtime and
/// tokenizers: loads a GGUF file, tokenizes with llama.cpp's tokenizer, and returns the logits of every position of a
/// token sequence. One thread, f32 KV cache and no flash attention, so the logits are reproducible and compare with
/// Squeeze's f32 cache.
/// </summary>
public sealed class LlamaCpp : IDisposable
{
    private static readonly Lock LoadLock = new();
    private static bool configured;

    private readonly SafeLlamaModelHandle model;

    private LlamaCpp(string path, SafeLlamaModelHandle model)
    {
        Path = path;
        this.model = model;
    }

    /// <summary>The GGUF file this model came from.</summary>
    public string Path { get; }

    /// <summary>Tokens in llama.cpp's vocabulary (the logits' width).</summary>
    public int VocabSize => model.Vocab.Count;

    /// <summary>llama.cpp's special tokens and flags of the loaded vocabulary (BOS, EOS, EOT, add BOS …).</summary>
    public SafeLlamaModelHandle.Vocabulary Vocabulary => model.Vocab;

    /// <summary>The chat template llama.cpp found in the file (<c>tokenizer.chat_template</c>), or null.</summary>
    public string? ChatTemplate => model.GetTemplate(null, strict: false);

    /// <summary>Loads <paramref name="path"/> with llama.cpp; <paramref name="vocabOnly"/> reads the tokenizer alone.
    /// A file llama.cpp refuses throws with its path.</summary>
    public static LlamaCpp Load(string path, bool vocabOnly = false)
    {
        Configure();
        var parameters = LLamaModelParams.Default();
        parameters.n_gpu_layers = 0;
        parameters.vocab_only = vocabOnly;
        parameters.check_tensors = true;
        try
        {
            return new LlamaCpp(path, SafeLlamaModelHandle.LoadFromFile(path, parameters));
        }
        catch (Exception e) when (e is LLama.Exceptions.RuntimeError or LLama.Exceptions.LoadWeightsFailedException)
        {
            throw new InvalidOperationException($"llama.cpp refuses {path}: {e.Message}", e);
        }
    }

    /// <summary>llama.cpp's token ids for <paramref name="text"/>: <paramref name="addSpecial"/> adds BOS (and EOS)
    /// when the vocabulary asks for them, <paramref name="parseSpecial"/> turns special-token text into its token.</summary>
    public int[] Tokenize(string text, bool addSpecial, bool parseSpecial)
    {
        var tokens = model.Tokenize(text, addSpecial, parseSpecial, Encoding.UTF8);
        return [.. tokens.Select(t => (int)t)];
    }

    /// <summary>Runs <paramref name="tokens"/> at positions 0, 1, … in a fresh context and returns the logits of every
    /// position, [tokens.Length, VocabSize] row-major.</summary>
    public float[] Logits(ReadOnlySpan<int> tokens)
    {
        var parameters = LLamaContextParams.Default();
        parameters.n_ctx = (uint)tokens.Length;
        parameters.n_batch = (uint)tokens.Length;
        parameters.n_ubatch = (uint)tokens.Length;
        parameters.n_seq_max = 1;
        parameters.n_threads = 1;
        parameters.n_threads_batch = 1;
        parameters.type_k = GGMLType.GGML_TYPE_F32;
        parameters.type_v = GGMLType.GGML_TYPE_F32;
        parameters.llama_flash_attn_type = LLamaFlashAttentionType.LLAMA_FLASH_ATTENTION_TYPE_DISABLED;
        using var context = SafeLLamaContextHandle.Create(model, parameters);
        var batch = new LLamaBatch();
        for (int i = 0; i < tokens.Length; i++)
            batch.Add((LLamaToken)tokens[i], i, (LLamaSeqId)0, logits: true);
        var result = context.Decode(batch);
        if (result != DecodeResult.Ok)
            throw new InvalidOperationException($"llama.cpp could not decode {tokens.Length} tokens with {Path}: {result}");
        int vocab = VocabSize;
        var logits = new float[tokens.Length * vocab];
        for (int i = 0; i < tokens.Length; i++)
            context.GetLogitsIth(i).CopyTo(logits.AsSpan(i * vocab, vocab));
        return logits;
    }

    public void Dispose() => model.Dispose();

    /// <summary>Loads the native library (once per process) before a direct call that needs no model.</summary>
    public static void EnsureLoaded() => Configure();

    /// <summary>Once per process: keep llama.cpp's log off the test output, then load the native library (LLamaSharp
    /// picks the variant for the CPU: avx512 here) before any direct call into it.</summary>
    private static void Configure()
    {
        lock (LoadLock)
        {
            if (configured)
                return;
            if (!NativeLibraryConfig.LLama.LibraryHasLoaded)
                NativeLibraryConfig.All.WithLogCallback((_, _) => { });
            NativeApi.llama_empty_call();
            configured = true;
        }
    }
}
