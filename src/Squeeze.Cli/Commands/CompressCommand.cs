using System.CommandLine;
using Spectre.Console;
using Squeeze.Allocation;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Cluster;
using Squeeze.Pipeline;
using Squeeze.Quantization;
using Squeeze.Tuning;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze compress MODEL --type MIX --calib FILE -o OUT.gguf --method rtn|imatrix|gptq|awq+gptq</c>: calibrated
/// quantization to a GGUF file (calibration, optional AWQ scaling, GPTQ per tensor), with a per-tensor error table; with
/// <c>--prune</c>, pruning to a native directory instead (<see cref="CompressPruned"/>).</summary>
internal static class CompressCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Type, string? Calib, string Output, string Method, long Tokens, int Context,
        bool Pure, string[] TensorTypes, string? Stats, bool Sequential, bool NoActOrder, double Damping, int Refine, int Threads, bool Json, PlanCommand.Budget? Budget = null,
        bool Tune = false, long TuneSamples = 65536, int TuneEpochs = 2, double TuneLearningRate = 0.003, string? Prune = null, double? Sparsity = null, string Pattern = "unstructured",
        bool Resume = false, string? MemoryLimit = null, string? Cluster = null);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var type = new Option<string>("--type") { Description = "Named mix as llama.cpp names it (Q4_0, Q4_K_M, Q3_K_M, Q2_K, …)", DefaultValueFactory = _ => "Q4_K_M" };
        var calib = new Option<string?>("--calib") { Description = "UTF-8 calibration text (not needed for --method rtn or with --stats)" };
        var output = new Option<string>("--output", "-o") { Description = "GGUF file to write (a directory with --format native)", Required = true };
        var method = new Option<string>("--method") { Description = "rtn, imatrix, gptq or awq+gptq", DefaultValueFactory = _ => "gptq" };
        var tokens = new Option<long>("--tokens") { Description = "Calibration tokens in whole chunks (0: the whole text)", DefaultValueFactory = _ => 0 };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Tokens per calibration chunk", DefaultValueFactory = _ => 256 };
        var pure = new Option<bool>("--pure") { Description = "Every 2-D tensor in the mix's base type (no per-tensor rules)" };
        var tensorTypes = new Option<string[]>("--tensor-type") { Description = "Per-tensor override REGEX=TYPE (repeatable; first match wins)", DefaultValueFactory = _ => [] };
        var stats = new Option<string?>("--stats") { Description = "Reuse a statistics file from squeeze calibrate (--gram for GPTQ) instead of calibrating" };
        var sequential = new Option<bool>("--sequential") { Description = "Calibrate each block on the output of the blocks before it as compressed (GPTQ's sequential scheme) instead of as original" };
        var noActOrder = new Option<bool>("--no-act-order") { Description = "GPTQ in column order instead of by descending activation energy" };
        var damping = new Option<double>("--damping") { Description = "GPTQ damping as a fraction of H's mean diagonal", DefaultValueFactory = _ => 0.01 };
        var refine = new Option<int>("--refine") { Description = "Refinement after GPTQ: coordinate-descent passes and scale re-fits (0: plain GPTQ)", DefaultValueFactory = _ => 4 };
        var (bpw, size, search, timeLimit, generations, seed, chart) = (PlanCommand.TargetBpwOption(), PlanCommand.TargetSizeOption(), PlanCommand.SearchOption(),
            PlanCommand.TimeLimitOption(), PlanCommand.GenerationsOption(), PlanCommand.SeedOption(), PlanCommand.ChartOption());
        var (format, representation, swaps, candidates) = (PlanCommand.FormatOption(), PlanCommand.RepresentationOption(), PlanCommand.SwapsOption(), PlanCommand.CandidatesOption());
        var tune = new Option<bool>("--tune") { Description = "With a size target: before writing, tune the chosen model end to end against the original (Adam on the KL divergence): the norms, and with --format native the group scales, mins and codebooks; sizes do not change" };
        var tuneSamples = new Option<long>("--tune-samples") { Description = "Tokens of text sampled from the original model that --tune trains on besides the calibration text", DefaultValueFactory = _ => 65536 };
        var tuneEpochs = new Option<int>("--tune-epochs") { Description = "Passes of --tune over its training text; the parameters with the lowest KLD on held-out calibration chunks (scored four times per epoch) are kept", DefaultValueFactory = _ => 2 };
        var tuneLearningRate = new Option<double>("--tune-lr") { Description = "First step size of --tune, relative to each parameter's own scale; it decays along a cosine, and tuning starts over at a third of it (twice at most) when the first held-out score is no better than the untuned model's", DefaultValueFactory = _ => 0.003 };
        var (prune, sparsity, pattern) = (CompressPruned.PruneOption(), CompressPruned.SparsityOption(), CompressPruned.PatternOption());
        var resume = new Option<bool>("--resume") { Description = "Keep progress beside the output after each block (.NAME.resume) and continue an interrupted run of the same job from its last finished block; the output is the same bytes (a named mix)" };
        var memoryLimit = MemoryLimitOption();
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var cluster = WorkerCommand.ClusterOption();
        cluster.Description += " (a named mix: each block's shards of calibration chunks are calibrated and its tensors encoded by the workers)";
        var command = new Command("compress", "Calibrated quantization to a GGUF file: imatrix, GPTQ or AWQ+GPTQ at one of llama.cpp's mixes, or at a size target (--target-bpw, --target-size), optionally in Squeeze's native format (--format native); or pruning (--prune, native format)")
        {
            model, tokenizer, type, calib, output, method, tokens, ctx, pure, tensorTypes, stats, sequential, noActOrder, damping, refine, bpw, size, search, timeLimit, generations, seed, chart,
            format, representation, swaps, candidates, tune, tuneSamples, tuneEpochs, tuneLearningRate, prune, sparsity, pattern, resume, memoryLimit, threads, json, cluster,
        };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(type)!, r.GetValue(calib),
            r.GetValue(output)!, r.GetValue(method)!, r.GetValue(tokens), r.GetValue(ctx), r.GetValue(pure), r.GetValue(tensorTypes)!, r.GetValue(stats),
            r.GetValue(sequential), r.GetValue(noActOrder), r.GetValue(damping), r.GetValue(refine), r.GetValue(threads), r.GetValue(json),
            new PlanCommand.Budget(r.GetValue(bpw), r.GetValue(size), r.GetValue(search)!, r.GetValue(timeLimit), r.GetValue(generations), r.GetValue(seed), r.GetValue(chart),
                r.GetValue(format)!, r.GetValue(representation), r.GetValue(swaps)!, r.GetValue(candidates)!), r.GetValue(tune), r.GetValue(tuneSamples), r.GetValue(tuneEpochs), r.GetValue(tuneLearningRate),
            r.GetValue(prune), r.GetValue(sparsity), r.GetValue(pattern)!, r.GetValue(resume), r.GetValue(memoryLimit), r.GetValue(cluster)))));
        return command;
    }

    /// <summary>The method named on the command line.</summary>
    public static CompressionMethod ParseMethod(string text) => text.ToLowerInvariant() switch
    {
        "rtn" => CompressionMethod.Rtn,
        "imatrix" => CompressionMethod.Imatrix,
        "gptq" => CompressionMethod.Gptq,
        "awq+gptq" or "awq-gptq" or "awqgptq" => CompressionMethod.AwqGptq,
        _ => throw new ArgumentException($"--method {text}: expected rtn, imatrix, gptq or awq+gptq"),
    };

    public static int Execute(Options options)
    {
        if (options.Cluster is not null && (options.Prune is not null || options.Budget is { } target && PlanCommand.HasTarget(target) && !target.Format.Equals("gguf", StringComparison.OrdinalIgnoreCase)))
            throw new ArgumentException("--cluster distributes the tensors of a named mix (--type) and the GGUF candidates of a size target; pruning and --format native run on this machine");
        if (options.Prune is not null)
            return CompressPruned.Execute(options);
        if (options.Sparsity is not null || options.Pattern != "unstructured")
            throw new ArgumentException("--sparsity and --pattern say how --prune prunes: give --prune magnitude|wanda|sparsegpt");
        if (options.Budget is { } budget && PlanCommand.HasTarget(budget))
            return ExecuteBudget(options, budget);
        if (options.Tune)
            throw new ArgumentException("--tune tunes what a size target chose: give --target-bpw or --target-size");
        if (options.Budget is { } other && (!other.Format.Equals("gguf", StringComparison.OrdinalIgnoreCase) || other.Representations is { Length: > 0 }))
            throw new ArgumentException("--format native chooses a representation per tensor under a size budget: give --target-bpw or --target-size");
        var method = ParseMethod(options.Method);
        var mix = QuantizationMix.Parse(options.Type);
        var overrides = options.TensorTypes.Select(TensorTypeOverride.Parse).ToList();
        if (options.Tokens < 0)
            throw new ArgumentException($"--tokens {options.Tokens} must not be negative");
        if (options.Refine < 0)
            throw new ArgumentException($"--refine {options.Refine} must not be negative");
        if (options.Context < 2)
            throw new ArgumentException($"--ctx {options.Context} must be at least 2");
        Cli.CheckOutput(options.Model, options.Output);
        bool needsText = method != CompressionMethod.Rtn && options.Stats is null;
        if (needsText && options.Calib is null)
            throw new ArgumentException($"--method {options.Method} needs a calibration text (--calib FILE) or statistics (--stats FILE)");
        string? text = needsText ? ReadCalibrationText(options.Calib!) : null;

        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        Cli.NoteLeftOut(m);
        var job = new CompressionJob
        {
            Target = new MixTarget(mix, options.Pure, overrides),
            Method = method,
            CalibrationText = text,
            Statistics = options.Stats is null || method == CompressionMethod.Rtn ? null : CalibrationFile.Read(options.Stats, m),
            CalibrationTokens = options.Tokens,
            ContextLength = options.Context,
            Damping = options.Damping,
            RefinePasses = options.Refine,
            ActivationOrder = !options.NoActOrder,
            Sequential = options.Sequential,
            Resume = options.Resume,
            MemoryLimit = options.MemoryLimit is null ? 0 : Allocator.ParseSize(options.MemoryLimit),
            Threads = Math.Max(1, options.Threads),
            Output = options.Output,
        };
        var report = options.Cluster is null
            ? Cli.WithStages("compressing", progress => CompressionPipeline.Run(m, job, progress, Cli.Cancellation))
            : WorkerCommand.WithCluster(options.Cluster, cluster => Cli.WithStages("compressing on the cluster", progress => CompressionPipeline.Run(m,
                WorkerCommand.OnCluster(job, cluster, WorkerCommand.Reference(options.Model, options.Tokenizer, m)), progress, Cli.Cancellation)));
        if (options.Json)
            Cli.WriteJson(report);
        else
            Print(report, chart: null);
        return 0;
    }

    /// <summary><c>--memory-limit</c> of <c>compress</c> and <c>plan</c>.</summary>
    public static Option<string?> MemoryLimitOption() => new("--memory-limit")
    {
        Description = "Memory the job may use (bytes, or 4GB, 6GiB); a job estimated to need more is refused before any work (default: what the machine has available)",
    };

    // A size target: each tensor's type is searched (squeeze plan's search), and the file is written from the encoded candidates.
    private static int ExecuteBudget(Options options, PlanCommand.Budget budget)
    {
        if (options.Pure || options.TensorTypes.Length > 0 || options.Stats is not null || options.Sequential || options.Resume)
            throw new ArgumentException("--pure, --tensor-type, --stats, --sequential and --resume do not apply with a size target: the search chooses every tensor's type");
        if (options.TuneSamples < 0)
            throw new ArgumentException($"--tune-samples {options.TuneSamples} must not be negative");
        if (options.TuneEpochs < 1)
            throw new ArgumentException($"--tune-epochs {options.TuneEpochs} must be at least 1");
        if (!(options.TuneLearningRate > 0))
            throw new ArgumentException($"--tune-lr {options.TuneLearningRate} must be positive");
        var tuning = options.Tune ? new TuningOptions { SampledTokens = options.TuneSamples, Epochs = options.TuneEpochs, LearningRate = options.TuneLearningRate, Tokens = options.Tokens, Threads = Math.Max(1, options.Threads) } : null;
        var (report, chart) = PlanCommand.Run(new PlanCommand.Options(options.Model, options.Tokenizer, options.Calib, options.Output, budget, options.Method, options.Tokens,
            options.Context, options.Threads, options.Json, options.Damping, !options.NoActOrder, tuning, options.Cluster, options.MemoryLimit), writeWeights: true);
        if (options.Json)
            System.Console.Out.WriteLine(PlanCommand.ToJson(report, chart));
        else
            Print(report, chart);
        return 0;
    }

    /// <summary>Reads a calibration text, refusing an empty, binary (NUL or other control bytes) or non-UTF-8 file in one clear line.</summary>
    public static string ReadCalibrationText(string path)
    {
        if (!File.Exists(path))
            throw new ArgumentException($"{path}: calibration text not found");
        string text = Cli.ReadText(path);
        if (text.Length == 0 || string.IsNullOrWhiteSpace(text))
            throw new ArgumentException($"{path}: the calibration text is empty");
        int control = text.Count(c => c < ' ' && c is not '\n' and not '\r' and not '\t' and not '\f');
        if (control > 0)
            throw new ArgumentException($"{path}: looks binary ({control} control characters such as NUL); a calibration text must be plain UTF-8 text");
        return text;
    }

    /// <summary>The closing table of <c>compress</c> and <c>plan</c>: each tensor's format, size, the errors that were
    /// measured (a named mix: before and after the method; a size target: the output error and single-swap KLD), then the
    /// totals and the time of each stage.</summary>
    public static void Print(CompressionReport report, string? chart)
    {
        var tensors = report.Tensors;
        bool before = tensors.Any(t => t.ErrorBefore is not null), swap = tensors.Any(t => t.SwapKld is not null), time = tensors.Any(t => t.Seconds is not null);
        var columns = new List<string> { "tensor", "type", "bytes", "bpw", "encoding" };
        if (before)
            columns.Add("error before");
        columns.Add(swap ? "output error" : "error after");
        if (swap)
            columns.Add("swap KLD");
        if (time)
            columns.Add("time");
        var table = new Table().AddColumns([.. columns]);
        for (int c = 2; c < columns.Count; c++)
        {
            if (c != 4)
                table.Columns[c].RightAligned();
        }
        foreach (var t in tensors)
        {
            bool copied = t.Encoding == "copy";
            var row = new List<string> { Markup.Escape(t.Name), Markup.Escape(t.Format), t.Bytes.ToString("N0"), t.BitsPerWeight.ToString("0.00"), Markup.Escape(t.Encoding) };
            if (before)
                row.Add(copied || t.ErrorBefore is null ? "" : t.ErrorBefore.Value.ToString("0.000000"));
            row.Add(copied ? "" : swap ? t.ErrorAfter.ToString("0.000000") : $"{t.ErrorAfter:0.000000} ({t.ErrorMetric})");
            if (swap)
                row.Add(t.SwapKld is { } kld ? kld.ToString("0.000000") : "");
            if (time)
                row.Add(t.Seconds is { } s ? $"{s:0.00} s" : "");
            table.AddRow([.. row]);
        }
        Cli.Console.Write(table);
        Cli.Console.WriteLine(swap
            ? "swap KLD: mean KL divergence on calibration text with that tensor alone in that type; output error: tr((W−Q) H (W−Q)ᵀ) / tr(W H Wᵀ)"
                + (before ? "; error before: the rounded candidate the search weighed, output error: the chosen type encoded anew" : "")
            : "errors: tr((W−Q) H (W−Q)ᵀ) / tr(W H Wᵀ) with H the input's XᵀX / n (H), its diagonal (diag), or I (none); before = plain round-to-nearest");
        string budget = report.Budget is { } b ? $" of a budget of {b:N0}" : "";
        Cli.Console.WriteLine($"{report.Output ?? "plan"}: {report.Target} {report.Method}{(report.Sequential ? " sequential" : "")}, {report.FileBytes:N0} bytes ({Cli.Bytes(report.FileBytes)}){budget}, " +
            $"{report.BitsPerWeight:0.000} bits per weight (file bytes × 8 / {report.Parameters:N0} parameters)" + (report.PredictedKld is { } p ? $"; Σ swap KLD {p:0.000000}" : ""));
        if (report.SearchKld is { } end)
            Cli.Console.WriteLine($"evolution: calibration KLD {report.StartKld:0.000000} → {end:0.000000} in {report.Generations} generations");
        if (report.Note.Length > 0)
            Cli.Console.WriteLine($"note: {report.Note}");
        if (report.Tuning is { } tuning)
            Cli.Console.WriteLine(tuning.BestStep == 0
                ? $"tuning ({tuning.Scope}, {tuning.Parameters:N0} parameters, {tuning.TrainingTokens:N0} tokens, {tuning.Seconds:0.0} s): no step lowered the held-out KLD {tuning.HeldOutKldBefore:0.000000} (first step sizes down to {tuning.LearningRate:0.######}); written untuned"
                : $"tuning ({tuning.Scope}, {tuning.Parameters:N0} parameters, {tuning.TrainingTokens:N0} tokens, {tuning.Steps} steps from step size {tuning.LearningRate:0.######}, {tuning.Seconds:0.0} s): " +
                  $"held-out calibration KLD {tuning.HeldOutKldBefore:0.000000} → {tuning.HeldOutKldAfter:0.000000} (after step {tuning.BestStep})");
        var seconds = report.Seconds;
        string calibration = report.CalibrationPasses > 1 ? $"calibration {seconds.Calibration:0.0} s ({report.CalibrationPasses} passes of {report.CalibrationTokens:N0} tokens)" : $"calibration {seconds.Calibration:0.0} s";
        string measuring = report.Budget is null ? "" : $", single-swap KLD {seconds.Measuring:0.0} s, search {seconds.Search:0.00} s";
        string tuned = report.Tuning is null ? "" : $", tuning {seconds.Tuning:0.0} s";
        Cli.Console.WriteLine($"time: {seconds.Total:0.0} s ({calibration}, encoding {seconds.Encoding:0.0} s{measuring}{tuned})" + (chart is null ? "" : $"; chart {chart}"));
        if (report.LayerSeconds.Count > 0)
        {
            var sorted = report.LayerSeconds.Order().ToList();
            int slowest = report.LayerSeconds.ToList().IndexOf(sorted[^1]);
            Cli.Console.WriteLine($"blocks: {sorted.Count}, median {sorted[sorted.Count / 2]:0.00} s each, slowest {sorted[^1]:0.00} s (layer {slowest})"
                + (EstimatedMemory(report) is { } estimate ? $"; {estimate}" : ""));
        }
        else if (EstimatedMemory(report) is { } estimate)
        {
            Cli.Console.WriteLine(estimate);
        }
    }

    // "memory estimated at … before the start", with each stage's figure when the job has stages; null without an estimate.
    private static string? EstimatedMemory(CompressionReport report) => report.EstimatedMemoryBytes is not { } peak ? null
        : $"memory estimated at {Cli.Bytes(peak)} before the start"
            + (report.EstimatedStages.Count > 0 ? $" ({string.Join(", ", report.EstimatedStages.Select(s => $"{s.Stage} {Cli.Bytes(s.Bytes)}"))})" : "");
}
