using System.Diagnostics;
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
/// The calibrated compression pipeline: collect the statistics of every linear layer's input on a calibration text,
/// choose each tensor's type with a named mix, optionally fold AWQ scales into the RMSNorm weights, encode each 2-D
/// tensor with the chosen method (round-to-nearest, imatrix round-to-nearest, GPTQ), check that every value written
/// decodes to a finite number, and write a GGUF file that llama.cpp runs.
/// In sequential mode the statistics of layer l are collected on the model whose layers 0 … l−1 are already quantized
/// (and AWQ-scaled), one calibration pass per layer, so each layer compensates the error of the layers before it.
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
        var run = new Run(model, calibrationText, options, plan, progress, cancellationToken);
        try
        {
            int layers = model.Config.LayerCount;
            if (!options.Sequential)
            {
                // One pass: statistics of the float model for every layer, then every tensor.
                var all = Enumerable.Range(-1, layers + 1).ToHashSet();
                run.Step(all, calibrate: needsStats, awqLayers: all);
            }
            else
            {
                for (int l = 0; l < layers; l++)
                    run.Step(new HashSet<int> { l }, calibrate: true, awqLayers: new HashSet<int> { l });
                // What is left (embeddings, final norm, classifier): the classifier's input is collected on the quantized model.
                bool classifier = plan.Tensors.Any(t => (t.Name == TensorNames.Output || (t.Name == TensorNames.TokenEmbedding && !model.TryGetTensor(TensorNames.Output, out _)))
                    && t.Quantized && t.Type != t.SourceType);
                run.Step(new HashSet<int> { -1 }, calibrate: classifier, awqLayers: new HashSet<int>());
            }
            progress?.Report(new CompressionProgress("writing", 0, 1, outputPath));
            GgufModelWriter.Write(model, outputPath, GgufQuantizer.FileType(options.Mix), tensor =>
            {
                cancellationToken.ThrowIfCancellationRequested();
                var (type, bytes) = run.Encoded[tensor.Name];
                return new EncodedTensor(type, stream => stream.Write(bytes));
            });
            progress?.Report(new CompressionProgress("writing", 1, 1, outputPath));
            clock.Stop();
            var reports = model.Tensors.Select(t => run.Reports[t.Name]).ToList();
            long parameters = model.ParameterCount;
            long fileBytes = new FileInfo(outputPath).Length;
            double total = clock.Elapsed.TotalSeconds;
            return new CompressionReport(model.Source, outputPath, "gguf", options.Mix.Name, options.Method, options.Sequential, fileBytes, parameters,
                8.0 * fileBytes / parameters, Budget: null, Search: null, PredictedKld: null, StartKld: null, SearchKld: null, Generations: null,
                run.CalibrationTokens, run.CalibrationPasses, new StageSeconds(run.CalibrationSeconds, total - run.CalibrationSeconds, 0, 0, 0, total),
                run.AwqAlphas, Tuning: null, Note: "", reports);
        }
        finally
        {
            run.Dispose();
        }
    }

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

    // Σ_r e_rᵀ H e_r with e = w − q ([rows, columns]; q null: e = w), H as in RelativeError. Each row alone, the rows
    // summed in order afterwards: the same bits whatever the thread count.
    internal static double Energy(float[] w, float[]? q, int rows, int columns, double[] h, float[] imp, int threads)
    {
        var perRow = new double[rows];
        void Row(int r)
        {
            var e = new double[columns];
            for (int j = 0; j < columns; j++)
                e[j] = q is null ? w[(long)r * columns + j] : (double)w[(long)r * columns + j] - q[(long)r * columns + j];
            perRow[r] = Quadratic(e, h, imp, columns);
        }
        if (threads <= 1)
        {
            for (int r = 0; r < rows; r++)
                Row(r);
        }
        else
        {
            Parallel.For(0, rows, new ParallelOptions { MaxDegreeOfParallelism = threads }, Row);
        }
        double sum = 0;
        for (int r = 0; r < rows; r++)
            sum += perRow[r];
        return sum;
    }

    // vᵀ H v, or Σ imp·v², or Σ v².
    private static double Quadratic(double[] v, double[] h, float[] imp, int n)
    {
        double total = 0;
        if (h.Length > 0)
        {
            for (int i = 0; i < n; i++)
            {
                if (v[i] == 0)
                    continue;
                var hi = new ReadOnlySpan<double>(h, i * n, n);
                total += v[i] * LinearAlgebra.Dot(hi, v);
            }
        }
        else
        {
            for (int i = 0; i < n; i++)
                total += (imp.Length > 0 ? imp[i] : 1.0) * v[i] * v[i];
        }
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
    private static int LayerOf(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal))
            return -1;
        int dot = name.IndexOf('.', 4);
        return dot > 4 && int.TryParse(name.AsSpan(4, dot - 4), System.Globalization.NumberStyles.None, null, out int layer) ? layer : -1;
    }

    private static bool HasGptqGrid(GgmlType type) => type is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1
        or GgmlType.IQ4_NL or GgmlType.Q2_K or GgmlType.Q3_K or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;

    // The state of one compression: tensors replaced so far (AWQ-scaled floats, quantized blocks), the encoded output, the reports.
    internal sealed class Run(Model source, string text, CompressionOptions options, QuantizationPlan plan, IProgress<CompressionProgress>? progress,
        CancellationToken cancellationToken) : IDisposable
    {
        private readonly Dictionary<string, (GgmlType Type, byte[] Bytes)> replaced = new(StringComparer.Ordinal);
        private Model? working;
        private int encodedCount;

        public Dictionary<string, (GgmlType Type, byte[] Bytes)> Encoded { get; } = new(StringComparer.Ordinal);

        public Dictionary<string, TensorReport> Reports { get; } = new(StringComparer.Ordinal);

        public List<float> AwqAlphas { get; } = [];

        public long CalibrationTokens { get; private set; }

        public int CalibrationPasses { get; private set; }

        public double CalibrationSeconds { get; private set; }

        private int Threads => Math.Max(1, options.Threads);

        /// <summary>Collects statistics for <paramref name="layers"/> on the current model (when asked), applies AWQ to
        /// <paramref name="awqLayers"/>, then encodes every tensor of those layers not encoded yet (−1: tensors outside the blocks).</summary>
        public void Step(HashSet<int> layers, bool calibrate, HashSet<int> awqLayers)
        {
            var model = Current();
            Dictionary<(int, LinearInput), ActivationStatistics>? stats = null;
            if (calibrate)
            {
                var collected = options.Statistics ?? Calibrate(model, layers);
                stats = collected.Entries.ToDictionary(e => (e.Layer, e.Kind));
            }
            if (options.Method == CompressionMethod.AwqGptq && stats is not null)
            {
                foreach (int l in awqLayers.Where(l => l >= 0).Order())
                    ApplyAwq(model, l, stats);
                model = Current();
            }
            var todo = plan.Tensors.Where(t => layers.Contains(LayerOf(t.Name)) && !Encoded.ContainsKey(t.Name)).ToList();
            var hessians = new Dictionary<ActivationStatistics, GptqHessian>(ReferenceEqualityComparer.Instance);
            foreach (var t in todo)
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new CompressionProgress("quantizing", encodedCount, plan.Tensors.Count, t.Name));
                Encode(t, model[t.Name], stats, hessians);
                encodedCount++;
                // Later layers see this layer quantized (sequential mode) or nothing changes (one pass).
                if (options.Sequential && t.Quantized && t.Type != t.SourceType)
                    replaced[t.Name] = Encoded[t.Name];
            }
            progress?.Report(new CompressionProgress("quantizing", encodedCount, plan.Tensors.Count, ""));
        }

        private CalibrationStatistics Calibrate(Model model, HashSet<int> layers)
        {
            var clock = Stopwatch.StartNew();
            bool all = layers.Count > model.Config.LayerCount;
            string note = all ? "" : layers.Contains(-1) ? "classifier" : $"layer {layers.Min()}";
            var stats = Calibrator.Run(model, text, new CalibrationOptions
            {
                ContextLength = options.ContextLength,
                MaxTokens = options.CalibrationTokens,
                CollectGram = options.Method is CompressionMethod.Gptq or CompressionMethod.AwqGptq,
                Layers = all ? null : layers,
                Threads = Threads,
            }, progress is null ? null : new SynchronousProgress<CalibrationProgress>(p =>
                progress.Report(new CompressionProgress("calibrating", p.Chunk, p.Chunks, $"{note} chunk {p.Chunk}/{p.Chunks}".Trim()))), cancellationToken);
            CalibrationSeconds += clock.Elapsed.TotalSeconds;
            CalibrationTokens = stats.TokenCount;
            CalibrationPasses++;
            return stats;
        }

        // AWQ on layer l's two groups: scales searched on the current model's weights, the scaled weights and divided norm
        // weights replace the current ones (as f32), and the group's input statistics are rescaled to the new input x / s.
        private void ApplyAwq(Model model, int l, Dictionary<(int, LinearInput), ActivationStatistics> stats)
        {
            foreach (var (kind, normName, names) in new[]
            {
                (LinearInput.Attention, TensorNames.AttentionNorm(l), new[] { TensorNames.Query(l), TensorNames.Key(l), TensorNames.Value(l) }),
                (LinearInput.FeedForward, TensorNames.FeedForwardNorm(l), new[] { TensorNames.Gate(l), TensorNames.Up(l) }),
            })
            {
                var first = plan[names[0]];
                if (!first.Quantized || !HasGptqGrid(first.Type) || first.Columns % GgmlTypes.BlockSize(first.Type) != 0
                    || !stats.TryGetValue((l, kind), out var entry) || entry.Gram is null)
                    continue;
                progress?.Report(new CompressionProgress("awq", 0, 1, $"layer {l} {kind}"));
                var result = Awq.Search(Read(model[normName]), [.. names.Select(n => Read(model[n]))], entry, first.Type, options.Awq);
                AwqAlphas.Add(result.Alpha);
                replaced[normName] = (GgmlType.F32, MemoryMarshal.AsBytes(result.NormWeight.AsSpan()).ToArray());
                for (int k = 0; k < names.Length; k++)
                    replaced[names[k]] = (GgmlType.F32, MemoryMarshal.AsBytes(result.Weights[k].AsSpan()).ToArray());
                stats[(l, kind)] = Rescale(entry, result.Scales);
            }
        }

        public void Encode(TensorPlan target, Tensor tensor, Dictionary<(int, LinearInput), ActivationStatistics>? stats,
            Dictionary<ActivationStatistics, GptqHessian> hessians)
        {
            long start = Stopwatch.GetTimestamp();
            int columns = checked((int)tensor.Columns), rows = checked((int)tensor.Rows);
            if (!target.Quantized || target.Type == tensor.Type)
            {
                var raw = new byte[tensor.ByteLength];
                for (long r = 0; r < tensor.Rows; r++)
                    tensor.Row(r).CopyTo(raw.AsSpan((int)(r * tensor.RowBytes)));
                var decodedCopy = Decode(tensor.Type, raw, rows, columns);
                CheckFinite(tensor.Name, decodedCopy);
                Finish(target, tensor.Type, raw, "copy", "none", 0, 0, start);
                return;
            }

            var values = new float[tensor.ElementCount];
            Dequantize.Tensor(tensor, values);
            ActivationStatistics? entry = null;
            bool linear = LinearInputs.TryGet(tensor.Name, out int layer, out var kind);
            if (stats is not null && linear)
                stats.TryGetValue((layer, kind), out entry);
            // A tied embedding is also the classifier: its rows are weighted by the classifier's input, as llama.cpp's
            // imatrix does; no GPTQ (the same rows are looked up as embeddings, which H says nothing about).
            bool tied = tensor.Name == TensorNames.TokenEmbedding && !source.TryGetTensor(TensorNames.Output, out _);
            if (stats is not null && tied && stats.TryGetValue((-1, LinearInput.Output), out var classifier) && classifier.Width == columns)
                entry = classifier;
            if (entry is not null && entry.Width != columns)
                throw new InvalidOperationException($"tensor '{tensor.Name}' has {columns} columns but its input statistics {entry.Width}");
            float[] importance = entry?.Importance() ?? [];
            double[] hessian = entry?.Gram is not null ? entry.Hessian() : [];
            string metric = hessian.Length > 0 ? "H" : importance.Length > 0 ? "diag" : "none";
            var type = target.Type;
            long bytes = target.ByteLength;

            // The relative output error of each encoding: the signal Σ_r w_rᵀ H w_r is the same for all of them.
            double signal = Energy(values, null, rows, columns, hessian, importance, Threads);
            double Relative(float[] quantized) => signal > 0 ? Energy(values, quantized, rows, columns, hessian, importance, Threads) / signal : 0;

            var rtn = new byte[bytes];
            Quantize.Rows(type, values, columns, [], rtn, Threads);
            var rtnValues = Decode(type, rtn, rows, columns);
            double before = Relative(rtnValues);

            byte[] chosen = rtn;
            float[] chosenValues = rtnValues;
            double after = before;
            string encoding = "rtn";
            if (options.Method != CompressionMethod.Rtn && importance.Length > 0)
            {
                var weighted = new byte[bytes];
                Quantize.Rows(type, values, columns, importance, weighted, Threads);
                var weightedValues = Decode(type, weighted, rows, columns);
                double error = Relative(weightedValues);
                (chosen, chosenValues, after, encoding) = (weighted, weightedValues, error, "imatrix");
            }
            if (options.Method is CompressionMethod.Gptq or CompressionMethod.AwqGptq)
            {
                if (!linear)
                {
                    // Not a linear layer (a tied embedding): imatrix rounding at most.
                }
                else if (entry?.Gram is null)
                {
                    encoding += " (no XᵀX for this tensor)";
                }
                else if (!HasGptqGrid(type) || columns % GgmlTypes.BlockSize(type) != 0)
                {
                    encoding += $" (no GPTQ grid for {type})";
                }
                else
                {
                    if (!hessians.TryGetValue(entry, out var prepared))
                    {
                        prepared = GptqHessian.Prepare(hessian, columns, options.Damping, options.ActivationOrder, Threads);
                        hessians[entry] = prepared;
                    }
                    var result = Gptq.QuantizeTensor(tensor, entry, prepared, type,
                        new GptqOptions { DampingFraction = options.Damping, ActivationOrder = options.ActivationOrder, RefinePasses = options.RefinePasses, Threads = Threads });
                    double error = Relative(result.Dequantized);
                    // GPTQ minimises this error greedily; on the rare tensor where imatrix rounding does better, keep that.
                    if (error <= after)
                        (chosen, chosenValues, after, encoding) = (result.Data, result.Dequantized, error, "gptq");
                    else
                        encoding += " (lower error than gptq)";
                }
            }
            var decoded = Decode(type, chosen, rows, columns);
            CheckFinite(tensor.Name, decoded);
            Finish(target, type, chosen, encoding, metric, before, after, start);
        }

        private void Finish(TensorPlan target, GgmlType type, byte[] data, string encoding, string metric, double before, double after, long start)
        {
            Encoded[target.Name] = (type, data);
            Reports[target.Name] = new TensorReport(target.Name, target.SourceType.ToString(), type.ToString(), target.Shape, data.LongLength,
                8.0 * data.LongLength / target.Shape.Aggregate(1L, (a, b) => a * b), encoding, metric, before, after, SwapKld: null, target.Reason,
                Stopwatch.GetElapsedTime(start).TotalSeconds);
        }

        // The source model with every replacement so far, in owned buffers.
        private Model Current()
        {
            working?.Dispose();
            working = null;
            if (replaced.Count == 0)
                return source;
            working = source.WithTensors(replaced);
            return working;
        }

        public void Dispose()
        {
            working?.Dispose();
            working = null;
        }
    }

    // The statistics of x / s from those of x.
    private static ActivationStatistics Rescale(ActivationStatistics e, float[] s)
    {
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
        return new ActivationStatistics(e.Layer, e.Kind, e.TokenCount, sumSquares, sumAbs, maxAbs, gram);
    }

    private static float[] Read(Tensor tensor)
    {
        var values = new float[tensor.ElementCount];
        Dequantize.Tensor(tensor, values);
        return values;
    }

    private static float[] Decode(GgmlType type, byte[] data, int rows, int columns)
    {
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        var values = new float[(long)rows * columns];
        for (int r = 0; r < rows; r++)
            Dequantize.Row(type, data.AsSpan(r * rowBytes, rowBytes), values.AsSpan(r * columns, columns));
        return values;
    }

    private static void CheckFinite(string name, float[] values)
    {
        for (long i = 0; i < values.LongLength; i++)
        {
            if (!float.IsFinite(values[i]))
                throw new InvalidOperationException($"tensor '{name}' would be written with {values[i]} at element {i}");
        }
    }
}
