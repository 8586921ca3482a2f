using System.Diagnostics;
using System.Globalization;
using Squeeze.Formats;
using Squeeze.Kernels;
using Squeeze.Runtime;
using Squeeze.Weights;

namespace Squeeze.Bench;

/// <summary>
/// What a loaded model costs in memory, model by model: the managed heap (after a full compacting collection), private
/// resident memory (RssAnon) and file-backed resident memory (RssFile: mapped weights' pages, which the system may drop
/// and read again) after loading, after making its runtime, and after a prompt and a decode step; with
/// <c>--speed</c>, <see cref="SpeedBenchmark"/>'s prompt and decode tokens/s besides; with <c>--products N</c>, every
/// uniform weight's one-token product as loaded against the same codes copied into arrays in the heap (N passes over the
/// weights per round, the two alternating for 9 rounds, one thread): what reading a native file's codes from its mapping
/// costs. Each model is loaded in a method of its own, so the one before is unreachable when the next is measured.
/// </summary>
internal static class LoadMemorySuite
{
    /// <summary><c>load-memory --model A,B,… [--threads N] [--ctx N] [--speed] [--products N]</c>.</summary>
    public static void Run(string[] args)
    {
        string[] models = (Program.Value(args, "--model") ?? throw new ArgumentException("load-memory needs --model PATH[,PATH…]")).Split(',');
        int threads = Program.Option(args, "--threads", 2), context = Program.Option(args, "--ctx", 256);
        bool speed = args.Contains("--speed");
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- load-memory {string.Join(' ', args)}` ({threads} threads, context {context})");
        Console.WriteLine();
        Console.WriteLine($"| model | after | managed heap MB | RssAnon MB | RssFile MB |{(speed ? " prompt tok/s | decode tok/s |" : "")}");
        Console.WriteLine($"|---|---|---|---|---|{(speed ? "---|---|" : "")}");
        Console.WriteLine($"| (none) | start | {Memory()} |{(speed ? " | |" : "")}");
        foreach (string path in models)
            Measure(path, threads, context, speed);
        int passes = Program.Option(args, "--products", 0);
        if (passes > 0)
        {
            Console.WriteLine();
            Console.WriteLine("| model | uniform weights | arrays ms per pass | mapped ms per pass | mapped / arrays, median of 9 rounds (range) |");
            Console.WriteLine("|---|---|---|---|---|");
            foreach (string path in models)
                CompareProducts(path, passes);
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void CompareProducts(string path, int passes)
    {
        using var model = ModelLoader.Load(path);
        var loaded = model.Weights.OfType<UniformWeight>().ToList();
        if (loaded.Count == 0)
            return;
        var copies = loaded.Select(u => new UniformWeight(u.Name, u.Rows, u.Columns, u.UniformScheme, u.Codes.ToArray(), u.Scales.ToArray(), u.Mins.ToArray())).ToList();
        using var context = new ComputeContext(1);
        var random = new Random(1);
        var x = new float[loaded.Max(w => w.Columns)];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(random.NextDouble() * 2 - 1);
        var y = new float[loaded.Max(w => w.Rows)];
        double Time(List<UniformWeight> weights)
        {
            var clock = Stopwatch.StartNew();
            for (int pass = 0; pass < passes; pass++)
            {
                foreach (var w in weights)
                    w.Multiply(x.AsSpan(0, w.Columns), 1, context, y.AsSpan(0, w.Rows));
            }
            return clock.Elapsed.TotalMilliseconds / passes;
        }
        Time(loaded);
        Time(copies);
        var rounds = Enumerable.Range(0, 9).Select(_ =>
        {
            double arrays = Time(copies);
            return (Arrays: arrays, Mapped: Time(loaded));
        }).ToList();
        var ratios = rounds.Select(r => r.Mapped / r.Arrays).Order().ToList();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"| {Path.GetFileName(Path.TrimEndingDirectorySeparator(path))} | {loaded.Count} | {rounds.Select(r => r.Arrays).Order().ElementAt(4):0.00} | {rounds.Select(r => r.Mapped).Order().ElementAt(4):0.00} | {ratios[4]:0.000} ({ratios[0]:0.000}–{ratios[^1]:0.000}) |"));
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void Measure(string path, int threads, int context, bool speed)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(path));
        string? tokenizer = path.EndsWith(".bin", StringComparison.Ordinal) ? Path.Combine(Path.GetDirectoryName(path)!, "tokenizer.model") : null;
        string blank = speed ? " | |" : "";
        using var model = ModelLoader.Load(path, tokenizer);
        Console.WriteLine($"| {name} | load | {Memory()} |{blank}");
        using (var runtime = new Transformer(model, new RuntimeOptions { Threads = threads, ContextLength = context }))
        {
            Console.WriteLine($"| {name} | runtime | {Memory()} |{blank}");
            runtime.Forward([1, 450, 4996, 2501, 338, 263, 931], 1);
            runtime.Forward([29889], 1);
            Console.WriteLine($"| {name} | 7-token prompt, 1 decode step | {Memory()} |{blank}");
        }
        if (speed)
        {
            var result = SpeedBenchmark.Run(model, threads, promptTokens: 64, decodeTokens: 64, repetitions: 3);
            Console.WriteLine($"| {name} | speed benchmark (prompt 64, decode 64, 3 repetitions) | {Memory()} | {result.PromptTokensPerSecond:0.0} | {result.DecodeTokensPerSecond:0.0} |");
        }
    }

    /// <summary>"heap | RssAnon | RssFile" in MB after a full compacting collection.</summary>
    private static string Memory()
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long file = 0;
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("RssFile:", StringComparison.Ordinal))
                file = long.Parse(line["RssFile:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
        return string.Create(CultureInfo.InvariantCulture, $"{GC.GetTotalMemory(false) / 1e6:0.0} | {MemorySampler.RssAnon() / 1e6:0} | {file / 1e6:0}");
    }
}
