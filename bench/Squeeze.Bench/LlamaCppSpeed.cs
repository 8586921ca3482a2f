using System.Diagnostics;
using LLama.Native;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>
/// llama.cpp's prompt and decode speed on a GGUF file, in this process through LLamaSharp's CPU backend, measured the
/// way <see cref="SpeedBenchmark"/> measures Squeeze's (which is llama-bench's way): a seeded random prompt as one batch,
/// and single-token decode steps, each from a cache holding <c>depth</c> tokens filled untimed before it; the median of
/// the repetitions after one warm-up.
/// </summary>
internal static class LlamaCppSpeed
{
    private static readonly Lock LoadLock = new();
    private static bool loaded;

    /// <summary>The KV-cache types llama.cpp is run with, by Squeeze's policy names: f32, f16 (llama.cpp's default),
    /// q8 (q8_0 keys and values, which needs flash attention) and q4 (q4_0).</summary>
    internal static GGMLType CacheType(string kv) => kv switch
    {
        "f32" => GGMLType.GGML_TYPE_F32,
        "f16" => GGMLType.GGML_TYPE_F16,
        "q8" => GGMLType.GGML_TYPE_Q8_0,
        "q4" => GGMLType.GGML_TYPE_Q4_0,
        _ => throw new ArgumentException($"no llama.cpp cache type for the KV policy {kv} (f32, f16, q8, q4)"),
    };

    /// <summary>Loads the native library once, with llama.cpp's log kept off the table.</summary>
    internal static void EnsureLoaded()
    {
        lock (LoadLock)
        {
            if (loaded)
                return;
            if (!NativeLibraryConfig.LLama.LibraryHasLoaded)
                NativeLibraryConfig.All.WithLogCallback((_, _) => { });
            NativeApi.llama_empty_call();
            loaded = true;
        }
    }

    /// <summary>Median prompt and decode tokens/s of <paramref name="path"/> in llama.cpp on <paramref name="threads"/>
    /// threads (flash attention as llama.cpp decides by default, <paramref name="kv"/> cache).</summary>
    internal static SpeedResult Run(string path, int threads, int promptTokens, int decodeTokens, int repetitions, string kv = "f16", int depth = 0, int seed = 42)
    {
        EnsureLoaded();
        var modelParameters = LLamaModelParams.Default();
        modelParameters.n_gpu_layers = 0;
        using var model = SafeLlamaModelHandle.LoadFromFile(path, modelParameters);
        int vocab = model.Vocab.Count;
        var random = new Random(seed);
        var prompt = new int[promptTokens];
        for (int i = 0; i < prompt.Length; i++)
            prompt[i] = random.Next(vocab);
        var prefill = new int[depth];
        for (int i = 0; i < prefill.Length; i++)
            prefill[i] = random.Next(vocab);

        int batchSize = Math.Max(1, promptTokens);
        var parameters = LLamaContextParams.Default();
        parameters.n_ctx = (uint)(depth + Math.Max(1, Math.Max(promptTokens, decodeTokens)));
        parameters.n_batch = (uint)batchSize;
        parameters.n_ubatch = (uint)batchSize;
        parameters.n_seq_max = 1;
        parameters.n_threads = threads;
        parameters.n_threads_batch = threads;
        parameters.type_k = CacheType(kv);
        parameters.type_v = CacheType(kv);
        using var context = SafeLLamaContextHandle.Create(model, parameters);
        var batch = new LLamaBatch();

        void Decode(ReadOnlySpan<int> tokens, int position)
        {
            batch.Clear();
            for (int i = 0; i < tokens.Length; i++)
                batch.Add((LLamaToken)tokens[i], position + i, (LLamaSeqId)0, logits: i == tokens.Length - 1);
            var result = context.Decode(batch);
            if (result != DecodeResult.Ok)
                throw new InvalidOperationException($"llama.cpp could not decode {tokens.Length} tokens at {position} with {path}: {result}");
        }

        void Fill()
        {
            context.MemoryClear(true);
            for (int at = 0; at < prefill.Length; at += batchSize)
                Decode(prefill.AsSpan(at, Math.Min(batchSize, prefill.Length - at)), at);
            context.Synchronize();
        }

        var promptRates = new List<double>();
        var decodeRates = new List<double>();
        var single = new int[1];
        for (int r = 0; r <= repetitions; r++)
        {
            Fill();
            long start = Stopwatch.GetTimestamp();
            if (promptTokens > 0)
                Decode(prompt, depth);
            context.Synchronize();
            double promptSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;

            Fill();
            start = Stopwatch.GetTimestamp();
            for (int i = 0; i < decodeTokens; i++)
            {
                single[0] = prompt.Length > 0 ? prompt[i % prompt.Length] : i % vocab;
                Decode(single, depth + i);
            }
            context.Synchronize();
            double decodeSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (r == 0)
                continue;
            promptRates.Add(promptTokens / Math.Max(promptSeconds, 1e-9));
            decodeRates.Add(decodeTokens / Math.Max(decodeSeconds, 1e-9));
        }
        return new SpeedResult(threads, promptTokens, SpeedBenchmark.Median(promptRates), decodeTokens, SpeedBenchmark.Median(decodeRates));
    }
}
