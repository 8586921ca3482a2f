using System.Diagnostics;
using LLama;
using LLama.Common;
using LLama.Native;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Runtime;
using Squeeze.SavedCaches;

namespace Squeeze.Bench;

/// <summary>
/// Saved KV caches (CacheGen) of stories15M (llama.cpp's f32 GGUF, ctx 256): prompts of tinystories-eval.txt saved with
/// each storage policy; file bytes per prompt token against llama.cpp's state file for the same tokens (LLamaSharp
/// 0.30.0's <c>SaveState</c>, whole context and one sequence, its default f16 cache), and the KL divergence of the
/// next-token distributions over a continuation after loading each file against loading the lossless one.
/// </summary>
internal static class SavedCacheSuite
{
    private static readonly string[] Policies =
    [
        "f32", "f16", "q8", "q4", "q4:group=64:vgroup=48", "q4:sinks=4:window=32:fp=f16", "q4:sinks=4:group=64:vgroup=48:fp=f16",
        "q2", "q2:sinks=4:window=32:fp=f16", "q2:sinks=4:group=64:vgroup=48:fp=f16",
        "step:0.25:values=0.25", "step:0.0625", "step:0.125", "step:0.1875", "step:0.25", "step:0.375", "step:0.125:sinks=4", "step:0.125:sinks=0", "step:0.5",
        "pre:0.0625:window=0:sinks=1", "pre:0.03:window=0:sinks=1", "pre:0.125:window=0:sinks=1", "pre:0.045:sinks=1", "pre:0.045:window=16", "pre:0.0525:window=16",
        "pre:0.03", "pre:0.04", "pre:0.045", "pre:0.05", "pre:0.06", "pre:0.08", "pre:0.1",
    ];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int prompts = Program.Option(args, "--prompts", 20);
        int promptLength = Program.Option(args, "--prompt-tokens", 200);
        int continuation = Program.Option(args, "--continuation", 32);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        string[] storages = Program.Value(args, "--storages")?.Split(',') ?? Policies;
        string gguf = Path.Combine(shared, "golden", "stories15M-f32.gguf");
        using var model = ModelLoader.Load(gguf);
        const int context = 256;
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = threads, ContextLength = context });
        int[] stream = model.Tokenizer.Encode(File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt")), addBos: false);
        int stride = (stream.Length - promptLength - continuation) / prompts;
        var windows = Enumerable.Range(0, prompts).Select(i => (
            Prompt: (int[])[model.Tokenizer.BosId, .. stream.AsSpan(i * stride, promptLength - 1)],
            Next: stream.AsSpan(i * stride + promptLength - 1, continuation).ToArray())).ToList();

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- saved-cache --prompts {prompts} --prompt-tokens {promptLength} --continuation {continuation} --threads {threads}" +
            (storages == Policies ? "`" : $" --storages {string.Join(',', storages)}`"));
        Console.WriteLine();
        string work = Directory.CreateTempSubdirectory("squeeze-saved-cache-").FullName;
        try
        {
            var (llamaState, llamaSequence) = LlamaStateBytes(gguf, windows[0].Prompt, work, context);
            Console.WriteLine($"llama.cpp's state for the first prompt ({promptLength} tokens, f16 KV cache, ctx {context}): `SaveState(file)` {llamaState:N0} bytes " +
                $"({(double)llamaState / promptLength:0} per token), `SaveState(file, sequence 0)` {llamaSequence:N0} bytes ({(double)llamaSequence / promptLength:0} per token).");
            Console.WriteLine();
            Console.WriteLine("| storage policy | file bytes/token | packed bytes/token (no range coding) | of f16 file | × smaller than f16 | of llama.cpp sequence state | mean KLD | max KLD | same top % | load ms | prefill ms |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
            var policies = storages.Select(SavedCacheStorage.Parse).ToList();
            // the reference: each prompt's lossless file loaded, then the continuation's logits
            var reference = new List<float[]>();
            double prefillMs = 0;
            foreach (var (prompt, next) in windows)
            {
                string path = Path.Combine(work, "f32.kv");
                SavedCache.Save(runtime, prompt, SavedCacheStorage.Lossless, path);
                reference.Add(Continue(runtime, path, prompt, next));
                var clock = Stopwatch.StartNew();
                runtime.Reset();
                runtime.Forward(prompt);
                prefillMs += clock.Elapsed.TotalMilliseconds;
            }
            prefillMs /= windows.Count;
            double f16Bytes = 0;
            foreach (var storage in policies)
            {
                long bytes = 0;
                double loadMs = 0, sumKld = 0, maxKld = 0;
                int positions = 0, sameTop = 0;
                for (int w = 0; w < windows.Count; w++)
                {
                    var (prompt, next) = windows[w];
                    string path = Path.Combine(work, "lossy.kv");
                    bytes += SavedCache.Save(runtime, prompt, storage, path).Bytes;
                    var clock = Stopwatch.StartNew();
                    SavedCache.Load(runtime, path);
                    loadMs += clock.Elapsed.TotalMilliseconds;
                    float[] logits = Continue(runtime, path, prompt, next);
                    int vocab = model.Config.VocabSize;
                    for (int i = 0; i < logits.Length / vocab; i++)
                    {
                        var (kld, same) = Kld(reference[w].AsSpan(i * vocab, vocab), logits.AsSpan(i * vocab, vocab));
                        sumKld += kld;
                        maxKld = Math.Max(maxKld, kld);
                        sameTop += same ? 1 : 0;
                        positions++;
                    }
                }
                double perToken = (double)bytes / windows.Count / promptLength;
                if (storage.Policy?.Kind == KvCacheKind.Float16)
                    f16Bytes = perToken;
                string packed = storage.Policy is { } policy ? $"{PackedBytes(policy, model.Config, promptLength - 1) / promptLength:0}" : "";
                Console.WriteLine($"| `{storage}` | {perToken:0} | {packed} | {(f16Bytes > 0 ? $"{perToken / f16Bytes:0.0%}" : "")} | {(f16Bytes > 0 ? $"{f16Bytes / perToken:0.00}" : "")} | " +
                    $"{perToken * promptLength / llamaSequence:0.0%} | {sumKld / positions:0.000000} | {maxKld:0.0000} | {100.0 * sameTop / positions:0.00} | {loadMs / windows.Count:0.0} | {prefillMs:0.0} |");
            }
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>Loads <paramref name="path"/> and runs the prompt's last token and the continuation: their logits, [1 + next.Length − 1, vocab]
    /// (the distributions of the continuation's tokens).</summary>
    private static float[] Continue(Transformer runtime, string path, int[] prompt, int[] next)
    {
        var loaded = SavedCache.Load(runtime, path);
        int[] rest = [.. prompt.AsSpan(loaded.Positions), .. next[..^1]];
        return runtime.Forward(rest, next.Length).ToArray();
    }

    private static (double Kld, bool SameTop) Kld(ReadOnlySpan<float> p, ReadOnlySpan<float> q)
    {
        var lp = new float[p.Length];
        var lq = new float[q.Length];
        LogSoftmax.Compute(p, lp);
        LogSoftmax.Compute(q, lq);
        double kld = 0;
        int topP = 0, topQ = 0;
        for (int i = 0; i < lp.Length; i++)
        {
            kld += Math.Exp(lp[i]) * (lp[i] - lq[i]);
            if (lp[i] > lp[topP])
                topP = i;
            if (lq[i] > lq[topQ])
                topQ = i;
        }
        return (Math.Max(0, kld), topP == topQ);
    }

    /// <summary>What the stored positions would take with the policy's codes packed at N bits and scales, minimums and
    /// full-precision rows raw, without the range coder: the gain the entropy coding brings.</summary>
    private static double PackedBytes(KvCachePolicy policy, Squeeze.Models.ModelConfig config, int positions)
    {
        int kvDim = config.KvDim;
        if (policy.Kind != KvCacheKind.Quantized)
            return (double)config.LayerCount * positions * kvDim * 2 * (policy.Kind == KvCacheKind.Float16 ? 2 : 4);
        int sinks = Math.Min(policy.Sinks, positions);
        int quantized = policy.Group * (Math.Max(0, positions - sinks - policy.Window) / policy.Group);
        int full = positions - quantized;
        int splits = (config.HeadDim + policy.ValueGroup - 1) / policy.ValueGroup;
        double codes = 2.0 * quantized * kvDim * policy.Bits / 8;
        double scales = 4.0 * kvDim * quantized / policy.Group + 4.0 * quantized * config.KvHeadCount * splits;
        return config.LayerCount * (codes + scales + 2.0 * full * kvDim * (policy.HalfFullRows ? 2 : 4));
    }

    /// <summary>llama.cpp's state after the same prompt: the bytes of <c>SaveState(file)</c> (the whole context: tokens, logits, every
    /// sequence's cache) and <c>SaveState(file, sequence)</c> (one sequence's cache), with its default f16 cache.</summary>
    private static (long State, long Sequence) LlamaStateBytes(string gguf, int[] tokens, string work, int context)
    {
        NativeApi.llama_empty_call();
        var parameters = new ModelParams(gguf) { ContextSize = (uint)context, GpuLayerCount = 0, BatchSize = (uint)context, Threads = 1 };
        using var weights = LLamaWeights.LoadFromFile(parameters);
        using var llama = weights.CreateContext(parameters);
        var batch = new LLamaBatch();
        for (int i = 0; i < tokens.Length; i++)
            batch.Add((LLamaToken)tokens[i], i, (LLamaSeqId)0, logits: i == tokens.Length - 1);
        if (llama.NativeHandle.Decode(batch) != DecodeResult.Ok)
            throw new InvalidOperationException($"llama.cpp could not decode the prompt with {gguf}");
        string state = Path.Combine(work, "llama.state"), sequence = Path.Combine(work, "llama.seq");
        llama.SaveState(state);
        llama.SaveState(sequence, (LLamaSeqId)0);
        return (new FileInfo(state).Length, new FileInfo(sequence).Length);
    }
}
