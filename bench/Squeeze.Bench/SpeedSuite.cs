using System.Globalization;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>Prompt (256 tokens) and decode (128 tokens) speed per weight type and thread count, beside llama-bench's figures.</summary>
internal static class SpeedSuite
{
    // llama-bench on the same kind of 2-core machine (shared/golden/README.md): (prompt 256, decode 128) tokens/s.
    private static readonly Dictionary<(string File, int Threads), (double Prompt, double Decode)> LlamaCpp = new()
    {
        [("stories15M-f32.gguf", 1)] = (4065, 405),
        [("stories15M-f32.gguf", 2)] = (7613, 560),
        [("stories15M-Q8_0.gguf", 1)] = (5267, 995),
        [("stories15M-Q8_0.gguf", 2)] = (9612, 1488),
        [("stories15M-Q4_K_M-imatrix.gguf", 1)] = (4366, 933),
        [("stories15M-Q4_K_M-imatrix.gguf", 2)] = (8076, 1423),
    };

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int repetitions = Program.Option(args, "--repetitions", 5);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- speed --repetitions {repetitions}` (median of {repetitions} runs after a warm-up)");
        Console.WriteLine();
        Console.WriteLine("| weights | threads | prompt 256 tok/s | llama.cpp | ratio | decode 128 tok/s | llama.cpp | ratio |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        foreach (var file in new[] { "stories15M-f32.gguf", "stories15M-Q8_0.gguf", "stories15M-Q4_K_M-imatrix.gguf" })
        {
            using var model = ModelLoader.Load(Path.Combine(shared, "golden", file));
            foreach (int threads in new[] { 1, 2 })
            {
                var r = SpeedBenchmark.Run(model, threads, promptTokens: 256, decodeTokens: 128, repetitions);
                var (p, d) = LlamaCpp[(file, threads)];
                Console.WriteLine($"| {file} | {threads} | {r.PromptTokensPerSecond:0} | {p:0} | {r.PromptTokensPerSecond / p:0.00} | {r.DecodeTokensPerSecond:0} | {d:0} | {r.DecodeTokensPerSecond / d:0.00} |");
            }
        }
    }
}
