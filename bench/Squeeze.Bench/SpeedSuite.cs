using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>Prompt (256 tokens) and decode (128 tokens) speed per weight type and thread count, beside llama.cpp's on the
/// same file measured in the same run (LLamaSharp's CPU backend, <see cref="LlamaCppSpeed"/>), and decode's share of the
/// memory bandwidth (weight bytes read per token × tokens/s ÷ a STREAM-like copy). Each tool runs its default KV cache:
/// f32 in Squeeze, f16 in llama.cpp (llama-bench's default).</summary>
internal static class SpeedSuite
{
    private const string Q4_0Pure = "stories15M-Q4_0-pure.gguf";

    /// <summary>The benchmarked files: llama.cpp's f32, Q8_0 and Q4_K_M files, and a pure Q4_0 file Squeeze writes
    /// from the f32 one into a temporary directory (the golden README's llama-bench Q4_0 figures are for <c>--pure</c>).</summary>
    internal static string[] Files(string shared)
    {
        string golden = Path.Combine(shared, "golden");
        string q4 = Path.Combine(Path.GetTempPath(), "squeeze-bench", Q4_0Pure);
        if (!File.Exists(q4))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(q4)!);
            using var f32 = ModelLoader.Load(Path.Combine(golden, "stories15M-f32.gguf"));
            string partial = q4 + $".{Environment.ProcessId}.tmp";
            GgufQuantizer.Write(f32, QuantizationMix.Plan(f32, QuantizationMix.Q4_0, [], pure: true), partial);
            File.Move(partial, q4, overwrite: true);
        }
        return [Path.Combine(golden, "stories15M-f32.gguf"), Path.Combine(golden, "stories15M-Q8_0.gguf"), q4, Path.Combine(golden, "stories15M-Q4_K_M-imatrix.gguf")];
    }

    /// <summary><see cref="Files"/>, or with <c>--files Q8_0,Q4_0</c> only those whose names contain one of the parts.</summary>
    internal static string[] Selected(string[] args, string shared)
    {
        string[] only = Program.Value(args, "--files")?.Split(',') ?? [];
        return Files(shared).Where(f => only.Length == 0 || only.Any(o => Path.GetFileName(f).Contains(o, StringComparison.OrdinalIgnoreCase))).ToArray();
    }

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int repetitions = Program.Option(args, "--repetitions", 5);
        // --threads 1: one thread count
        int[] threadCounts = Program.Value(args, "--threads") is { } t ? [int.Parse(t, CultureInfo.InvariantCulture)] : [1, 2];
        var files = Selected(args, shared);
        var bandwidth = threadCounts.ToDictionary(n => n, CopyBandwidth);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- speed {string.Join(' ', args)}` (median of {repetitions} runs after a warm-up; "
            + "each row: Squeeze, then llama.cpp through LLamaSharp, on the same file; each tool's default KV cache, f32 in Squeeze and f16 in llama.cpp)");
        Console.WriteLine();
        Console.WriteLine($"STREAM-like copy (256 MiB, read + write counted): {string.Join(", ", bandwidth.Select(b => $"{b.Value:0.0} GB/s on {b.Key} thread(s)"))}.");
        Console.WriteLine();
        Console.WriteLine("| weights | threads | prompt 256 tok/s | llama.cpp | ratio | decode 128 tok/s | llama.cpp | ratio | MB read/token | decode GB/s | of copy |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var file in files)
        {
            using var model = ModelLoader.Load(file);
            double bytesPerToken = WeightBytesPerToken(model);
            string name = Path.GetFileName(file);
            foreach (int threads in threadCounts)
            {
                var (r, llama) = Measure(model, file, threads, repetitions);
                double p = llama.PromptTokensPerSecond, d = llama.DecodeTokensPerSecond;
                double gbs = bytesPerToken * r.DecodeTokensPerSecond / 1e9;
                Console.WriteLine($"| {name} | {threads} | {r.PromptTokensPerSecond:0} | {p:0} | {r.PromptTokensPerSecond / p:0.00} | {r.DecodeTokensPerSecond:0} | {d:0} | {r.DecodeTokensPerSecond / d:0.00} | {bytesPerToken / 1e6:0.00} | {gbs:0.0} | {gbs / bandwidth[threads]:0%} |");
            }
        }
    }

    /// <summary>Prompt (256 tokens) and decode (128 tokens) speed of <paramref name="model"/>, loaded from
    /// <paramref name="file"/>, then of llama.cpp on the same file, each the median of <paramref name="repetitions"/> after a warm-up.</summary>
    internal static (SpeedResult Squeeze, SpeedResult LlamaCpp) Measure(Model model, string file, int threads, int repetitions)
        => (SpeedBenchmark.Run(model, threads, promptTokens: 256, decodeTokens: 128, repetitions),
            LlamaCppSpeed.Run(file, threads, promptTokens: 256, decodeTokens: 128, repetitions, kv: "f16"));

    /// <summary>Weight bytes one decode step reads: every matrix of every layer, the classifier, one embedding row (the
    /// stored bytes of a native model's weights as of a GGUF file's tensors).</summary>
    internal static double WeightBytesPerToken(Model model)
    {
        var stored = model.Tensors.Select(t => (t.Name, Bytes: (double)t.ByteLength, Rows: (double)t.Rows))
            .Concat(model.Weights.Select(w => (w.Name, Bytes: (double)w.StoredBytes, Rows: (double)w.Rows))).ToList();
        double bytes = stored.Sum(t => t.Name == TensorNames.TokenEmbedding ? t.Bytes / t.Rows : t.Bytes);
        if (!stored.Any(t => t.Name == TensorNames.Output))
            bytes += stored.Single(t => t.Name == TensorNames.TokenEmbedding).Bytes; // tied: the embedding is the classifier
        return bytes;
    }

    /// <summary>Copy bandwidth like STREAM's "Copy" (bytes read + bytes written per second) over a buffer far larger than
    /// the caches, split across <paramref name="threads"/> threads; best of 5.</summary>
    internal static unsafe double CopyBandwidth(int threads)
    {
        const nuint bytes = 256u << 20;
        byte* a = (byte*)NativeMemory.AlignedAlloc(bytes, 64), b = (byte*)NativeMemory.AlignedAlloc(bytes, 64);
        try
        {
            new Span<byte>(a, (int)bytes).Fill(1);
            double best = 0;
            for (int r = 0; r < 6; r++)
            {
                long start = Stopwatch.GetTimestamp();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
                {
                    long from = (long)bytes * i / threads, to = (long)bytes * (i + 1) / threads;
                    Buffer.MemoryCopy(a + from, b + from, to - from, to - from);
                });
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                if (r > 0)
                    best = Math.Max(best, 2.0 * (long)bytes / seconds / 1e9);
            }
            return best;
        }
        finally
        {
            NativeMemory.AlignedFree(a);
            NativeMemory.AlignedFree(b);
        }
    }
}
