using System.Diagnostics;
using Squeeze.Allocation;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Compression.Representations;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Pruning;
using Squeeze.Tuning;

namespace Squeeze.Pipeline;

/// <summary>
/// The one entry point of compression, for the CLI, the demo, the benchmark harness and any program: a model and a
/// <see cref="CompressionJob"/> in, a <see cref="CompressionReport"/> out. A named mix runs <see cref="Compressor"/>
/// (block by block: calibrate → optional AWQ → per tensor RTN, imatrix or GPTQ → into the GGUF file); a size budget runs <see cref="Allocator"/>
/// (calibrate → encode every candidate → measure single swaps → knapsack, optionally evolution) → optional
/// <see cref="Tuner"/> → the GGUF file or native directory. Progress names each stage with its number of the job's
/// stages; cancellation stops within one layer's forward pass or one tensor's encoding and leaves no temporary or
/// candidate file behind.
/// </summary>
public static class CompressionPipeline
{
    /// <summary>Runs <paramref name="job"/> on <paramref name="model"/>.</summary>
    /// <exception cref="ArgumentException">Options that do not fit together, a missing calibration text, a budget below the
    /// smallest possible output, an output that would overwrite the input or a non-empty directory.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public static CompressionReport Run(Model model, CompressionJob job, IProgress<StageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(job);
        if (job.Output is { } output && string.Equals(Path.GetFullPath(output), Path.GetFullPath(model.Source), StringComparison.Ordinal))
            throw new ArgumentException($"{output}: refusing to write over the input");
        if (job.Output is not null)
            OutputPaths.RequireDirectory(job.Output);
        if (job.CalibrationTokens < 0)
            throw new ArgumentException($"calibration tokens {job.CalibrationTokens} must not be negative");
        return job.Target switch
        {
            MixTarget mix => RunMix(model, job, mix, progress, cancellationToken),
            BudgetTarget budget => RunBudget(model, job, budget, progress, cancellationToken),
            PruneTarget prune => RunPrune(model, job, prune, progress, cancellationToken),
            _ => throw new ArgumentException($"unknown target {job.Target}"),
        };
    }

    private static CompressionReport RunMix(Model model, CompressionJob job, MixTarget mix, IProgress<StageProgress>? progress, CancellationToken cancellationToken)
    {
        if (job.Output is null)
            throw new ArgumentException("a named mix is written, not planned: give an output path");
        if (job.Tuning is not null)
            throw new ArgumentException("tuning tunes what a size target chose: give a size budget");
        bool calibrates = job.Method != CompressionMethod.Rtn && job.Statistics is null;
        if (calibrates && string.IsNullOrEmpty(job.CalibrationText))
            throw new ArgumentException($"method {job.Method} needs a calibration text or statistics");
        var options = EncodingOptions(job) with
        {
            Mix = mix.Mix, Pure = mix.Pure, Overrides = mix.Overrides ?? [], Sequential = job.Sequential, Resume = job.Resume, MemoryLimit = job.MemoryLimit,
        };
        if (job.RefinePasses is { } refine)
            options = options with { RefinePasses = refine };
        // Block by block, each block is calibrated, then encoded: one stage that counts tensors, calibration in its notes.
        string encoding = calibrates ? "calibrating and encoding layer by layer" : "encoding";
        var stages = new Stages(progress, [encoding, "writing"]);
        return Compressor.Compress(model, calibrates ? job.CalibrationText! : "", options, job.Output,
            new SynchronousProgress<CompressionProgress>(p =>
            {
                switch (p.Stage)
                {
                    case "writing":
                        stages.Report("writing", p.Done, p.Total, p.Note);
                        break;
                    case "quantizing":
                        stages.Report(encoding, p.Done, p.Total, p.Note);
                        break;
                    default: // calibration and AWQ between a block's tensors: the note says which
                        stages.Note(encoding, $"{p.Stage} {p.Note}".Trim());
                        break;
                }
            }), cancellationToken);
    }

    private static CompressionReport RunBudget(Model model, CompressionJob job, BudgetTarget target, IProgress<StageProgress>? progress, CancellationToken cancellationToken)
    {
        if ((target.Bytes is null) == (target.BitsPerWeight is null))
            throw new ArgumentException("give exactly one budget: bytes or bits per weight");
        if (job.Method == CompressionMethod.AwqGptq)
            throw new ArgumentException("AWQ + GPTQ is not available with a size target: use rtn, imatrix or gptq");
        if (job.Sequential || job.RefinePasses is not null || job.Resume)
            throw new ArgumentException("sequential mode, refinement passes and resuming apply to a named mix; a size target encodes every candidate itself");
        if (string.IsNullOrEmpty(job.CalibrationText))
            throw new ArgumentException("a size target needs a calibration text: candidates are measured on it");
        if (!target.Native && target.Representations is { Count: > 0 })
            throw new ArgumentException("native representations apply to the native format; GGUF candidates are llama.cpp's block types");
        if (target.Native && job.Output is { } directory)
            HuggingFaceWriter.CheckDestination(directory);
        long budget = target.Bytes ?? Allocator.BudgetForBitsPerWeight(target.BitsPerWeight!.Value, model.ParameterCount);
        if (target.Native)
            Allocator.CheckNativeBudget(model, budget);
        else
            Allocator.CheckBudget(model, budget);
        var representations = target.Representations is { Count: > 0 } given ? given : NativeRepresentation.Defaults;
        var options = new AllocationOptions { Compression = EncodingOptions(job), Swaps = target.Swaps, Candidates = target.Candidates, Budget = budget, Search = target.Search };
        bool rounded = !target.Native && Allocator.RoundsCandidates(model, options);
        if (rounded && job.Tuning is not null)
            throw new ArgumentException("--tune tunes the candidates it composes, and these are roundings that GPTQ then replaces: give --candidates method, or --method imatrix");
        var stages = new Stages(progress,
        [
            .. target.Native && representations.Any(r => r is RowSplitRepresentation) ? ["token usage"] : Array.Empty<string>(),
            job.Method != CompressionMethod.Rtn && job.Statistics is null ? Allocator.CalibratingAndEncoding : "encoding", "measuring", "searching",
            .. job.Tuning is not null && job.Output is not null ? ["tuning"] : Array.Empty<string>(),
            .. job.Output is null ? Array.Empty<string>() : rounded ? [Allocator.EncodingChosen(job.Method)] : ["writing"],
        ]);
        var clock = Stopwatch.StartNew();
        var prepared = new SynchronousProgress<AllocationProgress>(p => stages.Report(p.Stage, p.Done, p.Total, p.Note));
        if (target.Native)
        {
            using var context = Allocator.PrepareNative(model, job.CalibrationText, options, representations, prepared, cancellationToken);
            return Search(model, job, target, budget, context, stages, clock, cancellationToken);
        }
        else
        {
            using var context = Allocator.Prepare(model, job.CalibrationText, options, prepared, cancellationToken);
            return Search(model, job, target, budget, context, stages, clock, cancellationToken);
        }
    }

    private static CompressionReport Search<TSet, T>(Model model, CompressionJob job, BudgetTarget target, long budget, AllocationContext<TSet, T> context,
        Stages stages, Stopwatch clock, CancellationToken cancellationToken)
        where TSet : CandidateSet<T>
        where T : Candidate
    {
        var set = context.Candidates;
        var evolution = target.Evolution ?? new EvolutionOptions();
        double limit = evolution.TimeLimit?.TotalSeconds ?? 0;
        var searchClock = Stopwatch.StartNew();
        var allocation = Allocator.Allocate(context, budget, target.Search, ErrorModel.SwapKld, evolution,
            new SynchronousProgress<SearchStep>(s => stages.Report("searching", limit > 0 ? s.Seconds : s.Generation, limit > 0 ? limit : evolution.Generations,
                $"generation {s.Generation}, calibration KLD {s.Fitness:0.000000}")),
            cancellationToken: cancellationToken);
        double searchSeconds = searchClock.Elapsed.TotalSeconds;
        stages.Report("searching", 1, 1, "");
        TuningSummary? tuningSummary = null;
        double tuningSeconds = 0;
        long fileBytes = allocation.FileBytes;
        var chosenTensors = set.Report(allocation.Selection);
        StageSeconds? chosenSeconds = null; // encoding the chosen types anew (candidates that were roundings)
        if (job.Output is { } output)
        {
            TuningResult? tuning = null;
            if (job.Tuning is { } tuningOptions)
            {
                using var composed = set.Compose(allocation.Selection);
                var scope = target.Native ? TuningScope.Weights : TuningScope.Norms;
                tuning = Tuner.Tune(model, composed, job.CalibrationText!, tuningOptions with { Scope = scope },
                    new SynchronousProgress<TuningProgress>(p => stages.Report("tuning", p.Step, p.Steps, $"step {p.Step}/{p.Steps}, KLD {p.Kld:0.0000}")),
                    cancellationToken);
                tuningSummary = TuningSummary.Of(tuning, target.Native ? "norms and weights" : "norms");
                tuningSeconds = tuning.Seconds;
            }
            cancellationToken.ThrowIfCancellationRequested();
            if (set is GgufCandidateSet gguf && context.CandidateMethod != job.Method)
            {
                // The candidates were roundings: the chosen types are encoded with the job's method, block by block.
                string stage = Allocator.EncodingChosen(job.Method);
                var written = gguf.WriteEncoded(allocation.Selection, output, job.CalibrationText!, EncodingOptions(job),
                    new SynchronousProgress<CompressionProgress>(p =>
                    {
                        if (p.Stage == "quantizing")
                            stages.Report(stage, p.Done, p.Total, p.Note);
                        else
                            stages.Note(stage, $"{p.Stage} {p.Note}".Trim());
                    }), cancellationToken);
                fileBytes = written.FileBytes;
                chosenTensors = written.Tensors;
                chosenSeconds = written.Seconds;
                stages.Report(stage, 1, 1, output);
            }
            else
            {
                stages.Report("writing", 0, 1, output);
                fileBytes = set.Write(allocation.Selection, output, tuning);
                stages.Report("writing", 1, 1, output);
            }
        }
        string search = target.Search == SearchMethod.Evolution ? "evo" : "knapsack";
        string budgetText = target.BitsPerWeight is { } bpw ? $"{bpw:0.###} bpw" : $"{budget:N0} bytes";
        var seconds = new StageSeconds(context.CalibrationSeconds + (chosenSeconds?.Calibration ?? 0), context.EncodingSeconds + (chosenSeconds?.Encoding ?? 0),
            context.SwapSeconds, searchSeconds, tuningSeconds, clock.Elapsed.TotalSeconds);
        string note = string.Join("; ", new[]
        {
            context.SwapsPredicted ? $"single-swap KLD predicted from each tensor's output error, scaled by {context.MeasuredSwaps} measured swaps" : "",
            context.CandidateMethod != job.Method
                ? $"candidates encoded by {context.CandidateMethod.ToString().ToLowerInvariant()} rounding, "
                    + (job.Output is null ? "the chosen types to be encoded with " : "the chosen types then encoded with ") + job.Method.ToString().ToLowerInvariant()
                    + $" (--candidates auto does so above {Allocator.MethodCandidateWork:0e0} multiply-adds of GPTQ in every type)"
                : "",
            allocation.Note,
        }.Where(n => n.Length > 0));
        return new CompressionReport(model.Source, job.Output, target.Native ? "native" : "gguf", budgetText, job.Method, Sequential: false, fileBytes,
            set.Parameters, set.BitsPerWeight(fileBytes), budget, search, allocation.PredictedError, allocation.Evolution?.StartFitness, allocation.Evolution?.Fitness,
            allocation.Evolution?.Generations, context.CalibrationTokens, (context.CalibrationTokens > 0 ? 1 : 0) + (chosenSeconds is null ? 0 : 1), seconds, [], tuningSummary, note, chosenTensors)
        {
            EstimatedMemoryBytes = context.Estimate.MemoryBytes,
            EstimatedStages = context.Estimate.Stages,
        };
    }

    private static CompressionReport RunPrune(Model model, CompressionJob job, PruneTarget target, IProgress<StageProgress>? progress, CancellationToken cancellationToken)
    {
        if (job.Output is not { } output)
            throw new ArgumentException("a pruned model is written, not planned: give an output directory");
        if (job.Tuning is not null || job.Sequential || job.RefinePasses is not null || job.Resume)
            throw new ArgumentException("tuning, sequential mode, refinement passes and resuming do not apply to pruning");
        HuggingFaceWriter.CheckDestination(output);
        bool needsStatistics = target.Method != PruningMethod.Magnitude;
        bool calibrates = needsStatistics && job.Statistics is null;
        if (calibrates && string.IsNullOrEmpty(job.CalibrationText))
            throw new ArgumentException($"{target.Method} pruning needs a calibration text or statistics");
        var stages = new Stages(progress, [.. calibrates ? ["calibrating"] : Array.Empty<string>(), "pruning", "writing"]);
        var clock = Stopwatch.StartNew();
        var statistics = !needsStatistics ? null : job.Statistics ?? Calibrator.Run(model, job.CalibrationText!, new CalibrationOptions
        {
            ContextLength = job.ContextLength,
            MaxTokens = job.CalibrationTokens,
            CollectGram = target.Method == PruningMethod.SparseGpt,
            Threads = Math.Max(1, job.Threads),
            Workers = job.CalibrationWorkers,
        }, new SynchronousProgress<CalibrationProgress>(p => stages.Report("calibrating", p.Done, p.Total, p.Note)), cancellationToken);
        double calibrationSeconds = calibrates ? clock.Elapsed.TotalSeconds : 0;
        var weights = ModelPruner.Prune(model, target.Pattern, target.Method, statistics, new PruningOptions { DampingFraction = job.Damping, Threads = Math.Max(1, job.Threads) },
            new SynchronousProgress<(int Done, int Total)>(p => stages.Report("pruning", p.Done, p.Total, $"{target.Pattern} by {target.Method}")), cancellationToken);
        double pruningSeconds = clock.Elapsed.TotalSeconds - calibrationSeconds;
        cancellationToken.ThrowIfCancellationRequested();
        stages.Report("writing", 0, 1, output);
        NativeModelWriter.Write(model, output, weights.ToDictionary(w => w.Name, StringComparer.Ordinal));
        stages.Report("writing", 1, 1, output);
        long fileBytes = new DirectoryInfo(output).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
        string encoding = $"{target.Method.ToString().ToLowerInvariant()} {target.Pattern}";
        var tensors = weights.Select(w =>
        {
            // Plain relative squared error of the pruned matrix (SparseGPT's updated kept values included).
            double error = Compressor.RelativeError(model.Weight(w.Name).Decode(), w.Decode(), w.Rows, w.Columns, [], [], Math.Max(1, job.Threads));
            return new TensorReport(w.Name, model.Contains(w.Name) ? model[w.Name].Type.ToString() : "", w.Scheme, [w.Rows, w.Columns], w.StoredBytes, w.BitsPerWeight,
                encoding, "none", ErrorBefore: null, error, SwapKld: null, "pruned", Seconds: null);
        }).ToList();
        var seconds = new StageSeconds(calibrationSeconds, pruningSeconds, 0, 0, 0, clock.Elapsed.TotalSeconds);
        return new CompressionReport(model.Source, output, "native", encoding, Method: null, Sequential: false, fileBytes, model.ParameterCount,
            8.0 * fileBytes / model.ParameterCount, Budget: null, Search: null, PredictedKld: null, StartKld: null, SearchKld: null, Generations: null,
            statistics?.TokenCount ?? 0, calibrates ? 1 : 0, seconds, [], Tuning: null, Note: "", tensors);
    }

    // The stage in which a budget job whose candidates were roundings encodes the chosen types with its method.
    /// <summary>How the job's tensors (or candidates) are encoded: method, calibration, GPTQ's settings, threads.</summary>
    private static CompressionOptions EncodingOptions(CompressionJob job) => new()
    {
        Method = job.Method,
        CalibrationTokens = job.CalibrationTokens,
        ContextLength = job.ContextLength,
        Damping = job.Damping,
        ActivationOrder = job.ActivationOrder,
        Statistics = job.Method == CompressionMethod.Rtn ? null : job.Statistics,
        Threads = Math.Max(1, job.Threads),
        MemoryLimit = job.MemoryLimit,
        Workers = job.Workers,
        CalibrationWorkers = job.CalibrationWorkers,
    };

    /// <summary>Maps each sub-step's progress to its stage's number of the job's stages.</summary>
    private sealed class Stages(IProgress<StageProgress>? sink, string[] names)
    {
        private readonly Dictionary<string, (double Done, double Total)> last = [];

        public void Report(string stage, double done, double total, string note)
        {
            int number = Number(stage);
            last[stage] = (done, total);
            sink?.Report(new StageProgress(stage, number, names.Length, done, total, note));
        }

        public void Note(string stage, string note)
        {
            var (done, total) = last.GetValueOrDefault(stage, (0, 1));
            sink?.Report(new StageProgress(stage, Number(stage), names.Length, done, total, note));
        }

        private int Number(string stage)
        {
            int i = Array.IndexOf(names, stage);
            return i >= 0 ? i + 1 : throw new InvalidOperationException($"stage '{stage}' is not one of {string.Join(", ", names)}");
        }
    }
}
