using Squeeze.Evaluation;
using Squeeze.Formats;

namespace Squeeze.Bench;

/// <summary>Perplexity and KLD of each golden file on tinystories-eval (ctx 256), beside llama.cpp's figures.</summary>
internal static class GoldenSuite
{
    /// <summary>One golden file read by Squeeze: llama.cpp's figures (golden README) and Squeeze's.</summary>
    internal sealed record Row(string File, double LlamaPerplexity, double LlamaKld, EvaluationResult Result);

    // shared/golden/README.md: (perplexity, mean KLD against f32).
    private static readonly (string File, double Perplexity, double Kld)[] Golden =
    [
        ("stories15M-f32.gguf", 6.4990, 0),
        ("stories15M-Q8_0.gguf", 6.5016, 0.001439),
        ("stories15M-Q4_0-imatrix.gguf", 6.8543, 0.091786),
        ("stories15M-Q4_K_M-imatrix.gguf", 6.6272, 0.026935),
    ];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- golden --threads {threads}`");
        Console.WriteLine();
        Console.WriteLine("| file | PPL | llama.cpp PPL | Δ | mean KLD | llama.cpp KLD | ratio | same top % | eval tok/s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var (file, ppl, kld, r) in Measure(shared, threads))
        {
            string kl = r.KlDivergence is { } k ? $"{k.Mean:0.000000} | {kld:0.000000} | {k.Mean / kld:0.000} | {k.SameTopTokenPercent:0.00}" : "– | – | – | –";
            Console.WriteLine($"| {file} | {r.Perplexity:0.0000} | {ppl:0.0000} | {100 * (r.Perplexity / ppl - 1):+0.000;-0.000}% | {kl} | {r.TokensPerSecond:0} |");
        }
    }

    /// <summary>Every golden file evaluated on the whole tinystories-eval at ctx 256, the quantized ones against the f32 file.</summary>
    internal static IReadOnlyList<Row> Measure(string shared, int threads)
    {
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        using var baseModel = ModelLoader.Load(Path.Combine(shared, "golden", "stories15M-f32.gguf"));
        var rows = new List<Row>();
        foreach (var (file, ppl, kld) in Golden)
        {
            using var model = ModelLoader.Load(Path.Combine(shared, "golden", file));
            var options = new EvaluationOptions { ContextLength = 256, Threads = threads };
            rows.Add(new Row(file, ppl, kld, Evaluator.Evaluate(model, text, options, kld > 0 ? baseModel : null)));
        }
        return rows;
    }
}
