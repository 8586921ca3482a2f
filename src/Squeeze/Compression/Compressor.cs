using System.Diagnostics;
using System.Runtime;
using System.Runtime.InteropServices;
using Squeeze.Calibration;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;

namespace Squeeze.Compression;

/// <summary>
/// The calibrated compression of a named mix, one decoder block at a time (what GPTQModel and llm-compressor call
/// sequential onloading): the calibration text's residual stream is kept at the current block's input
/// (<see cref="LayerwiseCalibrator"/>); that block alone is calibrated (its inputs' statistics and Gram matrices),
/// optionally AWQ-scaled, each of its 2-D tensors encoded with the chosen method (round-to-nearest, imatrix
/// round-to-nearest, GPTQ), checked to decode to finite numbers and written into its place in the GGUF file; then the
/// block runs to give the next one its input — with its original weights, or, in sequential mode, as compressed, so
/// each block compensates the error of the ones before it — and its buffers are released. Memory is one block's
/// statistics and encodings plus the residual stream, whatever the model's depth; the checkpoint is read where it is
/// mapped. The tensors outside the blocks (embedding, final norm, classifier) come last, on the classifier's input.
/// </summary>
public static class Compressor
{
    /// <summary>
    /// Compresses <paramref name="model"/> into the GGUF file <paramref name="outputPath"/> (written to a temporary file and
    /// renamed, so a failure leaves no partial file) and reports every tensor's type, size and error.
    /// <paramref name="calibrationText"/> is not read for <see cref="CompressionMethod.Rtn"/> or when
    /// <see cref="CompressionOptions.Statistics"/> is given.
    /// </summary>
    /// <exception cref="ArgumentException">Bad options, a calibration text that is empty, invalid or shorter than one chunk,
    /// or statistics of another model or without the Gram matrix GPTQ needs.</exception>
    /// <exception cref="DirectoryNotFoundException">The output's directory does not exist.</exception>
    /// <exception cref="InvalidOperationException">A tensor would be written with a value that is not finite.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; nothing is left on disk.</exception>
    public static CompressionReport Compress(Model model, string calibrationText, CompressionOptions options, string outputPath, IProgress<CompressionProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibrationText);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(outputPath);
        var clock = Stopwatch.StartNew();
        OutputPaths.RequireDirectory(outputPath);
        ArgumentOutOfRangeException.ThrowIfNegative(options.CalibrationTokens, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.ContextLength, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.RefinePasses, nameof(options));
        if (!(options.Damping >= 0) || !double.IsFinite(options.Damping))
            throw new ArgumentException($"GPTQ damping {options.Damping} must be a non-negative number", nameof(options));
        bool gptq = options.Method is CompressionMethod.Gptq or CompressionMethod.AwqGptq;
        bool needsStats = options.Method != CompressionMethod.Rtn;
        if (options.Sequential && !gptq)
            throw new ArgumentException($"sequential mode is for GPTQ and AWQ+GPTQ, not {options.Method}", nameof(options));
        if (options.Sequential && options.Statistics is not null)
            throw new ArgumentException("sequential mode collects its own statistics on the partly quantized model; it cannot reuse a statistics file", nameof(options));
        if (options.Statistics is { } given)
            CheckStatistics(model, given, gptq);

        var plan = QuantizationMix.Plan(model, options.Mix, options.Overrides, options.Pure, hasImportance: needsStats);
        var run = new Run(model, options, progress);
        uint fileType = GgufQuantizer.FileType(options.Mix);
        GgmlType TypeOf(Tensor tensor) => plan[tensor.Name].Type;
        var calibrationOptions = new CalibrationOptions
        {
            ContextLength = options.ContextLength,
            MaxTokens = options.CalibrationTokens,
            CollectGram = gptq,
            Threads = Math.Max(1, options.Threads),
            Workers = options.CalibrationWorkers,
        };
        var calibrationClock = new Stopwatch();
        var chunks = needsStats && options.Statistics is null ? Time(calibrationClock, () => LayerwiseCalibrator.Chunk(model, calibrationText, calibrationOptions)) : null;
        var estimate = ResourceEstimate.ForMix(model, plan, options.Method, chunks?.TokenCount ?? 0, GgufModelWriter.FileLength(model, fileType, TypeOf));
        estimate.Check(outputPath, options.MemoryLimit, chunks is null ? "it cannot be lowered by this job's options" : $"use fewer calibration tokens than {chunks.TokenCount:N0}");
        var resume = options.Resume ? ResumeState.Open(outputPath, ResumeState.FingerprintOf(string.Join("\n",
        [
            $"{ModelIdentity.Of(model)} {Path.GetFullPath(model.Source)}",
            string.Join(",", plan.Tensors.Select(t => $"{t.Name}:{t.Type}")),
            $"{options.Method} {options.Damping:R} {options.RefinePasses} {options.ActivationOrder} {options.Sequential} {options.Awq}",
            chunks is null ? "" : $"{chunks.TextHash:x16} {chunks.TokenCount} {chunks.ContextLength}",
            options.Statistics is { } s ? $"{s.Model} {s.TextHash:x16} {s.TokenCount}" : "",
        ]))) : null;
        var saved = resume is { Resuming: true } ? resume.Saved : null;
        using var file = GgufModelWriter.Begin(model, outputPath, fileType, TypeOf, temporaryPath: resume?.PartialFile,
            alreadyWritten: saved is null ? null : [.. saved.Tensors.Select(t => t.Name)]);
        file.KeepWhenUnfinished = resume is not null;
        using var calibration = chunks is null ? null : Time(calibrationClock, () => new LayerwiseCalibrator(model, chunks, calibrationOptions, cancellationToken));
        if (saved is not null)
        {
            calibration?.Resume(saved.NextLayer, resume!.LoadStream);
            run.AwqAlphas.AddRange(saved.AwqAlphas);
        }
        var reports = (saved?.Tensors ?? []).ToDictionary(t => t.Name, StringComparer.Ordinal);
        var layerSeconds = saved?.LayerSeconds ?? [];
        int done = reports.Count;
        void Encode(int layer, Dictionary<(int, LinearInput), ActivationStatistics>? stats, Dictionary<string, (GgmlType Type, byte[] Bytes)>? kept)
        {
            using var current = run.Current();
            var targets = plan.Tensors.Where(t => LayerOf(t.Name) == layer).ToArray();
            if (targets.Length > 0)
                progress?.Report(new CompressionProgress("quantizing", done, plan.Tensors.Count, targets[0].Name));
            options.Workers.Encode(new BlockWork(current, stats, options, targets, run.Replaced), (i, encoded) =>
            {
                var target = targets[i];
                file.WriteTensor(target.Name, encoded.Data);
                ReturnMemory();
                reports[target.Name] = encoded.Report;
                if (kept is not null && target.Quantized && target.Type != target.SourceType)
                    kept[target.Name] = (target.Type, encoded.Data);
                done++;
                progress?.Report(new CompressionProgress("quantizing", done, plan.Tensors.Count, i + 1 < targets.Length ? targets[i + 1].Name : ""));
            }, cancellationToken);
        }
        Dictionary<(int, LinearInput), ActivationStatistics>? Statistics(int layer)
        {
            if (options.Statistics is { } fromFile)
                return fromFile.Entries.Where(e => e.Layer == layer).ToDictionary(e => (e.Layer, e.Kind));
            if (calibration is null)
                return null;
            string what = layer < 0 ? "classifier" : $"layer {layer}";
            var entries = Time(calibrationClock, () => calibration.Collect(Notes(what)));
            return entries.ToDictionary(e => (e.Layer, e.Kind));
        }
        IProgress<CalibrationProgress>? Notes(string what) => progress is null ? null
            : new SynchronousProgress<CalibrationProgress>(p => progress.Report(new CompressionProgress("calibrating", p.Done, p.Total, $"{what}: chunk {p.Done}/{p.Total}")));

        // Block `layer`'s statistics collected, AWQ applied and its tensors encoded; in sequential mode, the block as
        // compressed for the next block's input. The statistics live in this frame alone: as a local of the loop below
        // they stayed referenced while the next block's were collected (the unoptimised first tier of a long-running
        // method reports its locals live to its end), twice one block's statistics (11.3 GB calibrating the second block
        // at Qwen3-30B-A3B's shape, whose statistics are 5.15 GB), and the last block's while the classifier was encoded.
        Dictionary<string, (GgmlType Type, byte[] Bytes)>? EncodeBlock(int layer)
        {
            var stats = Statistics(layer);
            if (options.Method == CompressionMethod.AwqGptq && stats is not null)
                run.ApplyAwq(layer, stats, plan);
            var kept = calibration is not null && options.Sequential ? new Dictionary<string, (GgmlType Type, byte[] Bytes)>(run.Replaced, StringComparer.Ordinal) : null;
            Encode(layer, stats, kept);
            return kept;
        }

        for (int l = saved?.NextLayer ?? 0; l < model.Config.LayerCount; l++)
        {
            long layerStart = Stopwatch.GetTimestamp();
            var kept = EncodeBlock(l);
            if (calibration is not null)
            {
                if (kept is null)
                {
                    Time(calibrationClock, () => calibration.Advance());
                }
                else
                {
                    using var compressed = model.WithTensors(kept);
                    Time(calibrationClock, () => calibration.Advance(compressed, Notes($"compressed layer {l}")));
                }
            }
            run.ReleaseLayer();
            ReturnMemory();
            layerSeconds.Add(Stopwatch.GetElapsedTime(layerStart).TotalSeconds);
            if (resume is not null)
            {
                file.Flush();
                resume.Save(new ResumeState.Record(resume.Fingerprint, l + 1, [.. reports.Values], [.. run.AwqAlphas],
                    (saved?.CalibrationSeconds ?? 0) + calibrationClock.Elapsed.TotalSeconds, layerSeconds), calibration?.Stream);
            }
        }
        Encode(-1, Statistics(-1), kept: null);
        cancellationToken.ThrowIfCancellationRequested();
        progress?.Report(new CompressionProgress("writing", 0, 1, outputPath));
        file.Commit();
        resume?.Delete();
        progress?.Report(new CompressionProgress("writing", 1, 1, outputPath));
        clock.Stop();
        long parameters = model.ParameterCount;
        long fileBytes = new FileInfo(outputPath).Length;
        double total = clock.Elapsed.TotalSeconds, calibrating = (saved?.CalibrationSeconds ?? 0) + calibrationClock.Elapsed.TotalSeconds;
        return new CompressionReport(model.Source, outputPath, "gguf", options.Mix.Name, options.Method, options.Sequential, fileBytes, parameters,
            8.0 * fileBytes / parameters, Budget: null, Search: null, PredictedKld: null, StartKld: null, SearchKld: null, Generations: null,
            calibration?.TokenCount ?? options.Statistics?.TokenCount ?? 0, calibration is null ? 0 : 1, new StageSeconds(calibrating, total - calibrating, 0, 0, 0, total),
            run.AwqAlphas, Tuning: null, Note: saved is null ? "" : $"resumed at layer {saved.NextLayer}", [.. model.Tensors.Select(t => reports[t.Name])])
        {
            LayerSeconds = layerSeconds,
            EstimatedMemoryBytes = estimate.MemoryBytes,
        };
    }

    /// <summary>A tensor's encoding buffers (hundreds of MB each at 8B, on the large-object heap) are garbage once it is
    /// written: their pages go back to the system before the next tensor allocates its own, so private memory stays what
    /// one tensor and one block need instead of growing with what the runtime has not yet collected.</summary>
    internal static void ReturnMemory()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    private static T Time<T>(Stopwatch clock, Func<T> work)
    {
        clock.Start();
        try
        {
            return work();
        }
        finally
        {
            clock.Stop();
        }
    }

    private static void Time(Stopwatch clock, Action work) => Time(clock, () =>
    {
        work();
        return 0;
    });

    /// <summary>
    /// Relative output error of replacing <paramref name="weights"/> by <paramref name="quantized"/> (both [rows, columns]):
    /// Σ_r e_rᵀ H e_r / Σ_r w_rᵀ H w_r with e = w − q. <paramref name="hessian"/> is [columns, columns]; when empty,
    /// H = diag(<paramref name="importance"/>), or the identity when that is empty too. 0 for an all-zero matrix.
    /// </summary>
    public static double RelativeError(ReadOnlySpan<float> weights, ReadOnlySpan<float> quantized, int rows, int columns,
        ReadOnlySpan<double> hessian, ReadOnlySpan<float> importance, int threads = 1)
    {
        if (weights.Length != (long)rows * columns || quantized.Length != weights.Length)
            throw new ArgumentException($"{rows} x {columns} values expected, got {weights.Length} and {quantized.Length}", nameof(quantized));
        if (!hessian.IsEmpty && hessian.Length != (long)columns * columns)
            throw new ArgumentException($"a {columns} x {columns} Hessian expected, got {hessian.Length} values", nameof(hessian));
        if (!importance.IsEmpty && importance.Length != columns)
            throw new ArgumentException($"{columns} importance weights expected, got {importance.Length}", nameof(importance));
        var w = weights.ToArray();
        var h = hessian.ToArray();
        var imp = importance.ToArray();
        double signal = Energy(w, null, rows, columns, h, imp, threads);
        return signal > 0 ? Energy(w, quantized.ToArray(), rows, columns, h, imp, threads) / signal : 0;
    }

    // Σ_r e_rᵀ H e_r with e = w − q ([rows, columns]; q null: e = w), H as in RelativeError: with H, each row's form in f32
    // products by LinearAlgebra.QuadraticForms (the same bits on every machine and thread count), the rows summed in order
    // onto `before`, the sum of the rows before these: a tensor measured band by band gives the bits of measuring it whole.
    internal static double Energy(float[] w, float[]? q, int rows, int columns, double[] h, float[] imp, int threads, double before = 0)
    {
        var perRow = new double[rows];
        if (h.Length == 0)
        {
            var v = new double[columns];
            for (int r = 0; r < rows; r++)
            {
                for (int j = 0; j < columns; j++)
                    v[j] = q is null ? w[(long)r * columns + j] : (double)w[(long)r * columns + j] - q[(long)r * columns + j];
                perRow[r] = Quadratic(v, imp);
            }
        }
        else
        {
            LinearAlgebra.QuadraticForms(h, columns, w, q, rows, perRow, threads);
        }
        double sum = before;
        for (int r = 0; r < rows; r++)
            sum += perRow[r];
        return sum;
    }

    // Σ imp·v², or Σ v².
    private static double Quadratic(ReadOnlySpan<double> v, float[] imp)
    {
        double total = 0;
        for (int i = 0; i < v.Length; i++)
            total += (imp.Length > 0 ? imp[i] : 1.0) * v[i] * v[i];
        return total;
    }

    internal static void CheckStatistics(Model model, CalibrationStatistics stats, bool needsGram)
    {
        var identity = ModelIdentity.Of(model);
        if (identity.Hash != stats.Model.Hash)
            throw new ArgumentException($"the calibration statistics are of {stats.Model}, not of {identity}");
        if (needsGram)
        {
            var missing = stats.Entries.FirstOrDefault(e => e.Gram is null);
            if (missing is not null || stats.Entries.Count == 0)
                throw new ArgumentException("the calibration statistics have no XᵀX, which GPTQ and AWQ need (calibrate with --gram)");
        }
    }

    /// <summary>The block index in a tensor name ("blk.3.…" → 3), or −1 for tensors outside the blocks.</summary>
    internal static int LayerOf(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal))
            return -1;
        int dot = name.IndexOf('.', 4);
        return dot > 4 && int.TryParse(name.AsSpan(4, dot - 4), System.Globalization.NumberStyles.None, null, out int layer) ? layer : -1;
    }

    internal static bool HasGptqGrid(GgmlType type) => type is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1
        or GgmlType.IQ4_NL or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;

    // What one compression keeps between tensors: the AWQ-scaled floats of the current block (tensors replaced before
    // encoding), the AWQ factors found, and how each tensor is encoded.
    internal sealed class Run(Model source, CompressionOptions options, IProgress<CompressionProgress>? progress)
    {
        private readonly Dictionary<string, (GgmlType Type, byte[] Bytes)> replaced = new(StringComparer.Ordinal);

        public List<float> AwqAlphas { get; } = [];

        /// <summary>The tensors of the current block replaced before encoding (AWQ-scaled floats and norm weights).</summary>
        public IReadOnlyDictionary<string, (GgmlType Type, byte[] Bytes)> Replaced => replaced;

        /// <summary>The source model with the current block's replacements, in owned buffers; valid until disposed.</summary>
        public Model Current() => source.WithTensors(replaced);

        /// <summary>Forgets the current block's replacements.</summary>
        public void ReleaseLayer() => replaced.Clear();

        // AWQ on layer l's two groups: scales searched on the current model's weights, the scaled weights and divided norm
        // weights replace the current ones (as f32), and the group's input statistics are rescaled to the new input x / s.
        public void ApplyAwq(int l, Dictionary<(int, LinearInput), ActivationStatistics> stats, QuantizationPlan plan)
        {
            foreach (var (kind, normName, names) in new[]
            {
                (LinearInput.Attention, TensorNames.AttentionNorm(l), new[] { TensorNames.Query(l), TensorNames.Key(l), TensorNames.Value(l) }),
                (LinearInput.FeedForward, TensorNames.FeedForwardNorm(l), new[] { TensorNames.Gate(l), TensorNames.Up(l) }),
            })
            {
                if (kind == LinearInput.FeedForward && source.Config.IsMixtureOfExperts)
                {
                    ApplyExpertAwq(l, stats, plan);
                    continue;
                }
                var first = plan[names[0]];
                if (!first.Quantized || !HasGptqGrid(first.Type) || first.Columns % GgmlTypes.BlockSize(first.Type) != 0
                    || !stats.TryGetValue((l, kind), out var entry) || entry.Gram is null)
                    continue;
                progress?.Report(new CompressionProgress("awq", 0, 1, $"layer {l} {kind}"));
                var result = Awq.Search(Read(source[normName]), [.. names.Select(n => Read(source[n]))], entry, first.Type, options.Awq);
                AwqAlphas.Add(result.Alpha);
                replaced[normName] = (GgmlType.F32, MemoryMarshal.AsBytes(result.NormWeight.AsSpan()).ToArray());
                for (int k = 0; k < names.Length; k++)
                    replaced[names[k]] = (GgmlType.F32, MemoryMarshal.AsBytes(result.Weights[k].AsSpan()).ToArray());
                stats[(l, kind)] = Rescale(entry, result.Scales);
            }
        }

        // AWQ on a mixture of experts' feed-forward (docs/ARCHITECTURE.md, "AWQ on a mixture of experts").
        // Gate and up: the ffn_norm output x feeds the router, every routed expert's gate and up and the shared expert,
        // so one s serves them all: it is folded into ffn_norm (x / s) and every reader's columns are multiplied by s — the
        // router's too, which keeps it in F32 (llama.cpp's mixes never quantize it) and so routes every token as before,
        // up to f32 rounding. s is searched on the error of every quantized reader, each routed expert's measured on the
        // rows routed to it and weighted by their count. Down: each expert's input is its own, so each expert gets its own
        // s_e, folded exactly into its up rows (h = silu(gate·x) ⊙ (up·x) / s_e); an expert no token reached keeps s = 1.
        private void ApplyExpertAwq(int l, Dictionary<(int, LinearInput), ActivationStatistics> stats, QuantizationPlan plan)
        {
            var c = source.Config;
            string gateName = TensorNames.GateExperts(l), upName = TensorNames.UpExperts(l), downName = TensorNames.DownExperts(l);
            var gate = source.ExpertWeights(gateName);
            var up = source.ExpertWeights(upName);
            var down = source.ExpertWeights(downName);
            int dim = c.Dim, hidden = c.ExpertHiddenDim;
            float[]? inScales = null;
            var first = plan[gateName];
            if (first.Quantized && HasGptqGrid(first.Type) && dim % GgmlTypes.BlockSize(first.Type) == 0
                && stats.TryGetValue((l, LinearInput.FeedForward), out var entry) && entry.Gram is not null
                && stats.TryGetValue((l, LinearInput.ExpertFeedForward), out var routed) && routed.Gram is not null)
            {
                progress?.Report(new CompressionProgress("awq", 0, 1, $"layer {l} experts' gate and up"));
                var members = new List<AwqMember>();
                for (int e = 0; e < gate.Count; e++)
                {
                    if (routed.Expert(e) is not { } own)
                        continue;
                    members.Add(new AwqMember(gate[e].Decode, own, own.TokenCount));
                    members.Add(new AwqMember(up[e].Decode, own, own.TokenCount));
                }
                if (c.SharedExpertHiddenDim > 0)
                {
                    members.Add(new AwqMember(() => Read(source[TensorNames.GateShared(l)]), entry, entry.TokenCount));
                    members.Add(new AwqMember(() => Read(source[TensorNames.UpShared(l)]), entry, entry.TokenCount));
                }
                var result = Awq.SearchScales(entry.MeanAbs(), members, first.Type, options.Awq);
                AwqAlphas.Add(result.Alpha);
                inScales = result.Scales;
                var norm = Read(source[TensorNames.FeedForwardNorm(l)]);
                for (int j = 0; j < dim; j++)
                    norm[j] /= inScales[j];
                Replace(TensorNames.FeedForwardNorm(l), norm);
                Replace(TensorNames.ExpertRouter(l), Awq.ScaleColumns(Read(source[TensorNames.ExpertRouter(l)]), dim, inScales));
                if (c.SharedExpertHiddenDim > 0)
                {
                    Replace(TensorNames.GateShared(l), Awq.ScaleColumns(Read(source[TensorNames.GateShared(l)]), dim, inScales));
                    Replace(TensorNames.UpShared(l), Awq.ScaleColumns(Read(source[TensorNames.UpShared(l)]), dim, inScales));
                    Replace(TensorNames.SharedExpertGate(l), Awq.ScaleColumns(Read(source[TensorNames.SharedExpertGate(l)]), dim, inScales));
                }
                stats[(l, LinearInput.FeedForward)] = Rescale(entry, inScales);
                stats[(l, LinearInput.ExpertFeedForward)] = Rescale(routed, inScales, [.. routed.Experts.Select(x => x is null ? null : Rescale(x, inScales))]);
            }
            var downPlan = plan[downName];
            var outScales = new float[down.Count][];
            if (downPlan.Quantized && HasGptqGrid(downPlan.Type) && hidden % GgmlTypes.BlockSize(downPlan.Type) == 0
                && stats.TryGetValue((l, LinearInput.ExpertFeedForwardDown), out var downInput) && downInput.Gram is not null)
            {
                progress?.Report(new CompressionProgress("awq", 0, 1, $"layer {l} experts' down"));
                for (int e = 0; e < down.Count; e++)
                {
                    if (downInput.Expert(e) is not { } own)
                        continue;
                    var result = Awq.SearchScales(own.MeanAbs(), [new AwqMember(down[e].Decode, own, 1)], downPlan.Type, options.Awq);
                    AwqAlphas.Add(result.Alpha);
                    outScales[e] = result.Scales;
                }
                // The combined entry stays as it is: it stands in only for the experts without tokens, which keep s = 1.
                stats[(l, LinearInput.ExpertFeedForwardDown)] = Rescale(downInput, null,
                    [.. downInput.Experts.Select((x, e) => x is null ? null : Rescale(x, outScales[e]))]);
            }
            if (inScales is null && outScales.All(x => x is null))
                return;
            // The stacks in f32, one expert at a time: gate and up columns × s, up rows ÷ s_e, down columns × s_e.
            if (inScales is not null)
                ReplaceExperts(gateName, gate, e => Awq.ScaleColumns(gate[e].Decode(), dim, inScales));
            ReplaceExperts(upName, up, e =>
            {
                var values = inScales is null ? up[e].Decode() : Awq.ScaleColumns(up[e].Decode(), dim, inScales);
                if (outScales[e] is { } s)
                {
                    for (int r = 0; r < hidden; r++)
                    {
                        foreach (ref float v in values.AsSpan(r * dim, dim))
                            v /= s[r];
                    }
                }
                return values;
            });
            if (outScales.Any(x => x is not null))
                ReplaceExperts(downName, down, e => outScales[e] is { } s ? Awq.ScaleColumns(down[e].Decode(), hidden, s) : down[e].Decode());
        }

        // A tensor AWQ scaled, in F32: the type a kept one (norm, router, the shared expert's gate vector) has in the file,
        // and the values a quantized one is encoded from.
        private void Replace(string name, float[] values)
        {
            for (int i = 0; i < values.Length; i++)
            {
                if (!float.IsFinite(values[i]))
                    throw new InvalidOperationException($"AWQ's {name}: value {i} is {values[i]}");
            }
            var tensor = source[name];
            var bytes = new byte[tensor.Rows * GgmlTypes.RowBytes(GgmlType.F32, tensor.Columns)];
            Quantize.Row(GgmlType.F32, values, [], bytes);
            replaced[name] = (GgmlType.F32, bytes);
        }

        private void ReplaceExperts(string name, IReadOnlyList<Weights.LinearWeight> experts, Func<int, float[]> values)
        {
            long expertValues = (long)experts[0].Rows * experts[0].Columns;
            var bytes = new byte[checked(experts.Count * expertValues * sizeof(float))];
            for (int e = 0; e < experts.Count; e++)
            {
                var v = values(e);
                for (int i = 0; i < v.Length; i++)
                {
                    if (!float.IsFinite(v[i]))
                        throw new InvalidOperationException($"AWQ's {name}: expert {e} value {i} is {v[i]}");
                }
                MemoryMarshal.AsBytes(v.AsSpan()).CopyTo(bytes.AsSpan(checked((int)(e * expertValues * sizeof(float)))));
            }
            replaced[name] = (GgmlType.F32, bytes);
        }
    }

    // The statistics of x / s from those of x (s null: unchanged sums), with `experts` as its per-expert statistics.
    private static ActivationStatistics Rescale(ActivationStatistics e, float[]? s, IReadOnlyList<ActivationStatistics?>? experts = null)
    {
        if (s is null)
            return new ActivationStatistics(e.Layer, e.Kind, e.TokenCount, e.SumSquares, e.SumAbs, e.MaxAbs, e.Gram, experts);
        int n = e.Width;
        var sumSquares = new double[n];
        var sumAbs = new double[n];
        var maxAbs = new float[n];
        for (int j = 0; j < n; j++)
        {
            sumSquares[j] = e.SumSquares[j] / ((double)s[j] * s[j]);
            sumAbs[j] = e.SumAbs[j] / s[j];
            maxAbs[j] = e.MaxAbs[j] / s[j];
        }
        double[]? gram = null;
        if (e.Gram is not null)
        {
            gram = new double[e.Gram.LongLength];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    gram[(long)i * n + j] = e.Gram[(long)i * n + j] / ((double)s[i] * s[j]);
        }
        return new ActivationStatistics(e.Layer, e.Kind, e.TokenCount, sumSquares, sumAbs, maxAbs, gram, experts);
    }

    private static float[] Read(Tensor tensor)
    {
        var values = new float[tensor.ElementCount];
        Dequantize.Tensor(tensor, values);
        return values;
    }
}
