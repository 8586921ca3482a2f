using System.Diagnostics;
using System.Globalization;
using static Squeeze.Bench.NativeMemorySuite;
using Squeeze.Allocation;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;

namespace Squeeze.Bench;

/// <summary>
/// The GGUF size target's estimate (<see cref="Allocator.EstimateGguf(Models.ModelConfig, IReadOnlyList{ValueTuple{string, long[]}}, AllocationOptions, long)"/>)
/// at the TinyLlama-1.1B and Llama-3.1-8B shapes from their configs alone (nothing written), then beside a run of the
/// job in process on stories15M or a cached random checkpoint (<c>--shape</c>): <see cref="Allocator.Prepare"/>, the
/// search, and the write (from the candidate file, or GPTQ of the chosen types when the candidates are roundings;
/// <c>--plan</c> stops after the search, as <c>squeeze plan</c> does). Its peak private memory (RssAnon, sampled every
/// 50 ms and charged to the stage the job last reported) is set against each stage's estimate.
/// </summary>
internal static class GgufMemorySuite
{
    /// <summary><c>gguf-memory [--bpw X] [--method gptq|imatrix|rtn] [--tokens N] [--ctx N] [--threads N]
    /// [--swaps auto|all|sampled] [--candidates auto|method|rounding] [--search knapsack|evo] [--shape NAME] [--cache DIR]
    /// [--plan] [--estimates-only]</c>.</summary>
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int tokens = Program.Option(args, "--tokens", 1024), ctx = Program.Option(args, "--ctx", 256), threads = Program.Option(args, "--threads", 2);
        double bpw = double.Parse(Program.Value(args, "--bpw") ?? "4.5", CultureInfo.InvariantCulture);
        var method = Enum.Parse<CompressionMethod>(Program.Value(args, "--method") ?? "gptq", ignoreCase: true);
        var swaps = Enum.Parse<SwapMeasurement>(Program.Value(args, "--swaps") ?? "auto", ignoreCase: true);
        var candidates = Enum.Parse<CandidateEncoding>(Program.Value(args, "--candidates") ?? "auto", ignoreCase: true);
        var search = (Program.Value(args, "--search") ?? "knapsack") == "evo" ? SearchMethod.Evolution : SearchMethod.Knapsack;
        bool plan = args.Contains("--plan");
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- gguf-memory {string.Join(' ', args)}` "
            + $"(GGUF size target {bpw:0.0##} bpw, {method.ToString().ToLowerInvariant()}, {ctx}-token chunks, {threads} threads)");
        var options = new AllocationOptions
        {
            Compression = new CompressionOptions { Method = method, CalibrationTokens = tokens, ContextLength = ctx, Threads = threads },
            Swaps = swaps,
            Candidates = candidates,
            Search = search,
        };

        NativeMemorySuite.PrintConfigEstimates(tokens, (config, tensors, parameters, calibration) => Allocator.EstimateGguf(config,
            [.. tensors.Where(t => t.Shape.Length >= 2)], options with { Budget = Allocator.BudgetForBitsPerWeight(bpw, parameters) }, calibration));

        if (args.Contains("--estimates-only"))
            return;
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string modelPath = Program.Value(args, "--shape") is { } shape
            ? ShapesSuite.Ensure(ShapesSuite.Find(shape), ShapesSuite.CacheDirectory(args), shared, 1)
            : Path.Combine(shared, "models", "stories15M", "stories15M.bin");
        using var model = ModelLoader.Load(modelPath);
        long budget = Allocator.BudgetForBitsPerWeight(bpw, model.ParameterCount);
        Allocator.CheckBudget(model, budget, options.Types);
        options = options with { Budget = budget };
        string output = Path.Combine(Path.GetTempPath(), $"squeeze-gguf-memory-{Environment.ProcessId}.gguf");
        var clock = Stopwatch.StartNew();
        string stage = "";
        using var memory = new MemorySampler();
        // Each sample is charged to the stage (and, while encoding, the tensor) the job last reported; each new stage on
        // stderr as it starts, for a job that runs for an hour.
        void Step(string at, string note)
        {
            if (at != stage)
                Console.Error.WriteLine($"{clock.Elapsed.TotalSeconds:0} s, RssAnon {Gb(MemorySampler.RssAnon())}: {at}");
            stage = at;
            memory.Step = note.Length > 0 && at != "measuring" ? $"{at}: {note}" : at;
        }
        ResourceEstimate estimate;
        long candidateBytes, fileBytes = 0;
        string written = "";
        var seconds = new List<(string Stage, double Seconds)>();
        try
        {
            using var context = Allocator.Prepare(model, text, options, new SynchronousProgress<AllocationProgress>(p => Step(p.Stage, p.Note)));
            estimate = context.Estimate;
            candidateBytes = context.Candidates.CandidateFileBytesWritten;
            Step("searching", "");
            var allocation = Allocator.Allocate(context, budget, search, evolution: new EvolutionOptions { TimeLimit = TimeSpan.FromSeconds(60) });
            if (!plan)
            {
                if (context.CandidateMethod != method)
                {
                    string chosen = Allocator.EncodingChosen(method);
                    Step(chosen, "");
                    fileBytes = context.Candidates.WriteEncoded(allocation.Selection, output, text, options.Compression,
                        new SynchronousProgress<CompressionProgress>(p => Step(chosen, p.Note))).FileBytes;
                    written = $"{chosen} and written";
                }
                else
                {
                    Step("writing", "");
                    fileBytes = context.Candidates.Write(allocation.Selection, output);
                    written = "written from the candidate file";
                }
            }
        }
        finally
        {
            memory.Stop();
            File.Delete(output);
        }
        Console.WriteLine();
        Console.WriteLine($"{Path.GetFileName(modelPath)} ({model.ParameterCount:N0} parameters), {tokens:N0} calibration tokens, the estimate the job checked:");
        NativeMemorySuite.Print(estimate);
        Console.WriteLine();
        Console.WriteLine("| measured | value |");
        Console.WriteLine("|---|---|");
        Console.WriteLine($"| peak private memory (RssAnon) during the job | {Gb(memory.Peak)} |");
        Console.WriteLine($"| private memory before it (the loaded model, the runtime) | {Gb(memory.Before)} |");
        Console.WriteLine($"| estimate before the start (peak stage) | {Gb(estimate.MemoryBytes)} |");
        Console.WriteLine($"| candidate file written to TMPDIR | {candidateBytes:N0} bytes (estimate {estimate.DiskBytes:N0}) |");
        Console.WriteLine($"| output | {(plan ? "not written (--plan)" : $"{fileBytes:N0} bytes (budget {budget:N0}), {written}")} |");
        Console.WriteLine($"| wall time | {clock.Elapsed.TotalSeconds:0} s |");
        Console.WriteLine();
        // Each stage's peak: the highest sample charged to it or to any of its tensors.
        var steps = memory.Steps(int.MaxValue);
        var peaks = steps.GroupBy(s => s.Step.Split(':')[0]).ToDictionary(g => g.Key, g => g.Max(s => s.Bytes));
        Console.WriteLine("| stage | estimated | measured peak (RssAnon) | its growth over the private memory before the job |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var (at, bytes) in estimate.Stages)
        {
            Console.WriteLine(peaks.TryGetValue(at, out long measured)
                ? $"| {at} | {Gb(bytes)} | {Gb(measured)} | {Gb(measured - memory.Before)} |"
                : $"| {at} | {Gb(bytes)} | not run | |");
        }
        Console.WriteLine();
        Console.WriteLine("| step (the job's last report: stage, and the tensor being encoded) | peak private memory while in it |");
        Console.WriteLine("|---|---|");
        foreach (var (at, bytes) in steps.Take(12))
            Console.WriteLine($"| {at} | {Gb(bytes)} |");
    }
}
