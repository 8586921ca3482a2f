using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Spectre.Console;
using Squeeze.Allocation;
using Squeeze.Charts;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Pipeline;
using Squeeze.Tuning;

namespace Squeeze.Cli.Commands;

/// <summary>
/// <c>squeeze plan MODEL --target-bpw X | --target-size 3.2GB --calib FILE -o PLAN.json [--search knapsack|evo]</c>: the
/// per-tensor formats that fit a byte budget best (candidates encoded with GPTQ, knapsack on single-swap KLD, optionally
/// evolutionary search), printed and saved without writing weights. <c>squeeze compress</c> with a target runs the same
/// search and writes the GGUF file from the same encoded candidates.
/// </summary>
internal static class PlanCommand
{
    /// <summary>The budget and search settings shared by <c>plan</c> and <c>compress</c>.</summary>
    public sealed record Budget(double? TargetBpw, string? TargetSize, string Search, double TimeLimit, int Generations, int Seed, string? Chart,
        string Format = "gguf", string[]? Representations = null, string Swaps = "auto", string Candidates = "auto");

    public sealed record Options(string Model, string? Tokenizer, string? Calib, string Output, Budget Budget, string Method, long Tokens, int Context, int Threads, bool Json,
        double Damping = 0.01, bool ActivationOrder = true, TuningOptions? Tuning = null, string? Cluster = null, string? MemoryLimit = null);

    public static Option<double?> TargetBpwOption() => new("--target-bpw") { Description = "Budget in bits per weight: file bytes × 8 / parameters" };

    public static Option<string?> TargetSizeOption() => new("--target-size") { Description = "Budget as a file size: bytes, or 3.2GB, 700MiB (KB/MB/GB powers of 1000, KiB/MiB/GiB of 1024)" };

    public static Option<string> SearchOption() => new("--search") { Description = "knapsack (exact, on single-swap KLD) or evo (knapsack, then evolution on end-to-end KLD)", DefaultValueFactory = _ => "knapsack" };

    public static Option<double> TimeLimitOption() => new("--time-limit") { Description = "Seconds of evolutionary search", DefaultValueFactory = _ => 120 };

    public static Option<int> GenerationsOption() => new("--generations") { Description = "Most generations of evolutionary search", DefaultValueFactory = _ => 100_000 };

    public static Option<int> SeedOption() => new("--seed") { Description = "Seed of the evolutionary search", DefaultValueFactory = _ => 1 };

    public static Option<string> FormatOption() => new("--format") { Description = "gguf (llama.cpp's block types; a file) or native (Squeeze's representations: uniform codes of any width and group, …; a directory)", DefaultValueFactory = _ => "gguf" };

    /// <summary><c>--representation</c>, its help generated from the registry of representation families: each family's
    /// grammar and help line, then the default levels.</summary>
    public static Option<string[]> RepresentationOption() => new("--representation")
    {
        Description = "With --format native: a level the search may choose (repeatable): "
            + string.Join("; ", NativeRepresentation.Families.Select(f => $"{f.Syntax}: {f.Help}"))
            + ". Default: " + string.Join(", ", NativeRepresentation.Defaults.Select(r => r.Spec)),
    };

    public static Option<string> SwapsOption() => new("--swaps")
    {
        Description = "How each candidate's damage (single-swap KLD) is found: all (one forward pass per candidate), sampled (measured on the first, quarter, middle, "
            + "three-quarter and last blocks' tensors and the embedding and classifier, the rest scaled from each candidate's output error on the calibration activations), "
            + $"or auto (all while that costs at most {Allocator.MeasuredSwapWork:0e0} parameter-tokens, else sampled)",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<string> CandidatesOption() => new("--candidates")
    {
        Description = "How GGUF candidates of a GPTQ job are encoded: method (GPTQ in every type: the search weighs exactly what it writes), rounding (importance-weighted "
            + "rounding, then GPTQ for each tensor's chosen type only, block by block), or auto (method while GPTQ in every type costs at most "
            + $"{Allocator.MethodCandidateWork:0e0} multiply-adds, else rounding)",
        DefaultValueFactory = _ => "auto",
    };

    public static Option<string?> ChartOption() => new("--chart") { Description = "PNG chart of the bits given to each layer and tensor kind (default: beside the output, .bits.png)" };

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var calib = new Option<string?>("--calib") { Description = "UTF-8 calibration text", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "JSON file to save the plan to", Required = true };
        var method = new Option<string>("--method") { Description = "How candidates are encoded: rtn, imatrix or gptq", DefaultValueFactory = _ => "gptq" };
        var tokens = new Option<long>("--tokens") { Description = "Calibration tokens in whole chunks (0: the whole text)", DefaultValueFactory = _ => 0 };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Tokens per calibration chunk", DefaultValueFactory = _ => 256 };
        var (bpw, size, search, timeLimit, generations, seed, chart) = (TargetBpwOption(), TargetSizeOption(), SearchOption(), TimeLimitOption(), GenerationsOption(), SeedOption(), ChartOption());
        var (format, representation, swaps, candidates) = (FormatOption(), RepresentationOption(), SwapsOption(), CandidatesOption());
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var cluster = WorkerCommand.ClusterOption();
        cluster.Description += " (GGUF: each block's shards of calibration chunks are calibrated and every candidate encoded by the workers)";
        var memoryLimit = CompressCommand.MemoryLimitOption();
        var command = new Command("plan", "Choose each tensor's format to fit a size budget best; print and save the plan without writing weights")
        {
            model, tokenizer, calib, output, bpw, size, search, timeLimit, generations, seed, chart, format, representation, swaps, candidates, method, tokens, ctx, threads, json, cluster, memoryLimit,
        };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(calib), r.GetValue(output)!,
            new Budget(r.GetValue(bpw), r.GetValue(size), r.GetValue(search)!, r.GetValue(timeLimit), r.GetValue(generations), r.GetValue(seed), r.GetValue(chart),
                r.GetValue(format)!, r.GetValue(representation), r.GetValue(swaps)!, r.GetValue(candidates)!),
            r.GetValue(method)!, r.GetValue(tokens), r.GetValue(ctx), r.GetValue(threads), r.GetValue(json), Cluster: r.GetValue(cluster), MemoryLimit: r.GetValue(memoryLimit)))));
        return command;
    }

    public static int Execute(Options options)
    {
        var (report, chart) = Run(options, writeWeights: false);
        string text = ToJson(report, chart);
        string temp = options.Output + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, options.Output, overwrite: true);
        if (options.Json)
            System.Console.Out.WriteLine(text);
        else
        {
            CompressCommand.Print(report, chart);
            Cli.Console.WriteLine($"plan saved to {options.Output}");
        }
        return 0;
    }

    /// <summary>The report as JSON, with the chart's path beside its fields.</summary>
    public static string ToJson(CompressionReport report, string? chart)
    {
        var node = JsonSerializer.SerializeToNode(report, Cli.Json)!.AsObject();
        if (chart is not null)
            node["chart"] = chart;
        return node.ToJsonString(Cli.Json);
    }

    /// <summary>True when a budget was asked for (so <c>compress</c> searches instead of using a mix).</summary>
    public static bool HasTarget(Budget budget) => budget.TargetBpw is not null || budget.TargetSize is not null;

    /// <summary>Runs the budget search through <see cref="CompressionPipeline"/> and, when <paramref name="writeWeights"/>,
    /// writes the GGUF file (or native model directory) to <see cref="Options.Output"/>; draws the chart of the bits each
    /// tensor got and returns its path.</summary>
    public static (CompressionReport Report, string Chart) Run(Options options, bool writeWeights)
    {
        var b = options.Budget;
        if ((b.TargetBpw is null) == (b.TargetSize is null))
            throw new ArgumentException("give exactly one budget: --target-bpw X or --target-size SIZE");
        var search = b.Search.ToLowerInvariant() switch
        {
            "knapsack" => SearchMethod.Knapsack,
            "evo" or "evolution" => SearchMethod.Evolution,
            _ => throw new ArgumentException($"--search {b.Search}: expected knapsack or evo"),
        };
        var swaps = b.Swaps.ToLowerInvariant() switch
        {
            "auto" => SwapMeasurement.Auto,
            "all" => SwapMeasurement.All,
            "sampled" => SwapMeasurement.Sampled,
            _ => throw new ArgumentException($"--swaps {b.Swaps}: expected auto, all or sampled"),
        };
        var candidates = b.Candidates.ToLowerInvariant() switch
        {
            "auto" => CandidateEncoding.Auto,
            "method" => CandidateEncoding.Method,
            "rounding" => CandidateEncoding.Rounding,
            _ => throw new ArgumentException($"--candidates {b.Candidates}: expected auto, method or rounding"),
        };
        var method = CompressCommand.ParseMethod(options.Method);
        if (method == CompressionMethod.AwqGptq)
            throw new ArgumentException("--method awq+gptq is not available with a size target: use rtn, imatrix or gptq");
        if (!(b.TimeLimit > 0))
            throw new ArgumentException($"--time-limit {b.TimeLimit} must be a positive number of seconds");
        if (b.Generations < 1)
            throw new ArgumentException($"--generations {b.Generations} must be at least 1");
        if (options.Tokens < 0)
            throw new ArgumentException($"--tokens {options.Tokens} must not be negative");
        if (options.Context < 4)
            throw new ArgumentException($"--ctx {options.Context} must be at least 4");
        long? size = b.TargetSize is null ? null : Allocator.ParseSize(b.TargetSize);
        Cli.CheckOutput(options.Model, options.Output);
        bool native = b.Format.ToLowerInvariant() switch
        {
            "gguf" => false,
            "native" => true,
            _ => throw new ArgumentException($"--format {b.Format}: expected gguf or native"),
        };
        // A native model is a directory: its name may contain dots ("model-3.0") that are not an extension.
        string chart = b.Chart ?? (native && writeWeights ? Path.TrimEndingDirectorySeparator(options.Output) + ".bits.png" : Path.ChangeExtension(options.Output, ".bits.png"));
        Cli.CheckOutput(options.Model, chart);
        if (options.Calib is null)
            throw new ArgumentException("a size target needs a calibration text (--calib FILE): candidates are measured on it");
        string text = CompressCommand.ReadCalibrationText(options.Calib);

        if (!native && b.Representations is { Length: > 0 })
            throw new ArgumentException("--representation applies to --format native; GGUF candidates are llama.cpp's block types");
        var representations = b.Representations is { Length: > 0 } specs ? specs.Select(Parse).ToList() : null;

        using var model = ModelLoader.Load(options.Model, options.Tokenizer);
        var job = new CompressionJob
        {
            Target = new BudgetTarget(size, size is null ? b.TargetBpw : null, native, representations, search,
                new EvolutionOptions { Seed = b.Seed, Generations = b.Generations, TimeLimit = TimeSpan.FromSeconds(b.TimeLimit) }, swaps, candidates),
            Method = method,
            CalibrationText = text,
            CalibrationTokens = options.Tokens,
            ContextLength = options.Context,
            Damping = options.Damping,
            ActivationOrder = options.ActivationOrder,
            Tuning = options.Tuning,
            MemoryLimit = options.MemoryLimit is null ? 0 : Allocator.ParseSize(options.MemoryLimit),
            Threads = Math.Max(1, options.Threads),
            Output = writeWeights ? options.Output : null,
        };
        if (options.Cluster is not null && native)
            throw new ArgumentException("--cluster encodes GGUF candidates; --format native runs on this machine");
        string stage = writeWeights ? "compressing" : "planning";
        var report = options.Cluster is null
            ? Cli.WithStages(stage, progress => CompressionPipeline.Run(model, job, progress, Cli.Cancellation))
            : WorkerCommand.WithCluster(options.Cluster, cluster => Cli.WithStages(stage + " on the cluster", progress => CompressionPipeline.Run(model,
                WorkerCommand.OnCluster(job, cluster, WorkerCommand.Reference(options.Model, options.Tokenizer, model)), progress, Cli.Cancellation)));
        AllocationCharts.BitsPerTensor(report.Tensors, model.Config.LayerCount, chart,
            $"{Path.GetFileName(model.Source)}: {report.FileBytes:N0} bytes, {report.BitsPerWeight:0.000} bits per weight ({report.Search})");
        return (report, chart);
    }

    private static NativeRepresentation Parse(string spec)
    {
        try
        {
            return NativeRepresentation.Parse(spec);
        }
        catch (FormatException e)
        {
            throw new ArgumentException($"--representation {e.Message}", e);
        }
    }
}
