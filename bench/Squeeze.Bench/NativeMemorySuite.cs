using System.Diagnostics;
using System.Globalization;
using Squeeze.Allocation;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Models;

namespace Squeeze.Bench;

/// <summary>
/// The native size target's estimate (<see cref="Allocator.EstimateNative(Models.ModelConfig, IReadOnlyList{ValueTuple{string, long[]}}, IReadOnlyList{NativeRepresentation}, AllocationOptions, long)"/>)
/// at the TinyLlama-1.1B and Llama-3.1-8B shapes from their configs alone (nothing written), then for stories15M beside
/// a run of the job in process (<see cref="Allocator.PrepareNative"/>, the knapsack, the write): its peak private memory
/// (RssAnon, sampled every 50 ms and charged to the stage the job last reported) and the candidate files' bytes
/// against the estimate's bound.
/// </summary>
internal static class NativeMemorySuite
{
    /// <summary><c>native-memory [--bpw X] [--method gptq|imatrix|rtn] [--tokens N] [--ctx N] [--threads N] [--swaps auto|all|sampled]
    /// [--representations A,B,…] [--estimates-only]</c>.</summary>
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int tokens = Program.Option(args, "--tokens", 1024), ctx = Program.Option(args, "--ctx", 128), threads = Program.Option(args, "--threads", 2);
        double bpw = double.Parse(Program.Value(args, "--bpw") ?? "3.0", CultureInfo.InvariantCulture);
        var swaps = Enum.Parse<SwapMeasurement>(Program.Value(args, "--swaps") ?? "sampled", ignoreCase: true);
        var method = Enum.Parse<CompressionMethod>(Program.Value(args, "--method") ?? "gptq", ignoreCase: true);
        var representations = Program.Value(args, "--representations") is { } specs
            ? specs.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(NativeRepresentation.Parse).ToList()
            : NativeRepresentation.Defaults;
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- native-memory {string.Join(' ', args)}` "
            + $"(native size target {bpw:0.0##} bpw, {method.ToString().ToLowerInvariant()}, {representations.Count} representations, {ctx}-token chunks, {threads} threads)");
        var options = new AllocationOptions
        {
            Compression = new CompressionOptions { Method = method, CalibrationTokens = tokens, ContextLength = ctx, Threads = threads },
            Swaps = swaps,
        };

        PrintConfigEstimates(tokens, (config, tensors, parameters, calibration) => Allocator.EstimateNative(config,
            [.. tensors.Where(t => t.Shape.Length == 2)], representations, options with { Budget = Allocator.BudgetForBitsPerWeight(bpw, parameters) }, calibration));

        if (args.Contains("--estimates-only"))
            return;
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        using var model = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        long budget = Allocator.BudgetForBitsPerWeight(bpw, model.ParameterCount);
        options = options with { Budget = budget };
        string output = Path.Combine(Path.GetTempPath(), $"squeeze-native-memory-{Environment.ProcessId}");
        using var memory = new MemorySampler();
        var clock = Stopwatch.StartNew();
        ResourceEstimate estimate;
        long candidateBytes, fileBytes;
        try
        {
            using var context = Allocator.PrepareNative(model, text, options, representations, new SynchronousProgress<AllocationProgress>(p => memory.Step = p.Stage == "measuring" ? p.Stage : $"{p.Stage}: {p.Note}"));
            estimate = context.Estimate;
            candidateBytes = context.Candidates.CandidateFilesBytes;
            memory.Step = "searching";
            var allocation = Allocator.Allocate(context, budget, SearchMethod.Knapsack);
            memory.Step = "writing";
            fileBytes = context.Candidates.Write(allocation.Selection, output);
        }
        finally
        {
            memory.Stop();
            if (Directory.Exists(output))
                Directory.Delete(output, recursive: true);
        }
        Console.WriteLine();
        Console.WriteLine($"stories15M ({model.ParameterCount:N0} parameters), {tokens:N0} calibration tokens, the estimate the job checked:");
        Print(estimate);
        Console.WriteLine();
        Console.WriteLine("| measured | value |");
        Console.WriteLine("|---|---|");
        Console.WriteLine($"| peak private memory (RssAnon) during the job | {Gb(memory.Peak)} |");
        Console.WriteLine($"| private memory before it (the loaded model, the runtime) | {Gb(memory.Before)} |");
        Console.WriteLine($"| estimate before the start (peak stage) | {Gb(estimate.MemoryBytes)} |");
        Console.WriteLine($"| candidate files written to TMPDIR | {candidateBytes:N0} bytes (bound {estimate.DiskBytes:N0}: +{100.0 * (estimate.DiskBytes - candidateBytes) / candidateBytes:0.00} %) |");
        Console.WriteLine($"| output | {fileBytes:N0} bytes (budget {budget:N0}) |");
        Console.WriteLine($"| wall time | {clock.Elapsed.TotalSeconds:0} s |");
        Console.WriteLine();
        Console.WriteLine("| step (the job's last report: stage, and the tensor and level being encoded) | peak private memory while in it |");
        Console.WriteLine("|---|---|");
        foreach (var (at, bytes) in memory.Steps(12))
            Console.WriteLine($"| {at} | {Gb(bytes)} |");
    }

    /// <summary>Prints what <paramref name="estimate"/> gives the TinyLlama-1.1B and Llama-3.1-8B shapes from their configs
    /// alone (a config.json written to a temporary directory, nothing else) at <paramref name="tokens"/> and 4,096
    /// calibration tokens; its arguments are the config, the tensors the config implies, their parameter count and the
    /// calibration tokens.</summary>
    internal static void PrintConfigEstimates(int tokens, Func<ModelConfig, IReadOnlyList<(string Name, long[] Shape)>, long, long, ResourceEstimate> estimate)
    {
        foreach (string name in (string[])["tinyllama-1.1b", "llama-3.1-8b"])
        {
            string dir = Directory.CreateTempSubdirectory("squeeze-estimate-config-").FullName;
            try
            {
                string path = Path.Combine(dir, "config.json");
                ShapesSuite.WriteConfig(ShapesSuite.Find(name), path);
                var config = HuggingFaceReader.ReadConfig(path);
                var tensors = HuggingFaceReader.ExpectedTensors(config).Select(t => (t.Name, t.Shape)).ToList();
                long parameters = tensors.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
                foreach (long calibration in (long[])[tokens, 4096])
                {
                    Console.WriteLine();
                    Console.WriteLine($"{name} from its config ({parameters:N0} parameters, vocabulary {config.VocabSize:N0}), {calibration:N0} calibration tokens:");
                    Print(estimate(config, tensors, parameters, calibration));
                }
            }
            finally
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    /// <summary>Prints <paramref name="estimate"/>: each stage's total, the peak stage's parts, the peak and the disk bound.</summary>
    internal static void Print(ResourceEstimate estimate)
    {
        Console.WriteLine();
        Console.WriteLine("| stage | estimated bytes |");
        Console.WriteLine("|---|---|");
        foreach (var (stage, bytes) in estimate.Stages)
            Console.WriteLine($"| {stage} | {Gb(bytes)} |");
        Console.WriteLine();
        Console.WriteLine("| part of the peak stage | bytes |");
        Console.WriteLine("|---|---|");
        foreach (var (part, bytes) in estimate.Parts)
            Console.WriteLine($"| {part} | {Gb(bytes)} |");
        Console.WriteLine($"| **peak** | **{Gb(estimate.MemoryBytes)}** |");
        Console.WriteLine($"| candidate files (TMPDIR), bound | {Gb(estimate.DiskBytes)} |");
    }

    /// <summary><paramref name="bytes"/> in GB with two decimals.</summary>
    internal static string Gb(long bytes) => (bytes / 1e9).ToString("0.00", CultureInfo.InvariantCulture) + " GB";
}
