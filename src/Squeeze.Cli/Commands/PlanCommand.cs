using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using Squeeze.Allocation;
using Squeeze.Charts;
using Squeeze.Compression;
using Squeeze.Formats;
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
        string Format = "gguf", string[]? Representations = null);

    public sealed record Options(string Model, string? Tokenizer, string? Calib, string Output, Budget Budget, string Method, long Tokens, int Context, int Threads, bool Json,
        double Damping = 0.01, bool ActivationOrder = true, TuningOptions? Tuning = null);

    /// <summary>What tuning did before the file was written (<c>compress --tune</c>).</summary>
    public sealed record TuningSummary(string Scope, long Parameters, long TrainingTokens, int Steps, int BestStep, double HeldOutKldBefore, double HeldOutKldAfter, double LearningRate, double Seconds);

    /// <summary>One tensor of a plan.</summary>
    public sealed record PlannedTensor(string Name, string Type, long Bytes, double BitsPerWeight, double SwapKld, double OutputError, string Encoding);

    /// <summary>What <c>plan</c> saves and both commands print (<c>--json</c>).</summary>
    public sealed record PlanReport(string Model, string? Output, string? Chart, long Budget, long FileBytes, long Parameters, double BitsPerWeight, string Search,
        double PredictedKld, double? StartKld, double? SearchKld, int? Generations, double CalibrationSeconds, double EncodingSeconds, double MeasuringSeconds,
        double SearchSeconds, string Note, IReadOnlyList<PlannedTensor> Tensors, TuningSummary? Tuning = null);

    public static Option<double?> TargetBpwOption() => new("--target-bpw") { Description = "Budget in bits per weight: file bytes × 8 / parameters" };

    public static Option<string?> TargetSizeOption() => new("--target-size") { Description = "Budget as a file size: bytes, or 3.2GB, 700MiB (KB/MB/GB powers of 1000, KiB/MiB/GiB of 1024)" };

    public static Option<string> SearchOption() => new("--search") { Description = "knapsack (exact, on single-swap KLD) or evo (knapsack, then evolution on end-to-end KLD)", DefaultValueFactory = _ => "knapsack" };

    public static Option<double> TimeLimitOption() => new("--time-limit") { Description = "Seconds of evolutionary search", DefaultValueFactory = _ => 120 };

    public static Option<int> GenerationsOption() => new("--generations") { Description = "Most generations of evolutionary search", DefaultValueFactory = _ => 100_000 };

    public static Option<int> SeedOption() => new("--seed") { Description = "Seed of the evolutionary search", DefaultValueFactory = _ => 1 };

    public static Option<string> FormatOption() => new("--format") { Description = "gguf (llama.cpp's block types; a file) or native (Squeeze's representations: uniform codes of any width and group, …; a directory)", DefaultValueFactory = _ => "gguf" };

    public static Option<string[]> RepresentationOption() => new("--representation") { Description = "With --format native: a level the search may choose (repeatable): uniform:BITS:GROUP[:sym] (GROUP may be ~N: the largest divisor of the row ≤ N), codebook:BITS:GROUP|row, rot+uniform:…, entropy+SPEC, dfloat11, nm:N:M:VALUES, unstructured:FRACTION:VALUES, svd:RANK[:FACTORBITS], eora:BITS:GROUP:RANK[:FACTORBITS], slim:N:M:VALUES:RANK[:FACTORBITS], vq:DIM:INDEXBITS[:scaled], rvq:DIM:BITS:RESIDUALBITS[:scaled], split:HOTROWS:HOTSPEC/COLDSPEC (the embedding or classifier: the rows of the calibration text's most used tokens in HOTSPEC, the rest in COLDSPEC), zero (drop the matrix), f16. Default: uniform 2, 3, 4, 5, 6, 8 bits in groups ~64 and ~256, per-row codebooks of 2, 3, 4 bits, vq:6:12, vq:6:13, vq:4:7:scaled … vq:4:10:scaled, f16, and for the embedding split:1024:uniform:5:~64/vq:8:10, split:1024:uniform:4:~64/vq:8:11, split:2048:uniform:5:~64/vq:8:12, split:2048:uniform:5:~64/vq:6:11, split:2048:uniform:6:~64/vq:6:13, split:4096:uniform:6:~64/uniform:3:~64" };

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
        var (format, representation) = (FormatOption(), RepresentationOption());
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var command = new Command("plan", "Choose each tensor's format to fit a size budget best; print and save the plan without writing weights")
        {
            model, tokenizer, calib, output, bpw, size, search, timeLimit, generations, seed, chart, format, representation, method, tokens, ctx, threads, json,
        };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(calib), r.GetValue(output)!,
            new Budget(r.GetValue(bpw), r.GetValue(size), r.GetValue(search)!, r.GetValue(timeLimit), r.GetValue(generations), r.GetValue(seed), r.GetValue(chart),
                r.GetValue(format)!, r.GetValue(representation)),
            r.GetValue(method)!, r.GetValue(tokens), r.GetValue(ctx), r.GetValue(threads), r.GetValue(json)))));
        return command;
    }

    public static int Execute(Options options)
    {
        var report = Run(options, writeWeights: false);
        string text = JsonSerializer.Serialize(report, Cli.Json);
        string temp = options.Output + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, options.Output, overwrite: true);
        if (options.Json)
            Cli.WriteJson(report);
        else
        {
            Print(report);
            Cli.Console.WriteLine($"plan saved to {options.Output}");
        }
        return 0;
    }

    /// <summary>True when a budget was asked for (so <c>compress</c> searches instead of using a mix).</summary>
    public static bool HasTarget(Budget budget) => budget.TargetBpw is not null || budget.TargetSize is not null;

    /// <summary>Prepares the candidates, searches the budget and, when <paramref name="writeWeights"/>, writes the GGUF file
    /// (or native model directory) to <see cref="Options.Output"/>; writes the chart.</summary>
    public static PlanReport Run(Options options, bool writeWeights)
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
        var representations = b.Representations is { Length: > 0 } specs
            ? specs.Select(s => Parse(s)).ToList()
            : NativeRepresentation.Defaults;
        if (native && writeWeights && Directory.Exists(options.Output) && Directory.EnumerateFileSystemEntries(options.Output).Any())
            throw new ArgumentException($"{options.Output}: a native model is a directory, and this one exists and is not empty");

        using var model = ModelLoader.Load(options.Model, options.Tokenizer);
        long budget = size ?? Allocator.BudgetForBitsPerWeight(b.TargetBpw!.Value, model.ParameterCount);
        if (!native)
            Allocator.CheckBudget(model, budget);
        var allocationOptions = new AllocationOptions
        {
            Compression = new CompressionOptions
            {
                Method = method,
                CalibrationTokens = options.Tokens,
                ContextLength = options.Context,
                Damping = options.Damping,
                ActivationOrder = options.ActivationOrder,
                Threads = Math.Max(1, options.Threads),
            },
        };
        return Cli.WithProgress("planning", progress =>
        {
            var reporter = new SynchronousProgress<AllocationProgress>(p => progress.Report((p.Done, p.Total, $"{p.Stage} {p.Note}")));
            if (native)
            {
                using var nativeContext = Allocator.PrepareNative(model, text, allocationOptions, representations, reporter);
                return Search(nativeContext, progress);
            }
            using var context = Allocator.Prepare(model, text, allocationOptions, reporter);
            return Search(context, progress);
        });

        PlanReport Search<TSet, T>(AllocationContext<TSet, T> context, IProgress<(double Done, double Total, string Note)> progress)
            where TSet : CandidateSet<T>
            where T : Candidate
        {
            var set = context.Candidates;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var evolution = new EvolutionOptions { Seed = b.Seed, Generations = b.Generations, TimeLimit = TimeSpan.FromSeconds(b.TimeLimit) };
            var allocation = Allocator.Allocate(context, budget, search, ErrorModel.SwapKld, evolution,
                new SynchronousProgress<SearchStep>(s => progress.Report((s.Seconds, b.TimeLimit, $"searching: generation {s.Generation}, calibration KLD {s.Fitness:0.000000}"))));
            double searchSeconds = clock.Elapsed.TotalSeconds;
            string? written = null;
            TuningSummary? tuningSummary = null;
            if (writeWeights)
            {
                TuningResult? tuning = null;
                if (options.Tuning is { } tuningOptions)
                {
                    using var composed = set.Compose(allocation.Selection);
                    tuning = Tuner.Tune(model, composed, text, tuningOptions with { Scope = native ? TuningScope.Weights : TuningScope.Norms },
                        new SynchronousProgress<TuningProgress>(p => progress.Report((p.Step, p.Steps, $"tuning: step {p.Step}/{p.Steps}, KLD {p.Kld:0.0000}"))));
                    tuningSummary = new TuningSummary(native ? "norms and weights" : "norms", tuning.Parameters, tuning.TrainingTokens, tuning.Steps, tuning.BestStep,
                        tuning.HeldOutKldBefore, tuning.HeldOutKldAfter, tuning.LearningRate, tuning.Seconds);
                }
                progress.Report((0, 1, $"writing {options.Output}"));
                set.Write(allocation.Selection, options.Output, tuning);
                written = options.Output;
            }
            AllocationCharts.BitsPerTensor(set, allocation.Selection, chart,
                $"{Path.GetFileName(model.Source)}: {allocation.FileBytes:N0} bytes, {allocation.BitsPerWeight:0.000} bits per weight ({b.Search})");
            var tensors = set.Tensors.Select((t, i) =>
            {
                var c = set.Chosen(allocation.Selection, i);
                return new PlannedTensor(t.Name, c.Format, c.Bytes, 8.0 * c.Bytes / t.Elements, c.SwapKld, c.OutputError, c.Encoding);
            }).ToList();
            return new PlanReport(model.Source, written, chart, budget, allocation.FileBytes, set.Parameters, allocation.BitsPerWeight, b.Search,
                allocation.PredictedError, allocation.Evolution?.StartFitness, allocation.Evolution?.Fitness, allocation.Evolution?.Generations,
                context.CalibrationSeconds, context.EncodingSeconds, context.SwapSeconds, searchSeconds, allocation.Note, tensors, tuningSummary);
        }
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

    /// <summary>The closing table: each tensor's format, size and both error estimates, then the totals.</summary>
    public static void Print(PlanReport report)
    {
        var table = new Table().AddColumns("tensor", "type", "bytes", "bpw", "swap KLD", "output error", "encoding");
        foreach (int c in new[] { 2, 3, 4, 5 })
            table.Columns[c].RightAligned();
        foreach (var t in report.Tensors)
            table.AddRow(Markup.Escape(t.Name), t.Type, t.Bytes.ToString("N0"), t.BitsPerWeight.ToString("0.00"), t.SwapKld.ToString("0.000000"), t.OutputError.ToString("0.000000"), Markup.Escape(t.Encoding));
        Cli.Console.Write(table);
        Cli.Console.WriteLine("swap KLD: mean KL divergence on calibration text with that tensor alone in that type; output error: tr((W−Q) H (W−Q)ᵀ) / tr(W H Wᵀ)");
        Cli.Console.WriteLine($"{report.Output ?? "plan"}: {report.FileBytes:N0} bytes ({Cli.Bytes(report.FileBytes)}) of a budget of {report.Budget:N0}, " +
            $"{report.BitsPerWeight:0.000} bits per weight (file bytes × 8 / {report.Parameters:N0} parameters); Σ swap KLD {report.PredictedKld:0.000000}");
        if (report.SearchKld is { } end)
            Cli.Console.WriteLine($"evolution: calibration KLD {report.StartKld:0.000000} → {end:0.000000} in {report.Generations} generations");
        if (report.Note.Length > 0)
            Cli.Console.WriteLine($"note: {report.Note}");
        if (report.Tuning is { } tuning)
            Cli.Console.WriteLine(tuning.BestStep == 0
                ? $"tuning ({tuning.Scope}, {tuning.Parameters:N0} parameters, {tuning.TrainingTokens:N0} tokens, {tuning.Seconds:0.0} s): no step lowered the held-out KLD {tuning.HeldOutKldBefore:0.000000} (first step sizes down to {tuning.LearningRate:0.######}); written untuned"
                : $"tuning ({tuning.Scope}, {tuning.Parameters:N0} parameters, {tuning.TrainingTokens:N0} tokens, {tuning.Steps} steps from step size {tuning.LearningRate:0.######}, {tuning.Seconds:0.0} s): " +
                  $"held-out calibration KLD {tuning.HeldOutKldBefore:0.000000} → {tuning.HeldOutKldAfter:0.000000} (after step {tuning.BestStep})");
        Cli.Console.WriteLine($"time: calibration {report.CalibrationSeconds:0.0} s, encoding candidates {report.EncodingSeconds:0.0} s, single-swap KLD {report.MeasuringSeconds:0.0} s, search {report.SearchSeconds:0.00} s; chart {report.Chart}");
    }
}
