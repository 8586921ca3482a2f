using System.Diagnostics;
using System.Globalization;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Allocation;

/// <summary>The per-candidate damage the knapsack sums.</summary>
public enum ErrorModel
{
    /// <summary>Measured KLD of the model with this one tensor swapped (error model 2, the default).</summary>
    SwapKld,

    /// <summary>Relative calibration-weighted output error of the tensor (error model 1).</summary>
    OutputError,
}

/// <summary>How every candidate's single-swap KLD (<see cref="ErrorModel.SwapKld"/>) is found.</summary>
public enum SwapMeasurement
{
    /// <summary><see cref="All"/> while every swap costs at most <see cref="Allocator.MeasuredSwapWork"/> parameter-tokens
    /// in all, else <see cref="Sampled"/>; always <see cref="All"/> for round-to-nearest candidates, which have no output
    /// error to predict from.</summary>
    Auto,

    /// <summary>Every candidate measured: one forward pass per candidate.</summary>
    All,

    /// <summary>Predicted: a sample of tensors measured, the rest scaled from their output error
    /// (<see cref="Allocator.PredictSwaps"/>); refused for round-to-nearest candidates, which have none.</summary>
    Sampled,
}

/// <summary>How the candidates of a GGUF size target are encoded.</summary>
public enum CandidateEncoding
{
    /// <summary><see cref="Method"/> while GPTQ in every candidate type costs at most
    /// <see cref="Allocator.MethodCandidateWork"/> multiply-adds, else <see cref="Rounding"/>; the same as
    /// <see cref="Method"/> for rtn and imatrix, whose candidates are roundings already.</summary>
    Auto,

    /// <summary>Every candidate encoded with the job's method (GPTQ in every type): the search weighs the errors of
    /// exactly the bytes it writes.</summary>
    Method,

    /// <summary>Every candidate encoded by importance-weighted rounding (imatrix, with llama.cpp's scale search alone,
    /// <see cref="Quantization.ScaleSearch.LlamaCpp"/>: these bytes are never written), whose output errors and single
    /// swaps the search weighs; then only each tensor's chosen type is encoded with the job's method, block by block as a
    /// named mix is (<see cref="Compression.Compressor"/>): one GPTQ per tensor instead of one per type. The sizes do not
    /// depend on the encoding, so the file is the size the search chose.</summary>
    Rounding,
}

/// <summary>How the assignment is searched.</summary>
public enum SearchMethod
{
    /// <summary>The exact multiple-choice knapsack on the summed error.</summary>
    Knapsack,

    /// <summary>The knapsack's answer improved by <see cref="EvolutionarySearch"/> on end-to-end KLD.</summary>
    Evolution,
}

/// <summary>Settings of <see cref="Allocator.Prepare"/>.</summary>
public sealed record AllocationOptions
{
    /// <summary>How candidates are encoded (method, calibration tokens, context, damping, threads).</summary>
    public CompressionOptions Compression { get; init; } = new();

    /// <summary>Calibration chunks held for KLD measurements (single swaps and evolution's fitness).</summary>
    public int KldChunks { get; init; } = 8;

    /// <summary>Chunks (the first ones held) on which each single swap is measured.</summary>
    public int SwapChunks { get; init; } = 2;

    /// <summary>The types tried; default <see cref="GgufCandidateSet.DefaultTypes"/>.</summary>
    public IReadOnlyList<Squeeze.Tensors.GgmlType>? Types { get; init; }

    /// <summary>Every single swap measured, or predicted from a sample (by default, measured while affordable).</summary>
    public SwapMeasurement Swaps { get; init; } = SwapMeasurement.Auto;

    /// <summary>GGUF candidates encoded with the method, or by rounding with the method applied to the chosen types
    /// only (by default, with the method while affordable).</summary>
    public CandidateEncoding Candidates { get; init; } = CandidateEncoding.Auto;

    /// <summary>The byte budget the candidates will be searched under, when known: the estimates
    /// (<see cref="Allocator.EstimateNative(Model, IReadOnlyList{NativeRepresentation}, AllocationOptions, long)"/>,
    /// <see cref="Allocator.EstimateGguf(Model, AllocationOptions, long)"/>) count the knapsack's table for it and the
    /// native output read back to be written at most this large (0: every tensor in its largest candidate, the
    /// knapsack's largest table).</summary>
    public long Budget { get; init; }

    /// <summary>The search the candidates will go through, for the estimates: <see cref="SearchMethod.Evolution"/> also
    /// holds a forward pass and a composed selection while it searches.</summary>
    public SearchMethod Search { get; init; } = SearchMethod.Knapsack;
}

/// <summary>Progress of preparing or searching: stage, steps done of the total, and a note.</summary>
public readonly record struct AllocationProgress(string Stage, int Done, int Total, string Note);

/// <summary>Everything a budget search needs, made once per model and calibration text: the encoded candidates with
/// both error models, and the KLD meter. Dispose to delete the candidate file.</summary>
public sealed class AllocationContext<TSet, T> : IDisposable
    where TSet : CandidateSet<T>
    where T : Candidate
{
    internal AllocationContext(TSet candidates, KldMeter meter, CompressionMethod candidateMethod, long calibrationTokens, double calibrationSeconds, double encodingSeconds,
        double swapSeconds, int measuredSwaps, bool swapsPredicted)
    {
        CandidateMethod = candidateMethod;
        MeasuredSwaps = measuredSwaps;
        SwapsPredicted = swapsPredicted;
        Candidates = candidates;
        Meter = meter;
        CalibrationTokens = calibrationTokens;
        CalibrationSeconds = calibrationSeconds;
        EncodingSeconds = encodingSeconds;
        SwapSeconds = swapSeconds;
    }

    /// <summary>Every tensor encoded in every candidate representation, with its single-swap KLD measured.</summary>
    public TSet Candidates { get; }

    /// <summary>KLD against the source model on the held calibration chunks.</summary>
    public KldMeter Meter { get; }

    /// <summary>How the candidates were encoded: the job's method, or <see cref="CompressionMethod.Imatrix"/> when a
    /// GPTQ job's candidates are roundings (<see cref="CandidateEncoding.Rounding"/>) and the chosen types are still to
    /// be encoded with GPTQ.</summary>
    public CompressionMethod CandidateMethod { get; }

    /// <summary>Calibration tokens the candidates' statistics were collected on (0 when the encoders need none).</summary>
    public long CalibrationTokens { get; }

    /// <summary>Time spent collecting the activation statistics.</summary>
    public double CalibrationSeconds { get; }

    /// <summary>Time spent encoding every candidate.</summary>
    public double EncodingSeconds { get; }

    /// <summary>Time spent measuring (or predicting) every candidate's single-swap KLD.</summary>
    public double SwapSeconds { get; }

    /// <summary>Single swaps measured by a forward pass.</summary>
    public int MeasuredSwaps { get; }

    /// <summary>True when most candidates' single-swap KLD is predicted from a sample (<see cref="Allocator.PredictSwaps"/>).</summary>
    public bool SwapsPredicted { get; }

    /// <summary>What the job was estimated to hold and write before it started, and was checked against.</summary>
    public required ResourceEstimate Estimate { get; init; }

    /// <summary>Releases the candidate set (the GGUF set's file is deleted).</summary>
    public void Dispose() => Candidates.Dispose();
}

/// <summary>An assignment found for a budget.</summary>
/// <param name="Selection">Candidate index per tensor of <see cref="AllocationContext{TSet, T}.Candidates"/>.</param>
/// <param name="Budget">The byte budget of the whole file.</param>
/// <param name="FileBytes">The exact size of the file (≤ <paramref name="Budget"/>).</param>
/// <param name="BitsPerWeight">8 · file bytes / parameters.</param>
/// <param name="Search">How it was found.</param>
/// <param name="PredictedError">Σ of the error model over the tensors.</param>
/// <param name="KnapsackSeconds">Time of the knapsack.</param>
/// <param name="Evolution">The evolutionary search, when it ran.</param>
/// <param name="Note">What the caller should know (budget above the largest file, …), or empty.</param>
public sealed record BudgetAllocation(int[] Selection, long Budget, long FileBytes, double BitsPerWeight, SearchMethod Search, double PredictedError,
    double KnapsackSeconds, EvolutionResult? Evolution, string Note);

/// <summary>
/// Per-tensor formats under an exact byte budget: candidates encoded once (<see cref="CandidateSet{T}"/>), each with two
/// error estimates, the exact multiple-choice knapsack on the summed error, and optionally EvoPress-style evolution on
/// the model's own KL divergence. Budgets are whole-file bytes (header, metadata and padding included); bits per weight
/// means file bytes × 8 / parameters.
/// </summary>
public static class Allocator
{
    /// <summary>Encodes every tensor in every GGUF type of the options, one block at a time (calibrating each block as it
    /// comes unless statistics are given), and measures every single swap.</summary>
    public static AllocationContext<GgufCandidateSet, GgufCandidate> Prepare(Model model, string calibrationText, AllocationOptions options, IProgress<AllocationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        // Rounded candidates of a GPTQ job are still calibrated with the Gram matrices, so that their output errors are
        // the ones GPTQ's candidates would have (tr(E H Eᵀ), not its diagonal's) and a statistics file is checked for them.
        bool gram = options.Compression.Method == CompressionMethod.Gptq;
        // Before any work (Prepare checks the estimate first): the candidate file against the temporary directory's free
        // disk, and the peak of the job's stages against the memory available.
        var estimate = new Estimate(tokens => EstimateGguf(model, options, tokens), "squeeze-candidates-….bin", "candidate types");
        var candidates = RoundsCandidates(model, options)
            ? options with { Compression = options.Compression with { Method = CompressionMethod.Imatrix, ScaleSearch = ScaleSearch.LlamaCpp } }
            : options;
        return Prepare<GgufCandidateSet, GgufCandidate>(model, calibrationText, candidates, gram, estimate, (blocks, p) =>
            GgufCandidateSet.Build(model, blocks, new CandidateOptions { Compression = candidates.Compression, Types = candidates.Types }, p, cancellationToken), progress, cancellationToken);
    }

    /// <summary>Multiply-adds of GPTQ in every candidate type up to which <see cref="CandidateEncoding.Auto"/> encodes the
    /// candidates with GPTQ: Σ over the 2-D tensors of types × rows × columns² (about 6·10¹⁰ for stories15M, 3.6·10¹³ for a
    /// 1.1B-parameter Llama, where one GPTQ per type would take hours).</summary>
    public const double MethodCandidateWork = 1e12;

    /// <summary>True when <see cref="Prepare"/> encodes the GGUF candidates of <paramref name="options"/>' GPTQ job by
    /// importance-weighted rounding (<see cref="CandidateEncoding.Rounding"/>, or <see cref="CandidateEncoding.Auto"/>
    /// above <see cref="MethodCandidateWork"/>), so that only the chosen types are to be encoded with GPTQ.</summary>
    public static bool RoundsCandidates(Model model, AllocationOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        return RoundsCandidates(GgufCandidateSet.Matrices(model), options);
    }

    /// <summary>The same from the shapes of the tensors that take candidates (<see cref="GgufCandidateSet.Matrices"/>).</summary>
    public static bool RoundsCandidates(IReadOnlyList<(string Name, long[] Shape)> matrices, AllocationOptions options)
    {
        ArgumentNullException.ThrowIfNull(matrices);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Compression.Method != CompressionMethod.Gptq || options.Candidates == CandidateEncoding.Method)
            return false;
        if (options.Candidates == CandidateEncoding.Rounding)
            return true;
        int types = (options.Types ?? GgufCandidateSet.DefaultTypes).Count;
        double work = matrices.Sum(m => (double)types * m.Shape.Aggregate(1L, (a, b) => a * b) * m.Shape[^1]);
        return work > MethodCandidateWork;
    }

    /// <summary>The stage in which a size target whose GGUF candidates are roundings (<see cref="RoundsCandidates(Model, AllocationOptions)"/>)
    /// calibrates again and encodes each tensor's chosen type with <paramref name="method"/>, block by block, as it writes
    /// the file (<see cref="GgufCandidateSet.WriteEncoded"/>).</summary>
    public static string EncodingChosen(CompressionMethod method) => $"calibrating and encoding the chosen types with {method.ToString().ToLowerInvariant()}";

    /// <summary>Measures the token usage on the calibration text when a row split is among
    /// <paramref name="representations"/>, encodes every 2-D tensor in every representation that fits it, one block at a
    /// time (calibrating each block as it comes unless statistics are given), and measures every single swap.</summary>
    public static AllocationContext<NativeCandidateSet, NativeCandidate> PrepareNative(Model model, string calibrationText, AllocationOptions options,
        IReadOnlyList<NativeRepresentation> representations, IProgress<AllocationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(representations);
        ArgumentNullException.ThrowIfNull(model);
        // Before any work (Prepare checks the estimate first): the candidate files against the temporary directory's free
        // disk, and the peak of the job's stages against the memory available.
        return Prepare<NativeCandidateSet, NativeCandidate>(model, calibrationText, options, options.Compression.Method == CompressionMethod.Gptq,
            new(tokens => EstimateNative(model, representations, options, tokens), "squeeze-….tmp", "representations"), (blocks, p) =>
            {
                // Only the row splits read the token usage, which takes a forward pass over the text.
                var usage = !representations.Any(r => r.NeedsTokenUsage) ? null
                    : TokenUsage.Measure(model, calibrationText, options.Compression.CalibrationTokens, ContextLength(model.Config, options.Compression), options.Compression.Threads,
                        progress is null ? null : new SynchronousProgress<(int Done, int Total)>(u => progress.Report(new AllocationProgress("token usage", u.Done, u.Total, ""))), cancellationToken);
                return NativeCandidateSet.Build(model, blocks, options.Compression, usage, representations, p, cancellationToken);
            }, progress, cancellationToken);
    }

    /// <summary>
    /// What a native size target (<see cref="PrepareNative"/>, then the search and the write) will hold at its peak and
    /// write to the temporary directory, from the shapes alone, stage by stage (<see cref="ResourceEstimate.Peak"/>):
    /// encoding (block-by-block calibration, what levels keep per input (<see cref="NativeRepresentation.KeptPerInput"/>),
    /// the largest tensor's buffers, one tensor's candidates held until they are written to its file); then the stages
    /// every size target shares (<see cref="SearchStages"/>), a candidate read back for each single swap and, with
    /// evolution, the whole selection for each model it composes; writing (the meter, the chosen candidates read back
    /// and serialized once more: twice the output, at most <see cref="AllocationOptions.Budget"/>). Disk: the candidate files,
    /// <see cref="NativeCandidateSet.CandidateFileBytes"/>.
    /// </summary>
    public static ResourceEstimate EstimateNative(Model model, IReadOnlyList<NativeRepresentation> representations, AllocationOptions options, long calibrationTokens)
    {
        ArgumentNullException.ThrowIfNull(model);
        return EstimateNative(model.Config, NativeCandidateSet.Matrices(model), representations, options, calibrationTokens);
    }

    /// <summary>The same estimate from the model's hyperparameters and the shapes of its matrices (<paramref name="matrices"/>:
    /// <see cref="NativeCandidateSet.Matrices"/> of a model, or the tensors a config implies for a checkpoint too large to
    /// write).</summary>
    public static ResourceEstimate EstimateNative(ModelConfig config, IReadOnlyList<(string Name, long[] Shape)> matrices, IReadOnlyList<NativeRepresentation> representations,
        AllocationOptions options, long calibrationTokens)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(matrices);
        ArgumentNullException.ThrowIfNull(representations);
        ArgumentNullException.ThrowIfNull(options);
        var method = options.Compression.Method;
        var bounds = matrices.Select(m => NativeCandidateSet.CandidateBounds(m, representations).ToList()).Where(b => b.Count > 0).ToList();
        long largestCandidate = bounds.SelectMany(b => b).DefaultIfEmpty(0).Max();
        long largestSelection = bounds.Sum(b => b.Max());
        long output = options.Budget > 0 ? Math.Min(options.Budget, largestSelection) : largestSelection;
        // A stacked tensor of experts is encoded one expert at a time: its largest buffers are one expert's.
        long largest = matrices.Select(m => m.Shape[^2] * m.Shape[^1]).DefaultIfEmpty(0).Max();
        var encoding = ResourceEstimate.CalibrationParts(config, method, calibrationTokens);
        // GPTQ's calibration (Gram matrices) makes some levels keep more per input: a Hessian in natural order, whitenings.
        if (method == CompressionMethod.Gptq && calibrationTokens > 0)
        {
            foreach (string kept in representations.SelectMany(r => r.KeptPerInput).Distinct())
                encoding.Add(($"the {kept} of every input of one block", ResourceEstimate.PerInputPairBytes(config)));
        }
        encoding.Add(("encoding the largest tensor", ResourceEstimate.EncodingBytes(largest)));
        long nested = matrices.SelectMany(m => representations.Where(r => r.MayFit(m.Name, (int)m.Shape[^2], (int)m.Shape[^1]))
            .Select(r => r.NestedValuesBytes((int)m.Shape[^2], (int)m.Shape[^1]))).DefaultIfEmpty(0).Max();
        if (nested > 0)
            encoding.Add(("a row split's copies of its row subsets", nested));
        encoding.Add(("one tensor's candidates, held until written to its file", bounds.Select(b => b.Sum()).DefaultIfEmpty(0).Max()));
        encoding.Add(("the runtime", ResourceEstimate.RuntimeBytes(config)));
        return ResourceEstimate.Peak(
        [
            (calibrationTokens > 0 && method != CompressionMethod.Rtn ? CalibratingAndEncoding : "encoding", encoding),
            .. SearchStages(config, options, calibrationTokens, bounds.Count, NativeCandidateSet.CandidateGrain, ("a candidate read back", largestCandidate),
                ("the chosen candidates read back", output), ("writing", [("the chosen candidates read back and serialized, twice the output", 2 * output)])),
        ], NativeCandidateSet.CandidateFileBytes(matrices, representations));
    }

    /// <summary>
    /// What a GGUF size target (<see cref="Prepare"/>, then the search and the write) will hold at its peak and write to
    /// the temporary directory, from the shapes alone, stage by stage (<see cref="ResourceEstimate.Peak"/>): encoding
    /// the candidates block by block (<see cref="ResourceEstimate.MixParts"/>: the calibration's buffers, with the Gram
    /// matrices and GPTQ's prepared Hessians for a GPTQ job, and the buffers of encoding the largest tensor in its
    /// largest type; each candidate goes to the candidate file as it is encoded); then the stages every size target
    /// shares (<see cref="SearchStages"/>: measuring, searching), whose candidates are read from the mapped candidate
    /// file (the kernel's pages, not the job's); and writing, from the candidate file, or, when the candidates are
    /// roundings (<see cref="RoundsCandidates(Model, AllocationOptions)"/>), calibrating again and encoding the chosen
    /// types with the job's method block by block (<see cref="EncodingChosen"/>; the largest tensor counted in its
    /// largest candidate type). Disk: the candidate file, <see cref="GgufCandidateSet.CandidateFileBytes(Model, IReadOnlyList{GgmlType})"/>.
    /// </summary>
    public static ResourceEstimate EstimateGguf(Model model, AllocationOptions options, long calibrationTokens)
    {
        ArgumentNullException.ThrowIfNull(model);
        return EstimateGguf(model.Config, GgufCandidateSet.Matrices(model), options, calibrationTokens);
    }

    /// <summary>The same estimate from the model's hyperparameters and the shapes of the tensors that take candidates
    /// (<paramref name="matrices"/>: <see cref="GgufCandidateSet.Matrices"/> of a model, or the tensors a config implies
    /// for a checkpoint too large to write).</summary>
    public static ResourceEstimate EstimateGguf(ModelConfig config, IReadOnlyList<(string Name, long[] Shape)> matrices, AllocationOptions options, long calibrationTokens)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(matrices);
        ArgumentNullException.ThrowIfNull(options);
        var method = options.Compression.Method;
        var types = options.Types ?? GgufCandidateSet.DefaultTypes;
        var largest = ResourceEstimate.LargestGgufEncoding(matrices.SelectMany(m => GgufCandidateSet.Fitting(m.Shape[^1], types).Select(type => (m.Name, m.Shape, type))));
        // Rounded candidates of a GPTQ job are calibrated with the Gram matrices all the same (Prepare), so the
        // candidates' stage is counted as GPTQ's.
        bool calibrates = calibrationTokens > 0 && method != CompressionMethod.Rtn;
        List<(string, long)> encoding = [.. ResourceEstimate.MixParts(config, method, calibrationTokens, largest), ("the runtime", ResourceEstimate.RuntimeBytes(config))];
        var writing = RoundsCandidates(matrices, options)
            ? (EncodingChosen(method), ResourceEstimate.MixParts(config, method, calibrationTokens, largest))
            : ("writing", new List<(string, long)>());
        return ResourceEstimate.Peak(
        [
            (calibrates ? CalibratingAndEncoding : "encoding", encoding),
            .. SearchStages(config, options, calibrationTokens, matrices.Count, Formats.Gguf.GgufFile.DefaultAlignment, null, null, writing),
        ], GgufCandidateSet.CandidateFileBytes(matrices, options.Types));
    }

    /// <summary>
    /// The stages every size target goes through once its candidates are encoded, each with the KLD meter's reference
    /// log-probabilities (<see cref="KldMeter.ReferenceBytes"/>) and the runtime: measuring (the calibration's residual
    /// stream, still held, a chunk's forward pass, <paramref name="swapped"/>: a candidate read back for a single swap
    /// when candidates are not mapped in place); searching (the knapsack's table for the budget's cells; with
    /// <see cref="SearchMethod.Evolution"/> also a chunk's forward pass and <paramref name="composed"/>, a selection read
    /// back); and <paramref name="writing"/>'s stage, which also holds the meter and the runtime.
    /// </summary>
    private static IEnumerable<(string Stage, IReadOnlyList<(string Part, long Bytes)> Parts)> SearchStages(ModelConfig config, AllocationOptions options, long calibrationTokens,
        int tensors, long grain, (string Part, long Bytes)? swapped, (string Part, long Bytes)? composed, (string Stage, List<(string Part, long Bytes)> Parts) writing)
    {
        long runtime = ResourceEstimate.RuntimeBytes(config);
        int ctx = ContextLength(config, options.Compression);
        int chunks = Math.Max(options.KldChunks, options.SwapChunks);
        var meter = ($"the KLD meter's reference log-probabilities of {chunks} chunks", KldMeter.ReferenceBytes(config.VocabSize, ctx, chunks));
        var forward = ("a chunk's forward pass (logits and activations)", KldMeter.ForwardBytes(config, ctx));
        long cells = options.Budget > 0 ? Math.Min(options.Budget / grain + 1, KnapsackCells) : KnapsackCells;
        var held = calibrationTokens > 0 && options.Compression.Method != CompressionMethod.Rtn ? [ResourceEstimate.ResidualStream(config, calibrationTokens)] : new List<(string, long)>();
        List<(string, long)> measuring = [.. held, meter, forward, .. swapped is { } s ? [s] : Array.Empty<(string, long)>(), ("the runtime", runtime)];
        List<(string, long)> searching = [meter, ("the knapsack's table", MultipleChoiceKnapsack.TableBytes(tensors, cells)), ("the runtime", runtime)];
        if (options.Search == SearchMethod.Evolution)
            searching.AddRange([forward, .. composed is { } c ? [c] : Array.Empty<(string, long)>()]);
        yield return ("measuring", measuring);
        yield return ("searching", searching);
        yield return (writing.Stage, [meter, .. writing.Parts, ("the runtime", runtime)]);
    }

    /// <summary>Cells of the knapsack's grid at most: above it, the greedy repair spends what rounding left.</summary>
    private const int KnapsackCells = 1 << 22;

    // The job's resources for its calibration tokens, checked before any work; the candidate files' name in the temporary
    // directory and what the candidates are, for the refusal's message.
    private sealed record Estimate(Func<long, ResourceEstimate> Of, string CandidateFile, string Levels);

    // `gram`: collect (or require in a statistics file) the Gram matrices of the blocks' inputs.
    private static AllocationContext<TSet, T> Prepare<TSet, T>(Model model, string calibrationText, AllocationOptions options, bool gram,
        Estimate estimate, Func<IEnumerable<BlockStatistics>?, IProgress<CandidateProgress>?, TSet> build, IProgress<AllocationProgress>? progress,
        CancellationToken cancellationToken)
        where TSet : CandidateSet<T>
        where T : Candidate
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibrationText);
        CheckSwaps(options);
        var compression = options.Compression;
        int ctx = ContextLength(model.Config, compression);
        int threads = Math.Max(1, compression.Threads);
        var clock = Stopwatch.StartNew();
        var calibrationClock = new Stopwatch();
        var given = compression.Method == CompressionMethod.Rtn ? null : compression.Statistics;
        if (given is not null)
            Compressor.CheckStatistics(model, given, needsGram: gram);
        // The encoding's progress, which the calibration's notes keep while a block is calibrated.
        var (done, total) = (0, 1);
        var calibrationOptions = new CalibrationOptions { ContextLength = ctx, MaxTokens = compression.CalibrationTokens, CollectGram = gram, Threads = threads, Workers = compression.CalibrationWorkers };
        var chunks = given is not null || compression.Method == CompressionMethod.Rtn ? null : LayerwiseCalibrator.Chunk(model, calibrationText, calibrationOptions);
        long calibrationTokens = chunks?.TokenCount ?? given?.TokenCount ?? 0;
        var resources = estimate.Of(calibrationTokens);
        resources.Check(Path.Combine(Path.GetTempPath(), estimate.CandidateFile), compression.MemoryLimit,
            $"use fewer calibration tokens than {calibrationTokens:N0}, or fewer {estimate.Levels}; the candidates go to the temporary directory (TMPDIR)");
        using var calibration = chunks is null ? null : new LayerwiseCalibrator(model, chunks, calibrationOptions, cancellationToken);
        // Calibrating, each block just before its candidates are encoded, is one stage with the encoding.
        string stage = calibration is null ? "encoding" : CalibratingAndEncoding;
        var blocks = calibration is not null
            ? Timed(calibration.Blocks(progress is null ? null : new SynchronousProgress<CalibrationProgress>(p => progress.Report(new AllocationProgress(stage, done, total, $"calibrating {p.Note}")))), calibrationClock)
            : given is not null ? BlockStatistics.Of(given, model.Config.LayerCount) : null;
        var set = build(blocks, progress is null ? null : new SynchronousProgress<CandidateProgress>(p =>
        {
            (done, total) = (p.Done, p.Total);
            progress.Report(new AllocationProgress(stage, p.Done, p.Total, p.Note));
        }));
        try
        {
            double calibrationSeconds = calibrationClock.Elapsed.TotalSeconds;
            double encodingSeconds = clock.Elapsed.TotalSeconds - calibrationSeconds;
            clock.Restart();
            progress?.Report(new AllocationProgress("measuring", 0, 1, "base model"));
            var meter = new KldMeter(model, calibrationText, ctx, Math.Max(options.KldChunks, options.SwapChunks), threads);
            var swapChunks = Enumerable.Range(0, options.SwapChunks).ToArray();
            int candidates = set.Tensors.Sum(t => t.Options.Count);
            bool sample = options.Swaps == SwapMeasurement.Sampled
                || (options.Swaps == SwapMeasurement.Auto && HasOutputErrors(options.Compression) && (double)candidates * model.ParameterCount * meter.ScoredPerChunk * swapChunks.Length > MeasuredSwapWork);
            int measured = candidates;
            if (sample)
            {
                var predicted = PredictSwaps(set, meter, swapChunks, out measured, progress: progress, cancellationToken: cancellationToken);
                for (int i = 0; i < set.Tensors.Count; i++)
                {
                    for (int k = 0; k < predicted[i].Length; k++)
                        set.SetSwapKld(i, k, predicted[i][k]);
                }
            }
            else
            {
                MeasureSwaps(set, meter, swapChunks, progress, cancellationToken);
            }
            long tokens = calibration?.TokenCount ?? given?.TokenCount ?? 0;
            return new AllocationContext<TSet, T>(set, meter, compression.Method, tokens, calibrationSeconds, encodingSeconds, clock.Elapsed.TotalSeconds, measured, sample)
            {
                Estimate = resources,
            };
        }
        catch
        {
            set.Dispose();
            throw;
        }
    }

    // Round-to-nearest candidates are encoded without calibration statistics, so they have no output error to predict a
    // swap's KLD from: Auto measures every swap for them, and Sampled is refused before any work.
    private static bool HasOutputErrors(CompressionOptions compression) => compression.Method != CompressionMethod.Rtn;

    private static void CheckSwaps(AllocationOptions options)
    {
        if (options.Swaps == SwapMeasurement.Sampled && !HasOutputErrors(options.Compression))
            throw new ArgumentException("sampled swaps predict each candidate's KLD from its calibrated output error, which rtn candidates do not have: use --method imatrix (one calibration pass more), or --swaps all");
    }

    // The blocks as they are enumerated, the time each takes to collect counted on `clock`.
    private static IEnumerable<BlockStatistics> Timed(IEnumerable<BlockStatistics> blocks, Stopwatch clock)
    {
        using var e = blocks.GetEnumerator();
        while (true)
        {
            clock.Start();
            bool more = e.MoveNext();
            clock.Stop();
            if (!more)
                yield break;
            yield return e.Current;
        }
    }

    /// <summary>The stage <see cref="Prepare"/> reports while it calibrates each block and encodes its candidates.</summary>
    public const string CalibratingAndEncoding = "calibrating and encoding layer by layer";

    /// <summary>Tokens per calibration chunk: the options' own, else 256 (or the model's context when shorter).</summary>
    private static int ContextLength(ModelConfig config, CompressionOptions compression)
        => compression.ContextLength > 0 ? compression.ContextLength : Math.Min(256, config.ContextLength);

    /// <summary>Error model 2: for every candidate, the KLD on <paramref name="chunks"/> of the source model with that one tensor swapped in.</summary>
    public static void MeasureSwaps<T>(CandidateSet<T> set, KldMeter meter, IReadOnlyList<int> chunks, IProgress<AllocationProgress>? progress = null,
        CancellationToken cancellationToken = default)
        where T : Candidate
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(meter);
        int total = set.Tensors.Sum(t => t.Options.Count), done = 0;
        var selection = Enumerable.Repeat(-1, set.Tensors.Count).ToArray();
        for (int i = 0; i < set.Tensors.Count; i++)
        {
            for (int k = 0; k < set.Tensors[i].Options.Count; k++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new AllocationProgress("measuring", done, total, $"{set.Tensors[i].Name} {set.Tensors[i].Options[k].Format}"));
                selection[i] = k;
                using (var model = set.Compose(selection))
                    set.SetSwapKld(i, k, meter.Measure(model, chunks));
                done++;
            }
            selection[i] = -1;
        }
        progress?.Report(new AllocationProgress("measuring", total, total, ""));
    }

    /// <summary>Parameter-tokens (parameters × tokens scored per swap × swaps) up to which <see cref="SwapMeasurement.Auto"/>
    /// measures every swap: about two hours of forward passes on two cores. stories15M's native levels are 1.3·10¹³; a
    /// 1.1B model's GGUF types 10¹⁵.</summary>
    public const double MeasuredSwapWork = 1e14;

    /// <summary>Depths of the blocks whose tensors <see cref="PredictSwaps"/> measures: the first, quarter, middle,
    /// three-quarter and last block.</summary>
    public static IReadOnlyList<int> SampledLayers(int layerCount)
        => [.. new[] { 0, 0.25, 0.5, 0.75, 1 }.Select(f => (int)Math.Round(f * (layerCount - 1))).Distinct()];

    /// <summary>
    /// Error model 2 where a forward pass per candidate cannot be afforded: each tensor's single-swap KLD taken as
    /// proportional to its calibration output error (the layer's own damage on the captured activations), KLD(t, c) ≈
    /// s_t · e_t(c). The sensitivity s_t is measured on a sample — every tensor outside the blocks and each kind of block
    /// tensor at the depths of <see cref="SampledLayers"/> — as the swap KLD of its candidate nearest 4 bits per weight
    /// over that candidate's output error, and interpolated linearly in depth for the other blocks of the same kind.
    /// One forward pass per sampled tensor instead of one per candidate; a tensor outside the blocks that has no output
    /// error (an untied embedding, which no activation enters) has each candidate measured. Returns the prediction per
    /// tensor and candidate; <paramref name="measured"/> is the number of forward passes.
    /// </summary>
    /// <param name="set">The candidates, with their output errors.</param>
    /// <param name="meter">KLD against the source.</param>
    /// <param name="chunks">The meter's chunks each swap is measured on.</param>
    /// <param name="measured">Forward passes run.</param>
    /// <param name="layers">The blocks whose tensors are measured; default <see cref="SampledLayers"/>.</param>
    /// <param name="progress">Swaps measured.</param>
    /// <param name="cancellationToken">Stops between swaps.</param>
    /// <exception cref="InvalidOperationException">A block tensor's candidate has no output error (no calibration statistics).</exception>
    public static double[][] PredictSwaps<T>(CandidateSet<T> set, KldMeter meter, IReadOnlyList<int> chunks, out int measured, IReadOnlyList<int>? layers = null,
        IProgress<AllocationProgress>? progress = null, CancellationToken cancellationToken = default)
        where T : Candidate
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(meter);
        int blocks = set.Source.Config.LayerCount;
        var sampledLayers = (layers ?? SampledLayers(blocks)).ToHashSet();
        var tensors = set.Tensors.Select((t, i) =>
        {
            int layer = Compressor.LayerOf(t.Name) is var l && l < blocks ? l : -1;
            string kind = layer < 0 ? t.Name : t.Name[(t.Name.IndexOf('.', 4) + 1)..];
            return (Index: i, Layer: layer, Kind: kind);
        }).ToList();
        var sample = tensors.Where(t => t.Layer < 0 || sampledLayers.Contains(t.Layer)).ToList();
        var sensitivity = new double[set.Tensors.Count];
        var selection = Enumerable.Repeat(-1, set.Tensors.Count).ToArray();
        // A tensor outside the blocks without input statistics (an untied embedding: a lookup, not a product) has no
        // output error to scale: each of its candidates is measured.
        bool Unpredictable(int i, int layer) => layer < 0 && set.Tensors[i].Options.Any(c => !double.IsFinite(c.OutputError));
        var direct = new Dictionary<int, double[]>();
        int passes = sample.Sum(t => Unpredictable(t.Index, t.Layer) ? set.Tensors[t.Index].Options.Count : 1);
        measured = 0;
        foreach (var (i, layer, kind) in sample)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var options = set.Tensors[i].Options;
            if (Unpredictable(i, layer))
            {
                var swaps = new double[options.Count];
                for (int k = 0; k < options.Count; k++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    progress?.Report(new AllocationProgress("measuring", measured, passes, $"{set.Tensors[i].Name} {options[k].Format}"));
                    selection[i] = k;
                    using (var model = set.Compose(selection))
                        swaps[k] = meter.Measure(model, chunks);
                    measured++;
                }
                selection[i] = -1;
                direct[i] = swaps;
                continue;
            }
            long elements = set.Tensors[i].Elements;
            int reference = -1;
            for (int k = 0; k < options.Count; k++)
            {
                if (!double.IsFinite(options[k].OutputError))
                    throw new InvalidOperationException($"tensor '{set.Tensors[i].Name}' {options[k].Format} has no output error to predict its KLD from (calibrate)");
                if (options[k].OutputError > 0 && (reference < 0
                    || Math.Abs(8.0 * options[k].Bytes / elements - 4) < Math.Abs(8.0 * options[reference].Bytes / elements - 4)))
                    reference = k;
            }
            progress?.Report(new AllocationProgress("measuring", measured, passes, $"{set.Tensors[i].Name} {(reference >= 0 ? options[reference].Format : "")}"));
            if (reference < 0)
                continue; // every candidate is exact: nothing to scale
            selection[i] = reference;
            using (var model = set.Compose(selection))
                sensitivity[i] = meter.Measure(model, chunks) / options[reference].OutputError;
            selection[i] = -1;
            measured++;
        }
        progress?.Report(new AllocationProgress("measuring", passes, passes, ""));
        // The other blocks' tensors: linear in depth between the sampled blocks of the same kind.
        foreach (var group in tensors.Where(t => t.Layer >= 0).GroupBy(t => t.Kind))
        {
            var known = group.Where(t => sampledLayers.Contains(t.Layer)).OrderBy(t => t.Layer).ToList();
            foreach (var (i, layer, _) in group.Where(t => !sampledLayers.Contains(t.Layer)))
            {
                int below = known.FindLastIndex(t => t.Layer < layer), above = known.FindIndex(t => t.Layer > layer);
                if (below < 0 || above < 0)
                {
                    // Not between two sampled blocks of its kind (a kind some blocks lack): the nearest one's.
                    sensitivity[i] = known.Count == 0 ? 0 : sensitivity[known.MinBy(t => Math.Abs(t.Layer - layer)).Index];
                    continue;
                }
                double w = (double)(layer - known[below].Layer) / (known[above].Layer - known[below].Layer);
                sensitivity[i] = (1 - w) * sensitivity[known[below].Index] + w * sensitivity[known[above].Index];
            }
        }
        return [.. set.Tensors.Select((t, i) => direct.TryGetValue(i, out var swaps) ? swaps : t.Options.Select(c => sensitivity[i] * c.OutputError).ToArray())];
    }

    /// <summary>The error of a candidate under <paramref name="model"/>.</summary>
    public static double ErrorOf(Candidate candidate, ErrorModel model)
    {
        ArgumentNullException.ThrowIfNull(candidate);
        return model == ErrorModel.SwapKld ? candidate.SwapKld : candidate.OutputError;
    }

    /// <summary>Σ of the error model over a selection.</summary>
    public static double PredictedError<T>(CandidateSet<T> set, IReadOnlyList<int> selection, ErrorModel model)
        where T : Candidate
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(selection);
        double sum = 0;
        for (int i = 0; i < set.Tensors.Count; i++)
            sum += ErrorOf(set.Chosen(selection, i), model);
        return sum;
    }

    /// <summary>
    /// The assignment of least summed error whose whole file fits <paramref name="budget"/> bytes. Exact: every file size
    /// counted is a multiple of the set's grain (GGUF's 32-byte alignment), so the knapsack runs on a grid of such cells (capped at 2^22 cells for
    /// very large models, where the greedy repair spends what rounding left).
    /// </summary>
    /// <param name="set">The candidates.</param>
    /// <param name="budget">Bytes of the whole output.</param>
    /// <param name="model">The error summed.</param>
    /// <param name="allowed">When given, only the candidates it accepts may be chosen (e.g. quantization alone, to compare
    /// with a search over every level); every tensor must keep at least one.</param>
    /// <exception cref="ArgumentException">The budget is below the smallest file the model can take (the message gives it),
    /// the error model has not been measured, or <paramref name="allowed"/> leaves a tensor nothing.</exception>
    public static int[] Knapsack<T>(CandidateSet<T> set, long budget, ErrorModel model, Predicate<T>? allowed = null)
        where T : Candidate
    {
        ArgumentNullException.ThrowIfNull(set);
        allowed ??= _ => true;
        // A unit's option is allowed when it is for every tensor of the unit (the parts of a fused file tensor).
        bool Allowed(int[] unit, int option) => unit.All(i => allowed(set.Tensors[i].Options[option]));
        var units = set.Units;
        var smallestAllowed = new int[set.Tensors.Count];
        foreach (var unit in units)
        {
            int k = Enumerable.Range(0, set.Tensors[unit[0]].Options.Count).FirstOrDefault(o => Allowed(unit, o), -1);
            if (k < 0)
                throw new ArgumentException($"tensor '{set.Tensors[unit[0]].Name}' has no allowed candidate", nameof(allowed));
            foreach (int i in unit)
                smallestAllowed[i] = k;
        }
        long smallest = set.BoundBytes(smallestAllowed);
        if (budget < smallest)
            throw BelowSmallest(budget, smallest, set.Parameters);
        long grain = set.Grain;
        long capacity = (budget - set.Overhead) / grain;
        var items = new List<IReadOnlyList<Choice>>(units.Count);
        for (int u = 0; u < units.Count; u++)
        {
            var options = set.Tensors[units[u][0]].Options;
            var choices = new List<Choice>(options.Count);
            for (int o = 0; o < options.Count; o++)
            {
                double error = 0;
                foreach (int i in units[u])
                {
                    var c = set.Tensors[i].Options[o];
                    double e = ErrorOf(c, model);
                    if (!double.IsFinite(e))
                        throw new ArgumentException($"tensor '{set.Tensors[i].Name}' has no {model} measurement for {c.Format}", nameof(model));
                    error += e;
                }
                // A candidate not allowed is wider than the whole budget, so it never fits.
                choices.Add(new Choice(Allowed(units[u], o) ? set.UnitBytes(u, o) / grain : 2 * Math.Max(capacity, 0) + 2, error));
            }
            items.Add(choices);
        }
        int cells = (int)Math.Min(capacity + 1, KnapsackCells);
        var chosen = MultipleChoiceKnapsack.Solve(items, capacity, cells);
        var selection = new int[set.Tensors.Count];
        for (int u = 0; u < units.Count; u++)
        {
            foreach (int i in units[u])
                selection[i] = chosen[u];
        }
        if (set.FileBytes(selection) > budget)
            throw new InvalidOperationException($"the knapsack chose {set.FileBytes(selection):N0} bytes for a budget of {budget:N0}");
        return selection;
    }

    /// <summary>
    /// Refuses, before any encoding, a budget below the smallest file <paramref name="model"/> can take with
    /// <paramref name="types"/> (default <see cref="GgufCandidateSet.DefaultTypes"/>): every 2-D tensor in its smallest type.
    /// </summary>
    /// <exception cref="ArgumentException">The budget is below that size (the message gives it).</exception>
    public static void CheckBudget(Model model, long budget, IReadOnlyList<Squeeze.Tensors.GgmlType>? types = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var candidates = types ?? GgufCandidateSet.DefaultTypes;
        var smallestType = new Dictionary<string, Squeeze.Tensors.GgmlType>(StringComparer.Ordinal);
        foreach (var t in model.Tensors.Where(t => t.Shape.Length >= 2))
        {
            var fitting = GgufCandidateSet.Fitting(t.Columns, candidates);
            if (fitting.Count > 0)
                smallestType[t.Name] = fitting.MinBy(ty => Squeeze.Tensors.GgmlTypes.RowBytes(ty, t.Columns))!;
        }
        long smallest = Formats.Gguf.GgufModelWriter.FileLength(model, 0, t => smallestType.GetValueOrDefault(t.Name, t.Type));
        if (budget < smallest)
            throw BelowSmallest(budget, smallest, model.ParameterCount);
    }

    /// <summary>
    /// Refuses, before any encoding, a budget for <paramref name="model"/>'s native directory below what its fixed files
    /// take (<see cref="NativeCandidateSet.FixedBytes"/>: config.json, tokenizer files, the weights file's header and
    /// fixed tensors), which no choice of levels fits.
    /// </summary>
    /// <exception cref="ArgumentException">The budget is below those bytes (the message names the model and gives both).</exception>
    public static void CheckNativeBudget(Model model, long budget)
    {
        ArgumentNullException.ThrowIfNull(model);
        long fixedBytes = NativeCandidateSet.FixedBytes(model);
        if (budget < fixedBytes)
        {
            throw new ArgumentException(
                $"{model.Source}: a budget of {budget:N0} bytes ({8.0 * budget / model.ParameterCount:0.###} bits per weight) is below what the native " +
                $"directory's fixed files take, {fixedBytes:N0} bytes ({8.0 * fixedBytes / model.ParameterCount:0.###} bits per weight: config.json, " +
                "the tokenizer files, the weights file's header and fixed tensors), before any 2-D tensor", nameof(budget));
        }
    }

    private static ArgumentException BelowSmallest(long budget, long smallest, long parameters) => new(
        $"a budget of {budget:N0} bytes ({8.0 * budget / parameters:0.###} bits per weight) is below the smallest file this model can take: " +
        $"{smallest:N0} bytes ({8.0 * smallest / parameters:0.###} bits per weight), every tensor in its smallest type", nameof(budget));

    /// <summary>Finds the assignment for <paramref name="budget"/> bytes by <paramref name="search"/>.</summary>
    /// <exception cref="ArgumentException">The budget is below the smallest possible file.</exception>
    public static BudgetAllocation Allocate<TSet, T>(AllocationContext<TSet, T> context, long budget, SearchMethod search, ErrorModel errors = ErrorModel.SwapKld,
        EvolutionOptions? evolution = null, IProgress<SearchStep>? progress = null, Predicate<T>? allowed = null, CancellationToken cancellationToken = default)
        where TSet : CandidateSet<T>
        where T : Candidate
    {
        ArgumentNullException.ThrowIfNull(context);
        var set = context.Candidates;
        long largest = set.FileBytes(set.Largest());
        string note = budget >= largest
            ? $"the budget of {budget:N0} bytes is at least the largest file ({largest:N0} bytes, every tensor in its largest type): nothing needs to be given up"
            : "";
        var clock = Stopwatch.StartNew();
        if (allowed is not null && search == SearchMethod.Evolution)
            throw new ArgumentException("the evolutionary search mutates over every candidate; restrict the candidates with the knapsack only", nameof(allowed));
        var selection = Knapsack(set, budget, errors, allowed);
        double knapsackSeconds = clock.Elapsed.TotalSeconds;
        EvolutionResult? evolved = null;
        if (search == SearchMethod.Evolution)
        {
            evolved = EvolutionarySearch.Run(set, context.Meter, budget, selection, evolution ?? new EvolutionOptions(), progress, cancellationToken);
            selection = evolved.Selection;
        }
        long bytes = set.FileBytes(selection);
        return new BudgetAllocation(selection, budget, bytes, set.BitsPerWeight(bytes), search, PredictedError(set, selection, errors), knapsackSeconds, evolved, note);
    }

    /// <summary>The byte budget for <paramref name="bitsPerWeight"/>: floor(bpw × parameters / 8), so the file's bpw is at most the target.</summary>
    public static long BudgetForBitsPerWeight(double bitsPerWeight, long parameters)
    {
        if (!(bitsPerWeight > 0) || !double.IsFinite(bitsPerWeight))
            throw new ArgumentException($"bits per weight {bitsPerWeight} must be a positive number", nameof(bitsPerWeight));
        return (long)Math.Floor(bitsPerWeight * parameters / 8);
    }

    /// <summary>Parses a size: a number of bytes, or with a unit B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), case-insensitive ("3.2GB", "700 MiB").</summary>
    /// <exception cref="ArgumentException">Not a positive size.</exception>
    public static long ParseSize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string t = text.Trim();
        int split = t.Length;
        while (split > 0 && char.IsLetter(t[split - 1]))
            split--;
        string unit = t[split..].ToUpperInvariant();
        double scale = unit switch
        {
            "" or "B" => 1,
            "K" or "KB" => 1e3,
            "M" or "MB" => 1e6,
            "G" or "GB" => 1e9,
            "KIB" => 1024,
            "MIB" => 1024.0 * 1024,
            "GIB" => 1024.0 * 1024 * 1024,
            _ => throw new ArgumentException($"size '{text}': unknown unit '{t[split..]}' (B, KB, MB, GB, KiB, MiB, GiB)", nameof(text)),
        };
        if (!double.TryParse(t[..split].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double number) || !(number > 0) || !double.IsFinite(number))
            throw new ArgumentException($"size '{text}' is not a positive number of bytes", nameof(text));
        return (long)Math.Floor(number * scale);
    }
}
