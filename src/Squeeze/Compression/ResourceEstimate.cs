using System.Globalization;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Compression;

/// <summary>What one stage of a job is estimated to hold (<see cref="ResourceEstimate.Stages"/>).</summary>
/// <param name="Stage">The stage, as the job's progress names it.</param>
/// <param name="Bytes">Bytes the job allocates in it.</param>
public readonly record struct StageEstimate(string Stage, long Bytes);

/// <summary>
/// What a compression job will hold at its peak, estimated from the model's shape and the job's settings before any
/// work, so a job that cannot fit is refused at once rather than after an hour (or by the kernel's OOM killer). Memory
/// counts what the job allocates (the memory-mapped checkpoint is the kernel's to page in and out); disk counts the
/// output written beside its destination before the rename.
/// </summary>
/// <param name="MemoryBytes">Peak bytes the job allocates.</param>
/// <param name="DiskBytes">Bytes the output (or a budget job's candidates) takes on disk.</param>
/// <param name="Parts">What the memory peak is made of, largest first.</param>
public sealed record ResourceEstimate(long MemoryBytes, long DiskBytes, IReadOnlyList<(string Part, long Bytes)> Parts)
{
    /// <summary>Each stage's total, in the job's order, when the job's stages hold different things (a size target's
    /// encoding, measuring, searching and writing); the peak is the largest, whose parts are <see cref="Parts"/>. Empty
    /// when the job is one stage.</summary>
    public IReadOnlyList<StageEstimate> Stages { get; init; } = [];

    /// <summary>The estimate of a job whose stages hold <paramref name="stages"/>' parts in turn: the memory of the
    /// largest stage, with its parts (largest first) and every stage's total.</summary>
    /// <exception cref="ArgumentException">No stage.</exception>
    public static ResourceEstimate Peak(IReadOnlyList<(string Stage, IReadOnlyList<(string Part, long Bytes)> Parts)> stages, long diskBytes)
    {
        ArgumentNullException.ThrowIfNull(stages);
        if (stages.Count == 0)
            throw new ArgumentException("no stage to estimate", nameof(stages));
        var peak = stages.MaxBy(s => s.Parts.Sum(p => p.Bytes));
        return new ResourceEstimate(peak.Parts.Sum(p => p.Bytes), diskBytes, [.. peak.Parts.OrderByDescending(p => p.Bytes)])
        {
            Stages = [.. stages.Select(s => new StageEstimate(s.Stage, s.Parts.Sum(p => p.Bytes)))],
        };
    }

    /// <summary>The .NET runtime, the tokenizer and the per-block runtime's scratch, besides what is counted part by part.</summary>
    private const long Baseline = 384L << 20;

    /// <summary>
    /// The peak of compressing <paramref name="model"/> to <paramref name="plan"/> block by block: the residual stream of
    /// <paramref name="calibrationTokens"/> tokens (twice: a block's input and output), one block's input statistics (with
    /// their Gram matrices for GPTQ), GPTQ's prepared Hessians of that block and the transient copies of preparing the
    /// widest one, and the buffers of encoding the largest tensor (<see cref="GgufEncodingBytes"/>: its bytes twice and
    /// one band of rows' f32 copies). <paramref name="fileBytes"/> is the output's exact size.
    /// </summary>
    public static ResourceEstimate ForMix(Model model, QuantizationPlan plan, CompressionMethod method, long calibrationTokens, long fileBytes)
    {
        ArgumentNullException.ThrowIfNull(model);
        return ForMix(model.Config, plan, method, calibrationTokens, fileBytes);
    }

    /// <summary>The same estimate from the model's hyperparameters alone (what a checkpoint too large to write would
    /// need: its plan comes from <see cref="QuantizationMix.Plan(ModelConfig, IReadOnlyList{ValueTuple{string, long[], GgmlType}}, QuantizationMix, IReadOnlyList{TensorTypeOverride}, bool, bool)"/>).</summary>
    public static ResourceEstimate ForMix(ModelConfig config, QuantizationPlan plan, CompressionMethod method, long calibrationTokens, long fileBytes)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var parts = MixParts(config, method, calibrationTokens, LargestGgufEncoding(plan.Tensors.Where(t => t.Quantized).Select(t => (t.Name, t.Shape, t.Type))));
        parts.Add(("the runtime", RuntimeBytes(config)));
        parts.Sort((a, b) => b.Item2.CompareTo(a.Item2));
        return new ResourceEstimate(parts.Sum(p => p.Item2), fileBytes, parts);
    }

    /// <summary>What encoding a model block by block in GGUF types holds (<see cref="ForMix(ModelConfig, QuantizationPlan, CompressionMethod, long, long)"/>'s
    /// parts, and a GGUF size target's while it encodes its candidates or the chosen types): the calibration's
    /// (<see cref="CalibrationParts"/>), AWQ's scaled tensors, the buffers of encoding <paramref name="largest"/> (the
    /// largest tensor and its bytes, <see cref="LargestGgufEncoding"/>); the runtime besides (<see cref="RuntimeBytes"/>).</summary>
    public static List<(string Part, long Bytes)> MixParts(ModelConfig config, CompressionMethod method, long calibrationTokens, (string Tensor, long Bytes) largest)
    {
        ArgumentNullException.ThrowIfNull(config);
        var parts = CalibrationParts(config, method, calibrationTokens);
        var c = config;
        bool calibrates = method != CompressionMethod.Rtn && calibrationTokens > 0;
        if (method == CompressionMethod.AwqGptq && calibrates)
        {
            // AWQ replaces a block's scaled readers with f32 copies (q/k/v; gate/up, or a mixture's router and three stacks
            // of experts and its shared expert), and the block's model holds them once more while it is encoded.
            long scaled = (long)(c.QDim + 2 * c.KvDim) * c.Dim + (c.IsMixtureOfExperts
                ? 3L * c.ExpertCount * c.ExpertHiddenDim * c.Dim + (long)c.ExpertCount * c.Dim + 2L * c.SharedExpertHiddenDim * c.Dim
                : 2L * c.HiddenDim * c.Dim);
            parts.Add(("AWQ's scaled tensors of one block, twice", 2 * scaled * sizeof(float)));
        }
        parts.Add(($"encoding the largest tensor{(largest.Tensor.Length > 0 ? $" ({largest.Tensor})" : "")}", largest.Bytes));
        return parts;
    }

    /// <summary>The tensor of <paramref name="encodings"/> (name, shape, GGUF type) whose encoding holds the most
    /// (<see cref="GgufEncodingBytes"/>), and those bytes; ("", 0) when there is none. A stacked tensor of experts is
    /// encoded one expert at a time: its largest buffers are one expert's.</summary>
    public static (string Tensor, long Bytes) LargestGgufEncoding(IEnumerable<(string Name, long[] Shape, GgmlType Type)> encodings)
    {
        ArgumentNullException.ThrowIfNull(encodings);
        return encodings.Select(t => (t.Name, Bytes: GgufEncodingBytes(t.Shape.Length == 1 ? 1 : t.Shape[^2], t.Shape[^1], t.Type, TensorEncoder.BandValues)))
            .DefaultIfEmpty((Name: "", Bytes: 0L)).MaxBy(t => t.Bytes);
    }

    /// <summary>What block-by-block calibration holds for <paramref name="calibrationTokens"/> tokens (none for rtn or no
    /// tokens): the residual stream (twice: a block's input and output), one block's input statistics (with their Gram
    /// matrices for GPTQ), and GPTQ's prepared Hessians of that block with the transient copies of preparing the widest.
    /// While a block is collected, a group's running sum and one shard's statistics are held beside its running total
    /// (<see cref="Calibration.CalibrationShards"/>; the sum only from the second group on): at most twice the block's
    /// statistics, which for a dense model the prepared Hessians (a pair of width² matrices per input and the widest's two
    /// transient copies, held only after the collection) already exceed in the sum.</summary>
    public static List<(string Part, long Bytes)> CalibrationParts(ModelConfig config, CompressionMethod method, long calibrationTokens)
    {
        ArgumentNullException.ThrowIfNull(config);
        var c = config;
        bool calibrates = method != CompressionMethod.Rtn && calibrationTokens > 0;
        bool gram = method is CompressionMethod.Gptq or CompressionMethod.AwqGptq;
        long[] widths = DenseWidths(c);
        long[] expertWidths = c.IsMixtureOfExperts ? [c.Dim, c.ExpertHiddenDim] : [];
        var parts = new List<(string, long)>();
        if (calibrates)
        {
            parts.Add(ResidualStream(c, calibrationTokens));
            long statistics = widths.Concat(expertWidths.SelectMany(w => Enumerable.Repeat(w, c.ExpertCount + 1))).Sum(w => w * 20 + (gram ? w * w * sizeof(double) : 0));
            parts.Add(("one block's input statistics", statistics));
            if (gram)
            {
                long widest = widths.Concat(expertWidths).Max();
                // Every input's prepared Hessian (H and its factor) is kept while the block's tensors are encoded; encoding
                // the widest also holds its H / n and, while it is prepared, the working copy that becomes the factor.
                parts.Add(("GPTQ's prepared Hessians of one block", PerInputPairBytes(c) + 2 * widest * widest * sizeof(double)));
            }
        }
        return parts;
    }

    /// <summary>Bytes of a pair of square matrices of doubles for every dense input of a block (a prepared Hessian and its
    /// factor, a whitening's root and inverse), each of the input's width: what an encoder keeps per input while the block's
    /// tensors are encoded.</summary>
    public static long PerInputPairBytes(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return DenseWidths(config).Sum(w => 2 * w * w * sizeof(double));
    }

    // A block's dense inputs: attention's (dim), its output's (q dim), the feed-forward's (dim) and its down's (hidden); a
    // mixture of experts': the router's and shared expert's (dim), the shared expert's down; the routed experts' two
    // inputs are held once per expert and once for all routed rows, their Hessians prepared one at a time.
    private static long[] DenseWidths(ModelConfig c) => !c.IsMixtureOfExperts ? [c.Dim, c.QDim, c.Dim, c.HiddenDim]
        : c.SharedExpertHiddenDim > 0 ? [c.Dim, c.QDim, c.Dim, c.SharedExpertHiddenDim] : [c.Dim, c.QDim, c.Dim];

    /// <summary>The residual stream of <paramref name="calibrationTokens"/> tokens that block-by-block calibration holds
    /// until it is disposed: twice, a block's input and output.</summary>
    public static (string Part, long Bytes) ResidualStream(ModelConfig config, long calibrationTokens)
    {
        ArgumentNullException.ThrowIfNull(config);
        return ($"the residual stream of {calibrationTokens:N0} calibration tokens", 2 * calibrationTokens * config.Dim * sizeof(float));
    }

    /// <summary>The buffers of encoding a tensor of <paramref name="elements"/> values whole (one expert's, for a stack): f32
    /// values, two rounded candidates and GPTQ's result with their decoded values, and the runtime's transient copies:
    /// eight f32 copies covered the 8B shape's classifier (measured 5.1 GB peak with everything else). What the native
    /// representations' encoders hold; a GGUF type's encoding holds one band's (<see cref="GgufEncodingBytes"/>).</summary>
    public static long EncodingBytes(long elements) => elements * 8 * sizeof(float);

    /// <summary>The buffers of encoding a tensor of <paramref name="rows"/> × <paramref name="columns"/> (one expert's, for
    /// a stack) in GGUF type <paramref name="type"/> band by band, as <see cref="TensorEncoder"/> encodes them: the whole
    /// tensor's bytes twice (the rounding's and GPTQ's, kept until their errors are compared) and
    /// <see cref="EncodingBytes"/>'s eight f32 copies of one band of at most <paramref name="bandValues"/> values (at
    /// least one row; the whole tensor when it fits).</summary>
    public static long GgufEncodingBytes(long rows, long columns, GgmlType type, int bandValues)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bandValues);
        long bandRows = Math.Min(rows, Math.Max(1, bandValues / columns));
        return 2 * rows * GgmlTypes.RowBytes(type, checked((int)columns)) + EncodingBytes(bandRows * columns);
    }

    /// <summary>The .NET runtime, the tokenizer and the per-block runtime's scratch, with a KV cache of 256 positions.</summary>
    public static long RuntimeBytes(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Baseline + config.LayerCount * 256L * config.KvDim * 2 * sizeof(float);
    }

    /// <summary>
    /// Throws, before any work, when the job needs more memory than <paramref name="memoryLimit"/> (0: what the machine
    /// has available now, <see cref="AvailableMemory"/>) or more disk than is free where <paramref name="outputPath"/>
    /// goes. The message names the figure (and the stage that reaches it, when the job has <see cref="Stages"/>), what is
    /// available, and <paramref name="remedy"/> (how to need less).
    /// </summary>
    /// <exception cref="InsufficientMemoryException">Not enough memory.</exception>
    /// <exception cref="IOException">Not enough free disk.</exception>
    public void Check(string outputPath, long memoryLimit, string remedy)
    {
        ArgumentNullException.ThrowIfNull(outputPath);
        long available = memoryLimit > 0 ? memoryLimit : AvailableMemory();
        if (MemoryBytes > available)
        {
            string largest = string.Join(", ", Parts.Take(2).Select(p => $"{p.Part} {Size(p.Bytes)}"));
            string stage = Stages.Count > 0 ? $" in its {Stages.MaxBy(s => s.Bytes).Stage} stage" : "";
            throw new InsufficientMemoryException($"{outputPath}: the job needs about {Size(MemoryBytes)} of memory{stage} ({largest}), " +
                $"{(memoryLimit > 0 ? "more than the limit of" : "but only")} {Size(available)}{(memoryLimit > 0 ? "" : " is available")}; {remedy}");
        }
        string directory = Path.GetDirectoryName(Path.GetFullPath(outputPath))!;
        long free = new DriveInfo(directory).AvailableFreeSpace;
        if (DiskBytes > free)
            throw new IOException($"{outputPath}: the output takes {Size(DiskBytes)} but {directory} has {Size(free)} free");
    }

    /// <summary>Bytes of memory this process can still take: the kernel's MemAvailable (Linux), bounded by the runtime's
    /// limit (a container's, or the machine's).</summary>
    public static long AvailableMemory()
    {
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes - GC.GetTotalMemory(false);
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line["MemAvailable:".Length..].Trim().Split(' ')[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kib))
                    return Math.Min(limit, kib * 1024);
            }
        }
        catch (IOException)
        {
            // Not Linux: the runtime's figure.
        }
        catch (UnauthorizedAccessException)
        {
        }
        return limit;
    }

    private static string Size(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.0} GiB" : $"{bytes / (double)(1L << 20):0} MiB";
}
