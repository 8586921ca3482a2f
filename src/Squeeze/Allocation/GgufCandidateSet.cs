using System.Text.RegularExpressions;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tuning;
using Squeeze.Tensors;

namespace Squeeze.Allocation;

/// <summary>Progress of building a candidate set: the stage ("encoding", "measuring"), steps done of the total, and a note.</summary>
public readonly record struct CandidateProgress(string Stage, int Done, int Total, string Note);

/// <summary>Settings of <see cref="GgufCandidateSet.Build"/>.</summary>
public sealed record CandidateOptions
{
    /// <summary>How each candidate is encoded (rtn, imatrix or gptq; options other than the method, damping,
    /// activation order and threads are ignored).</summary>
    public CompressionOptions Compression { get; init; } = new();

    /// <summary>The types to try; each tensor gets those whose block divides its rows. Default: <see cref="GgufCandidateSet.DefaultTypes"/>.</summary>
    public IReadOnlyList<GgmlType>? Types { get; init; }

    /// <summary>Directory for the memory-mapped file of encoded candidates (deleted on dispose); default the system temp directory.</summary>
    public string? Directory { get; init; }
}

/// <summary>
/// Every tensor of a model encoded once in every format it can take (<see cref="Compressor"/>'s method per tensor), kept
/// in one memory-mapped file so that searches can build models from any mix of candidates without copying, and the
/// final file is written from the same bytes. 2-D tensors get the candidates; 1-D tensors (norms) stay as they are.
/// Sizes are exact: <see cref="CandidateSet{T}.FileBytes(IReadOnlyList{int})"/> of a selection is the size of the GGUF file <see cref="Write"/> writes.
/// </summary>
public sealed class GgufCandidateSet : CandidateSet<GgufCandidate>
{
    /// <summary>The types tried by default: every block type the writer and runtime support, and F16.</summary>
    public static readonly IReadOnlyList<GgmlType> DefaultTypes =
    [
        GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_0, GgmlType.IQ4_NL, GgmlType.Q4_1, GgmlType.Q4_K, GgmlType.Q5_0, GgmlType.Q5_1,
        GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.Q8_0, GgmlType.F16,
    ];

    private readonly string dataPath;
    private readonly NativeBuffer data;

    private GgufCandidateSet(Model source, IReadOnlyList<TensorCandidates<GgufCandidate>> tensors, string dataPath, NativeBuffer data)
        : base(source, tensors, FusedUnits(source.Config, tensors))
    {
        this.dataPath = dataPath;
        this.data = data;
        // The GGUF size is additive: the header (metadata and tensor infos, whose sizes do not depend on the types) and
        // the fixed tensors, padded, plus each chosen unit's padded bytes. Measure the constant part on the smallest plan.
        var smallest = tensors.Select(_ => 0).ToArray();
        Overhead = GgufModelWriter.FileLength(source, FileType(smallest), TypeOf(smallest)) - Enumerable.Range(0, Units.Count).Sum(u => UnitBytes(u, 0));
    }

    // Each tensor alone, except the parts of a tensor the GGUF file fuses (Phi-3's attn_qkv from q, k and v, ffn_up from
    // gate and up), which need one type; units in the order of their first tensor.
    private static int[][] FusedUnits(ModelConfig config, IReadOnlyList<TensorCandidates<GgufCandidate>> tensors)
    {
        var index = tensors.Select((t, i) => (t.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
        var partsOf = new Dictionary<int, int[]>();
        foreach (var parts in GgufLayout.FusedTensors(config).Values)
        {
            int[] unit = [.. parts.Select(p => index[p.Name]).Order()];
            foreach (int i in unit)
                partsOf[i] = unit;
        }
        return [.. Enumerable.Range(0, tensors.Count).Where(i => !partsOf.TryGetValue(i, out var unit) || unit[0] == i)
            .Select(i => partsOf.GetValueOrDefault(i) ?? [i])];
    }

    /// <summary>Bytes of the candidate file this set keeps mapped (<see cref="CandidateFileBytes(Model, IReadOnlyList{GgmlType})"/>
    /// before any work).</summary>
    public long CandidateFileBytesWritten => data.Length;

    /// <summary>File bytes that do not depend on the selection: header, metadata, tensor infos and the fixed tensors, padded.</summary>
    public override long Overhead { get; }

    /// <summary>Every GGUF tensor is padded to the 32-byte alignment.</summary>
    public override long Grain => GgufFile.DefaultAlignment;

    /// <summary>Encodes every 2-D tensor of <paramref name="model"/> in every type of <paramref name="options"/> whose block
    /// divides its rows, one block at a time: each block's tensors with that block's statistics from
    /// <paramref name="blocks"/> (<see cref="LayerwiseCalibrator.Blocks"/> as it calibrates, or
    /// <see cref="BlockStatistics.Of"/> of a statistics file), or with none when <paramref name="blocks"/> is null.</summary>
    /// <exception cref="ArgumentException">A calibrated method without statistics, or a tensor with no type that fits.</exception>
    public static GgufCandidateSet Build(Model model, IEnumerable<BlockStatistics>? blocks, CandidateOptions options, IProgress<CandidateProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var types = options.Types ?? DefaultTypes;
        var matrices = model.Tensors.Where(t => t.Shape.Length >= 2).ToList();
        var work = matrices.Select(t => (Tensor: t, Types: Fitting(t.Columns, types))).ToList();
        foreach (var (t, ts) in work)
        {
            if (ts.Count == 0)
                throw new ArgumentException($"tensor '{t.Name}' has rows of {t.Columns} values: none of the types {string.Join(", ", types)} fits them", nameof(options));
        }
        string directory = options.Directory ?? Path.GetTempPath();
        string path = Path.Combine(directory, $"squeeze-candidates-{Guid.NewGuid():N}.bin");
        var tensors = new TensorCandidates<GgufCandidate>[work.Count];
        try
        {
            using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                int total = work.Sum(w => w.Types.Count), done = 0;
                // A candidate reports only its own output error: plain rounding's, for the report's "before", is not measured.
                var encoding = options.Compression with { MeasureErrorBefore = false };
                if (blocks is null && options.Compression.Method != CompressionMethod.Rtn)
                    throw new ArgumentException($"{options.Compression.Method} needs calibration statistics", nameof(blocks));
                // Each block's (tensor, type) pairs are independent items for the options' workers (in this process by
                // default); the candidate file is the same bytes in whatever order they finish.
                foreach (var (_, statistics, indices) in CandidateBlocks.Of(model, [.. work.Select(w => w.Tensor.Name)], blocks, encoding, null, cancellationToken))
                {
                    var items = indices.SelectMany(i => work[i].Types.Select(type => (Index: i, Type: type))).ToArray();
                    var targets = items.Select(x => new TensorPlan(work[x.Index].Tensor.Name, work[x.Index].Tensor.Shape, work[x.Index].Tensor.Type, x.Type, Quantized: true, "requested")).ToArray();
                    var found = indices.ToDictionary(i => i, i => new List<GgufCandidate>(work[i].Types.Count));
                    var block = new BlockWork(model, statistics, encoding, targets, new Dictionary<string, (GgmlType, byte[])>());
                    if (targets.Length > 0)
                        progress?.Report(new CandidateProgress("encoding", done, total, $"{targets[0].Name} {targets[0].Type}"));
                    options.Compression.Workers.Encode(block, (k, encoded) =>
                    {
                        var (i, type) = items[k];
                        long offset = Pad(file);
                        file.Write(encoded.Data);
                        found[i].Add(new GgufCandidate(type, offset, encoded.Data.LongLength, Aligned(encoded.Data.LongLength), encoded.Report.Encoding,
                            encoded.Report.ErrorAfter, double.NaN));
                        done++;
                        progress?.Report(new CandidateProgress("encoding", done, total, k + 1 < targets.Length ? $"{targets[k + 1].Name} {targets[k + 1].Type}" : ""));
                    }, cancellationToken);
                    foreach (int i in indices)
                    {
                        var list = found[i];
                        list.Sort((a, b) => a.Bytes != b.Bytes ? a.Bytes.CompareTo(b.Bytes) : a.Type.CompareTo(b.Type));
                        tensors[i] = new TensorCandidates<GgufCandidate>(work[i].Tensor.Name, work[i].Tensor.Shape, list);
                    }
                }
                progress?.Report(new CandidateProgress("encoding", total, total, ""));
                file.Flush(flushToDisk: false);
            }
            return new GgufCandidateSet(model, tensors, path, NativeBuffer.MapFile(path));
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }

    /// <summary>Bytes of the candidate file <see cref="Build"/> writes for <paramref name="model"/>: every 2-D tensor in
    /// every one of <paramref name="types"/> (default <see cref="DefaultTypes"/>) whose block fits its rows, each
    /// candidate padded to <see cref="CandidateAlignment"/> bytes; known before any work.</summary>
    public static long CandidateFileBytes(Model model, IReadOnlyList<GgmlType>? types = null) => CandidateFileBytes(Matrices(model), types);

    /// <summary>The same from the shapes of the tensors that take candidates (<see cref="Matrices"/> of a model, or the
    /// tensors a config implies for a checkpoint too large to write).</summary>
    public static long CandidateFileBytes(IReadOnlyList<(string Name, long[] Shape)> matrices, IReadOnlyList<GgmlType>? types = null)
    {
        ArgumentNullException.ThrowIfNull(matrices);
        return matrices.Sum(m => Fitting(m.Shape[^1], types ?? DefaultTypes)
            .Sum(type => (GgmlTypes.RowBytes(type, checked((int)m.Shape[^1])) * Rows(m.Shape) + CandidateAlignment - 1) / CandidateAlignment * CandidateAlignment));
    }

    /// <summary>The tensors <see cref="Build"/> encodes, with their shapes: every tensor of <paramref name="model"/> of
    /// two dimensions or more (a stack of experts is one).</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Matrices(Model model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return [.. model.Tensors.Where(t => t.Shape.Length >= 2).Select(t => (t.Name, t.Shape))];
    }

    /// <summary>The types of <paramref name="types"/> whose block divides rows of <paramref name="columns"/> values, each once.</summary>
    public static List<GgmlType> Fitting(long columns, IReadOnlyList<GgmlType> types)
    {
        ArgumentNullException.ThrowIfNull(types);
        return types.Where(type => columns % GgmlTypes.BlockSize(type) == 0).Distinct().ToList();
    }

    // Rows of a tensor of this shape: the product of every dimension but the innermost.
    private static long Rows(long[] shape) => shape[..^1].Aggregate(1L, (a, b) => a * b);

    // Each candidate starts at a multiple of this in the candidate file (cache-line aligned tensors).
    private const int CandidateAlignment = 64;

    /// <summary>The selection with every tensor in <paramref name="type"/> where it is a candidate, else the nearest larger one (else the largest).</summary>
    public int[] Uniform(GgmlType type) => Tensors.Select(t =>
    {
        int k = t.Options.ToList().FindIndex(c => c.Type == type);
        if (k >= 0)
            return k;
        long bits = GgmlTypes.BlockBytes(type) * 8L / GgmlTypes.BlockSize(type);
        int larger = t.Options.ToList().FindIndex(c => c.Bytes * 8 >= bits * t.Elements);
        return larger >= 0 ? larger : t.Options.Count - 1;
    }).ToArray();

    /// <summary>
    /// A model whose 2-D tensors are the selected candidates (pointing into the mapped candidate file, no copy) and whose
    /// other tensors are the source's; a selection entry of −1 keeps that tensor as in the source (single swaps). Valid
    /// while this set is; disposing the model releases nothing of the set.
    /// </summary>
    public override Model Compose(IReadOnlyList<int> selection)
    {
        var chosen = Selected(selection);
        var tensors = Source.Tensors.Select(t => chosen.TryGetValue(t.Name, out var c) ? new Tensor(t.Name, c.Type, t.Shape, data, c.Offset) : t).ToList();
        return new Model(Source.Config, Source.Vocabulary, tensors, Source.Source, []);
    }

    /// <summary>
    /// Writes the GGUF file of <paramref name="selection"/> to <paramref name="path"/> (temporary file, then renamed) from the
    /// cached bytes and returns its size, which is <see cref="CandidateSet{T}.FileBytes(IReadOnlyList{int})"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The written file's size differs from <see cref="CandidateSet{T}.FileBytes(IReadOnlyList{int})"/> (a bug, never expected).</exception>
    public override long Write(IReadOnlyList<int> selection, string path, TuningResult? tuning = null)
    {
        long expected = FileBytes(selection);
        if (tuning is { Weights.Count: > 0 })
            throw new ArgumentException("GGUF's block types have no tunable parameters: only norms can be tuned", nameof(tuning));
        var byName = Tensors.Select((t, i) => (t.Name, Candidate: t.Options[selection[i]])).ToDictionary(x => x.Name, x => x.Candidate, StringComparer.Ordinal);
        using var tuned = tuning is null ? null : Source.WithTensors(tuning.NormTensors(Source));
        GgufModelWriter.Write(tuned ?? Source, path, FileType(selection), tensor =>
        {
            if (!byName.TryGetValue(tensor.Name, out var c))
                return EncodedTensor.Copy(tensor);
            return new EncodedTensor(c.Type, stream =>
            {
                for (long at = 0; at < c.Bytes; at += int.MaxValue)
                    stream.Write(data.Span(c.Offset + at, (int)Math.Min(int.MaxValue, c.Bytes - at)));
            });
        });
        long written = new FileInfo(path).Length;
        if (written != expected)
            throw new InvalidOperationException($"{path}: wrote {written:N0} bytes, the size function said {expected:N0}");
        return written;
    }

    /// <summary>
    /// Writes the GGUF file of <paramref name="selection"/> with each chosen type encoded anew by
    /// <paramref name="options"/>' method, block by block as <see cref="Compressor.Compress"/> encodes a named mix
    /// (calibrating again on <paramref name="calibrationText"/>): what a set of rounded candidates
    /// (<see cref="CandidateEncoding.Rounding"/>) writes. The types, and so the size, are the selection's. The report's
    /// tensors give the candidate's output error as the error before, the new encoding's as the error after, and the
    /// candidate's single-swap KLD.
    /// </summary>
    /// <exception cref="InvalidOperationException">The file written does not have the selection's size (a tensor the
    /// named-mix plan does not quantize had a candidate, as an expert router would).</exception>
    public CompressionReport WriteEncoded(IReadOnlyList<int> selection, string path, string calibrationText, CompressionOptions options,
        IProgress<CompressionProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(selection);
        ArgumentNullException.ThrowIfNull(options);
        long expected = FileBytes(selection);
        var types = Tensors.Select((t, i) => new TensorTypeOverride($"^{Regex.Escape(t.Name)}$", t.Options[selection[i]].Type)).ToList();
        uint fileType = FileType(selection);
        var mix = QuantizationMix.All.First(m => GgufQuantizer.FileType(m) == fileType);
        var report = Compressor.Compress(Source, calibrationText, options with { Mix = mix, Pure = true, Overrides = types, MeasureErrorBefore = false },
            path, progress, cancellationToken);
        if (report.FileBytes != expected)
        {
            File.Delete(path);
            throw new InvalidOperationException($"{path}: the chosen types encoded with {options.Method} took {report.FileBytes:N0} bytes, the selection {expected:N0}");
        }
        var chosen = Report(selection).ToDictionary(t => t.Name, StringComparer.Ordinal);
        return report with
        {
            Tensors = [.. report.Tensors.Select(t => chosen.TryGetValue(t.Name, out var c)
                ? t with { ErrorBefore = c.ErrorAfter, SwapKld = c.SwapKld, Reason = c.Reason }
                : t)],
        };
    }

    /// <summary>
    /// llama.cpp's <c>general.file_type</c> for a selection: the file type named after the type that holds most weights
    /// (a u32 either way, so it does not change the size).
    /// </summary>
    public uint FileType(IReadOnlyList<int> selection)
    {
        var weights = new Dictionary<GgmlType, long>();
        for (int i = 0; i < Tensors.Count; i++)
        {
            var type = Tensors[i].Options[selection[i]].Type;
            weights[type] = weights.GetValueOrDefault(type) + Tensors[i].Elements;
        }
        var dominant = weights.Count == 0 ? GgmlType.F32 : weights.MaxBy(p => p.Value).Key;
        return dominant switch
        {
            GgmlType.F32 => 0,
            GgmlType.F16 => 1,
            GgmlType.Q4_0 => 2,
            GgmlType.Q4_1 => 3,
            GgmlType.Q8_0 => 7,
            GgmlType.Q5_0 => 8,
            GgmlType.Q5_1 => 9,
            GgmlType.Q2_K => 10,
            GgmlType.Q3_K => 12,
            GgmlType.Q4_K => 15,
            GgmlType.Q5_K => 17,
            GgmlType.Q6_K => 18,
            GgmlType.IQ4_NL => 25,
            GgmlType.BF16 => 32,
            _ => 0,
        };
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        data.Dispose();
        File.Delete(dataPath);
    }

    private Func<Tensor, GgmlType> TypeOf(int[] selection)
    {
        var byName = Tensors.Select((t, i) => (t.Name, t.Options[selection[i]].Type)).ToDictionary(x => x.Name, x => x.Type, StringComparer.Ordinal);
        return tensor => byName.TryGetValue(tensor.Name, out var type) ? type : tensor.Type;
    }

    private static long Aligned(long bytes) => (bytes + GgufFile.DefaultAlignment - 1) / GgufFile.DefaultAlignment * GgufFile.DefaultAlignment;

    // Pads the candidate file to CandidateAlignment and returns the position.
    private static long Pad(FileStream file)
    {
        long position = file.Position;
        long aligned = (position + CandidateAlignment - 1) / CandidateAlignment * CandidateAlignment;
        for (long i = position; i < aligned; i++)
            file.WriteByte(0);
        return aligned;
    }
}
