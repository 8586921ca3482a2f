using System.Globalization;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>
/// The benchmark harness. Each suite prints a Markdown table for docs/BENCHMARKS.md, preceded by the command that
/// reproduces it. Suites: <c>speed</c> (prompt and decode tokens/s of stories15M per weight type against llama.cpp's
/// golden figures), <c>golden</c> (perplexity and KLD of llama.cpp's files against the golden README), <c>mixes</c>
/// (stories15M converted by Squeeze to each named mix, against llama.cpp's same-named files).
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        string suite = args.Length > 0 ? args[0] : "";
        var rest = args.Skip(1).ToArray();
        switch (suite)
        {
            case "speed":
                SpeedSuite.Run(rest);
                return 0;
            case "golden":
                GoldenSuite.Run(rest);
                return 0;
            case "mixes":
                MixesSuite.Run(rest);
                return 0;
            default:
                Console.Error.WriteLine("usage: dotnet run -c Release --project bench/Squeeze.Bench -- speed|golden|mixes [--shared DIR] [--repetitions N]");
                return 2;
        }
    }

    internal static string Shared(string[] args)
    {
        int i = Array.IndexOf(args, "--shared");
        if (i >= 0 && i + 1 < args.Length)
            return args[i + 1];
        string? env = Environment.GetEnvironmentVariable("SQUEEZE_SHARED");
        if (!string.IsNullOrEmpty(env))
            return env;
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Squeeze.slnx")))
                return Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared"));
        }
        throw new DirectoryNotFoundException("shared data not found: pass --shared DIR or set SQUEEZE_SHARED");
    }

    internal static int Option(string[] args, string name, int fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
    }
}

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

/// <summary>Perplexity and KLD of each golden file on tinystories-eval (ctx 256), beside llama.cpp's figures.</summary>
internal static class GoldenSuite
{
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
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- golden --threads {threads}`");
        Console.WriteLine();
        Console.WriteLine("| file | PPL | llama.cpp PPL | Δ | mean KLD | llama.cpp KLD | ratio | same top % | eval tok/s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        using var baseModel = ModelLoader.Load(Path.Combine(shared, "golden", "stories15M-f32.gguf"));
        foreach (var (file, ppl, kld) in Golden)
        {
            using var model = ModelLoader.Load(Path.Combine(shared, "golden", file));
            var options = new EvaluationOptions { ContextLength = 256, Threads = threads };
            var r = Evaluator.Evaluate(model, text, options, kld > 0 ? baseModel : null);
            string kl = r.KlDivergence is { } k ? $"{k.Mean:0.000000} | {kld:0.000000} | {k.Mean / kld:0.000} | {k.SameTopTokenPercent:0.00}" : "– | – | – | –";
            Console.WriteLine($"| {file} | {r.Perplexity:0.0000} | {ppl:0.0000} | {100 * (r.Perplexity / ppl - 1):+0.000;-0.000}% | {kl} | {r.TokensPerSecond:0} |");
        }
    }
}

/// <summary>stories15M converted by Squeeze to every named mix (no imatrix), scored on tinystories-eval (ctx 256)
/// against the f32 model in one pass, beside llama.cpp's figures for its same-named files without imatrix.</summary>
internal static class MixesSuite
{
    // shared/golden/README.md, rows without imatrix: (mix, bytes, perplexity, mean KLD).
    private static readonly (string Mix, long Bytes, double Perplexity, double Kld)[] LlamaCpp =
    [
        ("Q8_0", 16_879_328, 6.5016, 0.001439),
        ("Q6_K", 16_557_920, 6.5131, 0.003257),
        ("Q5_K_M", 15_040_736, 6.5696, 0.020825),
        ("Q5_0", 14_639_840, 6.6772, 0.029895),
        ("Q4_K_M", 14_650_208, 6.6567, 0.032127),
        ("Q4_K_S", 14_494_688, 6.5864, 0.040705),
        ("Q4_0", 13_893_344, 7.0422, 0.115526),
        ("Q3_K_M", 14_028_128, 6.7364, 0.062579),
        ("Q3_K_S", 13_717_088, 7.2767, 0.137484),
    ];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        string directory = Directory.CreateTempSubdirectory("squeeze-mixes-").FullName;
        try
        {
            using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
            var files = new List<string>();
            foreach (var (mix, _, _, _) in LlamaCpp)
            {
                string path = Path.Combine(directory, $"stories15M-{mix}.gguf");
                var plan = Squeeze.Quantization.QuantizationMix.Plan(source, Squeeze.Quantization.QuantizationMix.Parse(mix), [], pure: false);
                Squeeze.Quantization.GgufQuantizer.Write(source, plan, path, importance: null, threads);
                files.Add(path);
            }
            var models = files.Select(f => ModelLoader.Load(f)).ToArray();
            try
            {
                var results = Evaluator.EvaluateMany(models, text, new EvaluationOptions { ContextLength = 256, Threads = threads }, source);
                Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- mixes --threads {threads}` (stories15M.bin converted by `squeeze convert --type MIX`, no imatrix; tinystories-eval, ctx 256)");
                Console.WriteLine();
                Console.WriteLine("| mix | bytes | llama.cpp bytes | PPL | llama.cpp PPL | mean KLD | llama.cpp KLD | KLD ratio | same top % |");
                Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
                for (int i = 0; i < files.Count; i++)
                {
                    var (mix, bytes, ppl, kld) = LlamaCpp[i];
                    var r = results[i];
                    var k = r.KlDivergence!;
                    Console.WriteLine($"| {mix} | {new FileInfo(files[i]).Length:N0} | {bytes:N0} | {r.Perplexity:0.0000} | {ppl:0.0000} | {k.Mean:0.000000} | {kld:0.000000} | {k.Mean / kld:0.000} | {k.SameTopTokenPercent:0.00} |");
                }
            }
            finally
            {
                foreach (var m in models)
                    m.Dispose();
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
