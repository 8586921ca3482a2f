using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Tuning;

namespace Squeeze.Bench;

/// <summary>
/// End-to-end tuning of a compressed model (issue 8: what post-training encoders leave when their errors add up), arms
/// side by side on one compressed stories15M made by <c>squeeze compress</c> (<c>--model PATH</c>: a native directory,
/// or a GGUF file, whose block types leave only the norms to tune): each arm is
/// <c>SCOPE:CALIBTOKENS:SAMPLEDTOKENS:EPOCHS:LEARNINGRATE</c> (scope norms or weights; sampled tokens per epoch), tuned
/// on tinystories-calib.txt (and text sampled from stories15M) and scored on tinystories-eval against stories15M.
/// Options <c>--arms</c>, <c>--chunks N</c> (default 40), <c>--threads N</c>.
/// </summary>
internal static class TuningSuite
{
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int chunks = Program.Option(args, "--chunks", 40);
        string path = Program.Value(args, "--model") ?? throw new ArgumentException("--model PATH: stories15M compressed by squeeze compress (a native directory or a GGUF file)");
        string arms = Program.Value(args, "--arms") ?? "norms:8192:0:2:0.003,weights:8192:0:2:0.003,weights:8192:65536:2:0.003";
        using var original = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        using var compressed = ModelLoader.Load(path);
        long bytes = Directory.Exists(path) ? Directory.EnumerateFiles(path).Sum(f => new FileInfo(f).Length) : new FileInfo(path).Length;
        string calib = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string eval = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        var evaluation = new EvaluationOptions { MaxChunks = chunks, Threads = threads };

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- tuning --model {path} --threads {threads} --chunks {chunks} --arms {arms}` " +
            $"(stories15M compressed to {bytes:N0} bytes; tuned against stories15M; eval {chunks} chunks of tinystories-eval, ctx 256)");
        Console.WriteLine();
        Console.WriteLine("| scope | calibration tokens | sampled tokens | epochs | learning rate | parameters | kept after step | held-out KLD before → after | eval PPL | eval KLD | seconds |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        var untuned = Evaluator.Evaluate(compressed, eval, evaluation, original);
        Console.WriteLine($"| untuned | | | | | | | | {untuned.Perplexity:0.0000} | {untuned.KlDivergence!.Mean:0.000000} | |");
        foreach (string arm in arms.Split(','))
        {
            var p = arm.Split(':');
            var options = new TuningOptions
            {
                Scope = Enum.Parse<TuningScope>(p[0], ignoreCase: true), Tokens = long.Parse(p[1]), SampledTokens = long.Parse(p[2]), Epochs = int.Parse(p[3]),
                LearningRate = double.Parse(p[4]), Threads = threads,
            };
            var result = Tuner.Tune(original, compressed, calib, options);
            using var tuned = Tuner.Apply(compressed, result);
            var scored = Evaluator.Evaluate(tuned, eval, evaluation, original);
            Console.WriteLine($"| {p[0]} | {options.Tokens:N0} | {options.SampledTokens:N0} | {options.Epochs} | {(result.LearningRate == options.LearningRate ? $"{options.LearningRate}" : $"{options.LearningRate} → {result.LearningRate:0.######}")} | {result.Parameters:N0} | {result.BestStep} | " +
                $"{result.HeldOutKldBefore:0.0000} → {result.HeldOutKldAfter:0.0000} | {scored.Perplexity:0.0000} | {scored.KlDivergence!.Mean:0.000000} | {result.Seconds:0} |");
        }
    }
}
