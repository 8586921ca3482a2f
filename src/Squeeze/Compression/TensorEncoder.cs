using System.Diagnostics;
using Squeeze.Calibration;
using Squeeze.Compression.Representations;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Pruning;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Compression;

/// <summary>A weight encoded in a native representation, how, and its relative calibration output error
/// tr(E H Eᵀ) / tr(W H Wᵀ) (diag(H) when there is no Gram matrix; NaN without statistics).</summary>
public sealed record NativeEncoded(LinearWeight Weight, string Encoding, double OutputError);

/// <summary>One tensor encoded in one GGUF type by <see cref="TensorEncoder.Encode(string, GgmlType)"/>: the bytes to
/// write and the same report <see cref="Compressor.Compress"/> gives (error before and after, encoding used).</summary>
public sealed record EncodedTensorData(byte[] Data, TensorReport Report);

/// <summary>
/// The one per-tensor encoding step of every compression (<see cref="Compressor"/>'s named mixes, the candidates of a
/// budget search, the native representations): a model's 2-D weight in a GGUF type or a native representation, with
/// the calibration data of its input. Every encoding is rounding (importance-weighted when there are statistics), then,
/// for GPTQ, GPTQ on the same grid with the input's prepared Hessian (one per shared input, kept between calls) when
/// there is a Gram matrix; the one with the lower output error is kept. The tied embedding is weighted by the
/// classifier's input. It also exposes what other encoders need: a tensor's values, its input statistics and Hessian,
/// and the output error of any encoding.
/// </summary>
public sealed class TensorEncoder
{
    private readonly Model model;
    private readonly CompressionOptions options;
    private readonly IReadOnlyDictionary<(int, LinearInput), ActivationStatistics>? stats;
    private readonly CancellationToken cancellationToken;
    private readonly Dictionary<ActivationStatistics, GptqHessian> hessians = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ActivationStatistics, GptqHessian> naturalOrderHessians = new(ReferenceEqualityComparer.Instance);

    /// <summary>The default values per band of rows of a GGUF type's encoding (<see cref="CompressionOptions.EncodingBandValues"/>):
    /// 4M, 16 MB of f32, 2,048 rows of a 2,048-wide classifier.</summary>
    internal const int BandValues = 1 << 22;

    /// <summary>What <see cref="EncodeVector"/> keeps per input (<see cref="NativeRepresentation.KeptPerInput"/>).</summary>
    public const string NaturalOrderHessian = "Hessian prepared in natural column order";
    private readonly (string Name, int[] Rows)? selection;
    private readonly (string Name, int Expert)? expertView;

    /// <param name="model">The model whose tensors are encoded.</param>
    /// <param name="statistics">Its activation statistics on calibration text, or null for the encodings that need none
    /// (plain rounding, f16).</param>
    /// <param name="options">How tensors are encoded (method, GPTQ settings, threads).</param>
    /// <param name="tokenUsage">How much the model uses each token on the calibration text (indexed by token id,
    /// <see cref="TokenUsage.Measure"/>), or null: what the levels that treat the rows of token-indexed matrices by use
    /// need (<see cref="RowSplitRepresentation"/>).</param>
    /// <param name="cancellationToken">Stops a long encoding (GPTQ checks it between tiles of rows).</param>
    /// <exception cref="ArgumentException">AWQ or sequential options (they change the model between tensors, which only
    /// <see cref="Compressor.Compress"/> does), statistics of another model, or token usage of another vocabulary.</exception>
    public TensorEncoder(Model model, CalibrationStatistics? statistics, CompressionOptions options, double[]? tokenUsage = null,
        CancellationToken cancellationToken = default)
        : this(model, statistics is null ? null : Entries(model, statistics), PerTensor(options), cancellationToken, tokenUsage)
    {
    }

    // One block's encoder (Compressor, candidate sets built block by block): statistics already checked (of that block
    // alone, or all), the model possibly AWQ-scaled.
    internal TensorEncoder(Model model, IReadOnlyDictionary<(int, LinearInput), ActivationStatistics>? statistics, CompressionOptions options,
        CancellationToken cancellationToken, double[]? tokenUsage = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        if (tokenUsage is not null && tokenUsage.Length != model.Config.VocabSize)
            throw new ArgumentException($"token usage of {tokenUsage.Length} tokens for a vocabulary of {model.Config.VocabSize}", nameof(tokenUsage));
        this.model = model;
        this.options = options;
        stats = statistics;
        this.cancellationToken = cancellationToken;
        TokenUsage = tokenUsage;
    }

    private static Dictionary<(int, LinearInput), ActivationStatistics> Entries(Model model, CalibrationStatistics statistics)
    {
        ArgumentNullException.ThrowIfNull(model);
        Compressor.CheckStatistics(model, statistics, needsGram: false);
        return statistics.Entries.ToDictionary(e => (e.Layer, e.Kind));
    }

    private static CompressionOptions PerTensor(CompressionOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Method == CompressionMethod.AwqGptq || options.Sequential)
            throw new ArgumentException("per-tensor encoding supports rtn, imatrix and gptq, not AWQ or sequential mode", nameof(options));
        return options;
    }

    // The same model, statistics and caches, seen through another view: a row selection (ForRows) or one expert of a
    // stack (ForExpert), with the token usage of that view.
    private TensorEncoder(TensorEncoder parent, (string Name, int[] Rows)? selection, (string Name, int Expert)? expertView, double[]? tokenUsage)
    {
        model = parent.model;
        options = parent.options;
        stats = parent.stats;
        cancellationToken = parent.cancellationToken;
        hessians = parent.hessians;
        naturalOrderHessians = parent.naturalOrderHessians;
        this.selection = selection;
        this.expertView = expertView;
        TokenUsage = tokenUsage;
    }

    /// <summary>True when tensor <paramref name="name"/> is a stack of routed experts ([experts, rows, columns]) as this
    /// encoder sees it (an encoder made by <see cref="ForExpert"/> sees one expert, not a stack).</summary>
    public bool IsStacked(string name) => expertView?.Name != name && model.Weight(name) is ExpertStackWeight;

    /// <summary>The number of routed experts stacked in tensor <paramref name="name"/>.</summary>
    public int ExpertCount(string name) => model.ExpertWeights(name).Count;

    /// <summary>An encoder that sees the stacked tensor <paramref name="name"/> as only its routed expert
    /// <paramref name="expert"/> ([rows, columns]), with that expert's input statistics (the tokens routed to it; an
    /// expert no calibration token reached takes those of every routed row of the layer): each expert of a stack is
    /// encoded alone, one expert's values in memory at a time, and its prepared Hessian is not kept.</summary>
    public TensorEncoder ForExpert(string name, int expert)
    {
        if (!IsStacked(name))
            throw new ArgumentException($"tensor '{name}' is not a stack of experts", nameof(name));
        if (selection is not null)
            throw new InvalidOperationException("an encoder of a row selection has no experts");
        ArgumentOutOfRangeException.ThrowIfNegative(expert);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(expert, ExpertCount(name));
        return new TensorEncoder(this, selection: null, expertView: (name, expert), tokenUsage: null);
    }

    /// <summary>True when this encoder sees <paramref name="name"/> as one routed expert whose own input statistics are
    /// missing (no calibration token was routed to it) and stand in with the layer's.</summary>
    internal bool ExpertWithoutTokens(string name) => expertView?.Name == name && stats is not null && RoutedInput(name) is { } routed && routed.Expert(expertView.Value.Expert) is null;

    // The weight `name` as this encoder sees it before any row selection: one expert's, or the model's.
    private LinearWeight Source(string name) => expertView?.Name == name ? model.ExpertWeights(name)[expertView.Value.Expert] : model.Weight(name);

    /// <summary>An encoder that sees tensor <paramref name="name"/> as only its rows <paramref name="rows"/> (in that
    /// order), with the same input statistics and, for a token-indexed matrix, the usage of those rows' tokens: the
    /// levels of one group of rows.</summary>
    public TensorEncoder ForRows(string name, int[] rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        int all = Rows(name);
        if (rows.Length == 0 || rows.Any(r => r < 0 || r >= all))
            throw new ArgumentException($"{name}: a row selection must name at least one row, each in [0, {all})", nameof(rows));
        // Rows of the parent's view (which may itself be a selection: selection.Rows are rows of the whole tensor).
        return new TensorEncoder(this, (name, selection?.Name == name ? [.. rows.Select(r => selection.Value.Rows[r])] : rows), expertView,
            TokenUsage is { } usage && usage.Length == all ? [.. rows.Select(r => usage[r])] : null);
    }

    /// <summary>How much the model uses each token on the calibration text (of the selected rows, for an encoder made
    /// by <see cref="ForRows"/> on a token-indexed matrix), or null when not known.</summary>
    public double[]? TokenUsage { get; }

    /// <summary>How tensors are encoded (method, GPTQ settings, threads).</summary>
    public CompressionOptions Options => options;

    /// <summary>The tensor's row length.</summary>
    public int Columns(string name) => Source(name).Columns;

    /// <summary>The tensor's number of rows (of the selection, for an encoder made by <see cref="ForRows"/>).</summary>
    public int Rows(string name) => selection?.Name == name ? selection.Value.Rows.Length : Source(name).Rows;

    /// <summary>The tensor's values, [rows, columns] row-major f32 (decoded once per tensor and shared: the levels of
    /// one tensor are encoded one after another).</summary>
    public ReadOnlySpan<float> Values(string name) => ReferenceOf(name).Values;

    /// <summary>The statistics of the tensor's input (for the tied embedding: the classifier's; for one routed expert
    /// of an encoder made by <see cref="ForExpert"/>, that expert's), or null.</summary>
    public ActivationStatistics? Input(string name)
    {
        var entry = RoutedInput(name);
        return expertView?.Name == name ? entry?.Expert(expertView.Value.Expert) ?? entry : entry;
    }

    // The statistics of the input of `name` as a whole (for a stack of experts, of every routed row).
    private ActivationStatistics? RoutedInput(string name)
    {
        if (stats is null)
            return null;
        ActivationStatistics? entry = null;
        if (LinearInputs.TryGet(name, out int layer, out var kind))
            stats.TryGetValue((layer, kind), out entry);
        else if (name == TensorNames.TokenEmbedding && !model.Contains(TensorNames.Output))
            stats.TryGetValue((-1, LinearInput.Output), out entry);
        return entry;
    }

    /// <summary>The prepared GPTQ Hessian of the tensor's input (damped, activation-ordered as the options say), or
    /// null when there is no Gram matrix for it (no statistics, or the tied embedding).</summary>
    public GptqHessian? Hessian(string name)
    {
        if (!LinearInputs.TryGet(name, out _, out _) || Input(name) is not { Gram: not null } entry)
            return null;
        return HessianOf(entry, current?.Input == entry ? current.Hessian : null, keep: expertView?.Name != name);
    }

    // The prepared Hessian of `entry` (from `hessian` when the caller has it computed), kept for the next tensor with the
    // same input when `keep`; a routed expert's is not kept: one block holds one prepared Hessian per expert otherwise.
    private GptqHessian HessianOf(ActivationStatistics entry, double[]? hessian, bool keep)
    {
        if (hessians.TryGetValue(entry, out var prepared))
            return prepared;
        prepared = GptqHessian.Prepare(hessian ?? entry.Hessian(), entry.Width, options.Damping, options.ActivationOrder, Threads);
        if (keep)
            hessians[entry] = prepared;
        return prepared;
    }

    private int Threads => Math.Max(1, options.Threads);

    /// <summary>Relative output error of <paramref name="encoded"/> against the tensor's values under its input
    /// statistics (<see cref="Compressor.RelativeError"/>: H when the input has a Gram matrix, else its diagonal); NaN
    /// without statistics. The values, H and the signal tr(W H Wᵀ) are computed once per tensor.</summary>
    public double RelativeError(string name, LinearWeight encoded)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        var reference = ReferenceOf(name);
        return reference.Input is null ? double.NaN : reference.Relative(encoded.Decode());
    }

    // The tensor being encoded: its values and what its output error is measured with. One entry: the encodings of a
    // tensor are made together, and keeping every tensor's values would hold the whole model in f32.
    private Reference? current;

    // The tensor as this encoder sees it (rows `selected` of `source`, or all of them): its values, decoded whole when
    // first asked for (the native representations' encoders read them whole) or band by band (Encode's GGUF types),
    // and its input's statistics.
    private sealed class Reference(string name, LinearWeight source, int[]? selected, ActivationStatistics? input, int threads, bool expert = false)
    {
        /// <summary>One routed expert's rows of a stacked tensor (its Hessian is not kept between tensors).</summary>
        public bool Expert => expert;

        public string Name => name;
        public int Rows => selected?.Length ?? source.Rows;
        public int Columns => source.Columns;
        public ActivationStatistics? Input => input;
        public double[] Hessian { get; } = input?.Gram is not null ? input.Hessian() : [];
        public float[] Importance { get; } = input?.Importance() ?? [];
        public string Metric => Hessian.Length > 0 ? "H" : Importance.Length > 0 ? "diag" : "none";

        /// <summary>Every row's values, [rows, columns] row-major f32, decoded once.</summary>
        public float[] Values => values ??= Band(0, Rows);
        private float[]? values;

        /// <summary>Rows [first, first + count) into a new array (from <see cref="Values"/> when they are decoded already:
        /// the same bits).</summary>
        public float[] Band(int first, int count)
        {
            int columns = source.Columns;
            var band = new float[(long)count * columns];
            if (values is not null)
            {
                values.AsSpan(checked(first * columns), band.Length).CopyTo(band);
                return band;
            }
            for (int i = 0; i < count; i++)
                source.DecodeRow(selected is null ? first + i : selected[first + i], band.AsSpan(i * columns, columns));
            return band;
        }

        /// <summary>Σ_r w_rᵀ H w_r over every row, the same for every encoding of the tensor: computed from
        /// <see cref="Values"/> when first asked for, unless a band-by-band encoding measured it first.</summary>
        public double Signal
        {
            get => signal ??= Energy(Values, null, Rows, 0);
            set => signal = value;
        }

        public bool SignalKnown => signal is not null;

        private double? signal;

        /// <summary>Σ e_rᵀ H e_r over rows of <paramref name="band"/> ([rows, columns]; e = band − decoded, or band when
        /// <paramref name="decoded"/> is null), added in row order onto <paramref name="before"/>, the rows' before them.</summary>
        public double Energy(float[] band, float[]? decoded, int rows, double before)
            => Compressor.Energy(band, decoded, rows, source.Columns, Hessian, Importance, threads, before);

        /// <summary>Σ_r e_rᵀ H e_r / Σ_r w_rᵀ H w_r (H as <see cref="Metric"/> says); 0 for an all-zero tensor.</summary>
        public double Relative(float[] decoded) => Relative(Energy(Values, decoded, Rows, 0));

        /// <summary>An error energy relative to <see cref="Signal"/>; 0 for an all-zero tensor.</summary>
        public double Relative(double energy) => Signal > 0 ? energy / Signal : 0;
    }

    private Reference ReferenceOf(string name)
    {
        if (current?.Name == name)
            return current;
        current = null; // the previous tensor's buffers are garbage before this one's are allocated
        var weight = Source(name);
        var input = Input(name);
        if (input is not null && input.Width != weight.Columns)
            throw new InvalidOperationException($"tensor '{name}' has {weight.Columns} columns but its input statistics {input.Width}");
        return current = new Reference(name, weight, selection?.Name == name ? selection.Value.Rows : null, input, Threads, expert: expertView?.Name == name);
    }

    // Arrays of at least this many bytes go to the runtime's large-object heap (its default threshold).
    private const int LargeObjectBytes = 85_000;

    /// <summary>Frees the buffers of an encoding once it is done (one expert's values, H and prepared Hessian and its
    /// encodings: tens of MB each at Qwen3-30B-A3B's shape; one native candidate's): a blocking, non-compacting full
    /// collection, so the next expert or candidate reuses their space instead of leaving the runtime a backlog of them
    /// (measured: the peak of a 64-expert block rose 1.7 GB above its statistics without it).</summary>
    internal static void ReleaseEncodingBuffers() => GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: false);

    /// <summary>The weight of tensor <paramref name="name"/>'s share in an error summed over several encodings (the
    /// experts of a stack): its signal tr(W H Wᵀ) under its input statistics, or 1 without statistics.</summary>
    internal double SignalWeight(string name) => ReferenceOf(name) is { Input: not null } reference ? reference.Signal : 1;

    /// <summary>Encodes tensor <paramref name="name"/> in GGUF type <paramref name="type"/> (copied when it is the
    /// tensor's own type): round-to-nearest, imatrix rounding when the method is calibrated, then GPTQ on the type's grid
    /// for <see cref="CompressionMethod.Gptq"/> when the input has a Gram matrix, keeping GPTQ's encoding unless the
    /// rounding has the lower output error. The report's error before is round-to-nearest's (null when the options do
    /// not measure it, <see cref="CompressionOptions.MeasureErrorBefore"/>).</summary>
    /// <exception cref="ArgumentException">The tensor's rows do not fit <paramref name="type"/>'s blocks, or a calibrated
    /// method without statistics.</exception>
    /// <exception cref="InvalidOperationException">The encoding decodes to a value that is not finite.</exception>
    public EncodedTensorData Encode(string name, GgmlType type)
    {
        var tensor = model[name];
        if (tensor.Columns % GgmlTypes.BlockSize(type) != 0)
            throw new ArgumentException($"tensor '{name}' has rows of {tensor.Columns} values, not a multiple of {type}'s block of {GgmlTypes.BlockSize(type)}", nameof(type));
        if (stats is null && options.Method != CompressionMethod.Rtn)
            throw new ArgumentException($"{options.Method} needs calibration statistics", nameof(type));
        return Encode(new TensorPlan(name, tensor.Shape, tensor.Type, type, Quantized: true, "requested"));
    }

    // Compressor's step: the tensor as the plan says (a copy when already in its type, widened to F32 when kept).
    internal EncodedTensorData Encode(TensorPlan target)
    {
        long start = Stopwatch.GetTimestamp();
        var tensor = model[target.Name];
        int columns = checked((int)tensor.Columns), rows = checked((int)tensor.Rows);
        var type = target.Type;
        if (!target.Quantized && type != tensor.Type)
        {
            // a kept tensor (norm, router) in the plan's type, F32, as llama.cpp's converter writes it: llama.cpp's CPU
            // operations do not take a checkpoint's BF16 norms
            var widened = new byte[tensor.Rows * GgmlTypes.RowBytes(type, columns)];
            Quantize.Tensor(tensor, type, [], widened);
            CheckFinite(target.Name, type, widened, rows, columns);
            return Finish(target, type, widened, "copy", "none", 0, 0, start);
        }
        if (!target.Quantized || type == tensor.Type)
        {
            var raw = new byte[tensor.ByteLength];
            for (long r = 0; r < tensor.Rows; r++)
                tensor.Row(r).CopyTo(raw.AsSpan((int)(r * tensor.RowBytes)));
            CheckFinite(target.Name, tensor.Type, raw, rows, columns);
            return Finish(target, tensor.Type, raw, "copy", "none", 0, 0, start);
        }
        if (tensor.Shape.Length == 3)
            return EncodeExperts(target, start);
        var reference = ReferenceOf(target.Name);
        var (data, encoding, before, after) = EncodeRows(reference, type);
        return Finish(target, type, data, encoding, reference.Metric, before, after, start);
    }

    // A stacked tensor of routed experts ([experts, rows, columns]): each expert's rows encoded alone by ForExpert's
    // encoder, with its own input statistics (as llama.cpp's imatrix keeps them per expert), one expert's values in memory
    // at a time. The errors reported are the experts' relative errors weighted by their signal tr(W H Wᵀ).
    private EncodedTensorData EncodeExperts(TensorPlan target, long start)
    {
        int count = ExpertCount(target.Name);
        var data = new byte[target.ByteLength];
        int expertBytes = checked((int)(target.ByteLength / count));
        double signal = 0, after = 0;
        double? before = 0;
        var encodings = new SortedSet<string>(StringComparer.Ordinal);
        string metric = "none";
        for (int e = 0; e < count; e++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var expert = ForExpert(target.Name, e);
            var reference = expert.ReferenceOf(target.Name);
            var (bytes, encoding, b, a) = expert.EncodeRows(reference, target.Type);
            bytes.CopyTo(data.AsSpan(e * expertBytes, expertBytes));
            double w = expert.SignalWeight(target.Name);
            signal += w;
            before = before is null || b is null ? null : before + w * b;
            after += w * a;
            encodings.Add(expert.ExpertWithoutTokens(target.Name) ? $"{encoding} (expert without calibration tokens)" : encoding);
            metric = reference.Metric;
            ReleaseEncodingBuffers();
        }
        return Finish(target, target.Type, data, string.Join(", ", encodings), metric, signal > 0 ? before / signal : before, signal > 0 ? after / signal : 0, start);
    }

    // The rows of `reference` in GGUF `type`: its bytes, the encoding kept, plain rounding's error (null when the options
    // do not measure it and the encoding does not start from it) and the kept one's. Rows are encoded independently (the
    // roundings row by row, GPTQ's rows given the input's Hessian) and the errors are sums over rows in row order, so a
    // tensor of more than one band of rows (CompressionOptions.EncodingBandValues) is encoded band by band, with the same
    // bytes: what it holds in f32 is one band's copies (its values, a rounding's decoded values, GPTQ's working copies and
    // the error's), besides the whole tensor's bytes of the rounding and of GPTQ, kept until their errors are compared.
    private (byte[] Data, string Encoding, double? Before, double After) EncodeRows(Reference reference, GgmlType type)
    {
        int rows = reference.Rows, columns = reference.Columns;
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        bool weighted = options.Method != CompressionMethod.Rtn && reference.Importance.Length > 0;
        bool measureRtn = !weighted || options.MeasureErrorBefore;
        string? withoutGptq = WithoutGptq(reference, Compressor.HasGptqGrid(type) ? null : $"no GPTQ grid for {type}");
        var hessian = withoutGptq is null ? PreparedHessian(reference) : null;
        var rounded = new byte[checked(rows * rowBytes)];
        var gptq = hessian is null ? null : new byte[rounded.Length];
        double rtnEnergy = 0, roundedEnergy = 0, gptqEnergy = 0, signal = 0;
        int bandRows = Math.Max(1, options.EncodingBandValues / columns);
        bool banded = bandRows < rows;
        for (int first = 0; first < rows; first += bandRows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(bandRows, rows - first);
            var values = banded ? reference.Band(first, count) : reference.Values;
            if (!reference.SignalKnown)
                signal = reference.Energy(values, null, count, signal);
            double Round(ReadOnlySpan<float> importance, Span<byte> destination, double before)
            {
                Quantize.Rows(type, values, columns, importance, destination, Threads, options.ScaleSearch);
                return reference.Energy(values, Decode(type, destination, count, columns), count, before);
            }
            var band = rounded.AsSpan(first * rowBytes, count * rowBytes);
            if (weighted && measureRtn)
                rtnEnergy = Round([], new byte[band.Length], rtnEnergy);
            roundedEnergy = Round(weighted ? reference.Importance : [], band, roundedEnergy);
            if (hessian is not null)
            {
                var result = Gptq.Quantize(values, count, hessian, BlockGrid.For(type), GptqSettings(reference));
                result.Data.CopyTo(gptq.AsSpan(first * rowBytes));
                gptqEnergy = reference.Energy(values, result.Dequantized, count, gptqEnergy);
            }
            // A band's buffers on the large-object heap are freed only by a full collection: one per band keeps their
            // garbage from piling up (small bands' buffers go with the young generations').
            if (banded && values.Length * sizeof(float) >= LargeObjectBytes)
                ReleaseEncodingBuffers();
        }
        if (!reference.SignalKnown)
            reference.Signal = signal;
        string roundedEncoding = weighted ? "imatrix" : "rtn";
        double roundedError = reference.Relative(roundedEnergy), gptqError = hessian is null ? double.NaN : reference.Relative(gptqEnergy);
        var (data, encoding, error) = withoutGptq is not null ? (rounded, roundedEncoding + withoutGptq, roundedError)
            : gptqError <= roundedError ? (gptq!, "gptq", gptqError)
            : (rounded, $"{roundedEncoding} (lower error than gptq)", roundedError);
        CheckFinite(reference.Name, type, data, rows, columns);
        return (data, encoding, measureRtn ? reference.Relative(weighted ? rtnEnergy : roundedEnergy) : null, error);
    }

    // An encoding of the tensor and its relative output error.
    private sealed record Choice<T>(T Value, string Encoding, double Error);

    // Why GPTQ does not run on `reference` (noGrid: why its encoding has no GPTQ grid), as a note on the rounding's
    // encoding, or null when it does: GPTQ runs for the GPTQ methods on a linear layer whose input has a Gram matrix. The
    // note is empty for what H says nothing about (another method, or a tied embedding: rounding at most).
    private string? WithoutGptq(Reference reference, string? noGrid)
    {
        if (options.Method is not (CompressionMethod.Gptq or CompressionMethod.AwqGptq) || !LinearInputs.TryGet(reference.Name, out _, out _))
            return "";
        if (reference.Input?.Gram is null)
            return " (no XᵀX for this tensor)";
        return noGrid is null ? null : $" ({noGrid})";
    }

    private GptqHessian PreparedHessian(Reference reference) => HessianOf(reference.Input!, reference.Hessian, keep: !reference.Expert);

    private GptqOptions GptqSettings(Reference reference) => new()
    {
        DampingFraction = options.Damping,
        ActivationOrder = options.ActivationOrder,
        RefinePasses = options.RefinePasses,
        Importance = reference.Importance,
        Threads = Threads,
        Cancellation = cancellationToken,
    };

    // The choice every native encoding makes: GPTQ on the rounding's grid when it runs (WithoutGptq), kept unless the
    // rounding has the lower output error (GPTQ minimises it greedily; on the rare tensor where rounding does better, the
    // rounding is kept). Otherwise the rounding, saying why.
    private Choice<T> KeepLower<T>(Reference reference, Choice<T> rounded, Func<GptqHessian, GptqOptions, (T Value, float[] Decoded)> gptq)
    {
        if (WithoutGptq(reference, noGrid: null) is { } note)
            return rounded with { Encoding = rounded.Encoding + note };
        var (value, decoded) = gptq(PreparedHessian(reference), GptqSettings(reference));
        double error = reference.Relative(decoded);
        return error <= rounded.Error ? new Choice<T>(value, "gptq", error) : rounded with { Encoding = $"{rounded.Encoding} (lower error than gptq)" };
    }

    /// <summary>Encodes tensor <paramref name="name"/> in the uniform scheme: GPTQ on <see cref="UniformSchemeGrid"/> when its
    /// input has a Gram matrix (keeping importance-weighted rounding if that happens to have the lower output error),
    /// else importance-weighted or plain rounding.</summary>
    /// <exception cref="ArgumentException">The group does not divide the row, or a value is not finite.</exception>
    public NativeEncoded EncodeUniform(string name, UniformScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        scheme.CheckColumns(Columns(name));
        return Encode(name,
            (values, rows, columns, importance) => UniformWeight.Encode(name, values, rows, columns, scheme, importance),
            (values, rows, hessian, gptq) =>
            {
                var grid = new UniformSchemeGrid(scheme);
                return grid.ToWeight(name, Gptq.Quantize(values, rows, hessian, grid, gptq).Data, rows, hessian.Columns);
            });
    }

    /// <summary>Encodes tensor <paramref name="name"/> with one non-uniform codebook of 2^<paramref name="bits"/> f16
    /// values per group of <paramref name="group"/> (0: per row): GPTQ with the codebooks as the grid when its input has
    /// a Gram matrix (keeping importance-weighted k-means if that has the lower output error), else importance-weighted
    /// k-means (<see cref="CodebookQuantizer"/>).</summary>
    public NativeEncoded EncodeCodebook(string name, int bits, int group)
        => Encode(name,
            (values, rows, columns, importance) => CodebookQuantizer.Quantize(name, values, rows, columns, importance, bits, group),
            (values, rows, hessian, gptq) => CodebookQuantizer.QuantizeGptq(name, values, rows, hessian, bits, group, gptq));

    // A native representation's rounding (importance-weighted when there are statistics), then GPTQ on its grid (KeepLower).
    private NativeEncoded Encode(string name, Func<float[], int, int, float[], LinearWeight> round, Func<float[], int, GptqHessian, GptqOptions, LinearWeight> gptq)
    {
        var reference = ReferenceOf(name);
        var rounded = round(reference.Values, reference.Rows, reference.Columns, reference.Importance);
        var chosen = KeepLower(reference, new Choice<LinearWeight>(rounded, reference.Importance.Length > 0 ? "imatrix" : "rtn", ErrorOf(reference, rounded.Decode())),
            (hessian, settings) =>
            {
                var weight = gptq(reference.Values, reference.Rows, hessian, settings);
                return (weight, weight.Decode());
            });
        return new NativeEncoded(chosen.Value, chosen.Encoding, chosen.Error);
    }

    private static double ErrorOf(Reference reference, float[] decoded) => reference.Input is null ? double.NaN : reference.Relative(decoded);

    /// <summary>Encodes tensor <paramref name="name"/> by vector quantization (<see cref="VectorQuantizer"/>): the codebook by
    /// importance-weighted k-means, the assignment by GPTQ's second-order rule with the input's Hessian in natural column
    /// order (vectors are consecutive columns) when there is a Gram matrix and the method allows, else the nearest centroid
    /// under the importance. With <paramref name="residual"/> (VPTQ's residual stage), a second codebook then codes what
    /// the first left, W − Q₁, the same way, and the weight is the sum Q₁ + Q₂. The threads come from the options.</summary>
    public NativeEncoded EncodeVector(string name, VectorQuantizerOptions settings, VectorQuantizerOptions? residual = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var reference = ReferenceOf(name);
        int columns = Columns(name), rows = reference.Values.Length / columns, threads = Threads;
        GptqHessian? hessian = null;
        if (options.Method != CompressionMethod.Rtn && LinearInputs.TryGet(name, out _, out _) && Input(name) is { Gram: not null } entry)
        {
            if (!naturalOrderHessians.TryGetValue(entry, out hessian))
            {
                hessian = GptqHessian.Prepare(entry.Hessian(), entry.Width, options.Damping, activationOrder: false, threads);
                if (expertView?.Name != name) // one expert's is not kept, as HessianOf keeps none
                    naturalOrderHessians[entry] = hessian;
            }
        }
        LinearWeight weight = VectorQuantizer.Quantize(name, reference.Values, rows, columns, reference.Importance, hessian, settings with { Threads = threads });
        if (residual is not null)
        {
            var rest = weight.Decode();
            for (int i = 0; i < rest.Length; i++)
                rest[i] = reference.Values[i] - rest[i];
            var second = VectorQuantizer.Quantize(name, rest, rows, columns, reference.Importance, hessian, residual with { Threads = threads });
            weight = new SumWeight(name, [weight, second]);
        }
        return new NativeEncoded(weight, hessian is not null ? "gptq" : reference.Importance.Length > 0 ? "imatrix" : "rtn", RelativeError(name, weight));
    }

    /// <summary>Prunes tensor <paramref name="name"/> to <paramref name="pattern"/> (SparseGPT when its input has a Gram
    /// matrix, else Wanda with the input norms, else magnitude) and stores it in the matching sparse representation, the
    /// kept values in f16 (<paramref name="valueBits"/> 0) or in uniform codes of that many bits in groups of at most 64.</summary>
    /// <exception cref="ArgumentException">The pattern does not fit the tensor.</exception>
    public NativeEncoded EncodePruned(string name, SparsityPattern pattern, int valueBits)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var values = Values(name);
        int rows = Rows(name), columns = Columns(name);
        var input = Input(name);
        bool linear = LinearInputs.TryGet(name, out _, out _);
        var method = input is null ? PruningMethod.Magnitude
            : input.Gram is not null && linear && options.Method != CompressionMethod.Rtn ? PruningMethod.SparseGpt
            : PruningMethod.Wanda;
        var result = Pruner.Prune(values, rows, columns, pattern, method, input,
            new PruningOptions { DampingFraction = options.Damping, Threads = Threads });
        ValueEncoder encode = valueBits == 0 ? PrunedWeights.F16 : (n, v, r, c) => UniformWeight.Encode(n, v, r, c, PrunedValueScheme(valueBits, c));
        var weight = PrunedWeights.For(name, result, pattern, encode);
        return new NativeEncoded(weight, method.ToString().ToLowerInvariant(), RelativeError(name, weight));
    }

    /// <summary>The uniform codes <see cref="EncodePruned"/> stores <paramref name="valueBits"/>-bit kept values in, rows of
    /// <paramref name="kept"/> values: asymmetric, in the largest groups of at most 64 that divide the row (else the row).</summary>
    internal static UniformScheme PrunedValueScheme(int valueBits, int kept)
        => new(valueBits, Groups.For(kept, 64, atMost: true) is > 0 and var g ? g : kept, false);

    /// <summary>Tensor <paramref name="name"/> rounded to f16, as a plain weight in a buffer the weight keeps alive.</summary>
    public NativeEncoded EncodeFloat16(string name)
    {
        var weight = BlockWeight.Float16(name, Values(name), Rows(name), Columns(name));
        return new NativeEncoded(weight, "f16", RelativeError(name, weight));
    }

    private static EncodedTensorData Finish(TensorPlan target, GgmlType type, byte[] data, string encoding, string metric, double? before, double after, long start)
        => new(data, new TensorReport(target.Name, target.SourceType.ToString(), type.ToString(), target.Shape, data.LongLength,
            8.0 * data.LongLength / target.Shape.Aggregate(1L, (a, b) => a * b), encoding, metric, before, after, SwapKld: null, target.Reason,
            Stopwatch.GetElapsedTime(start).TotalSeconds));

    private static float[] Decode(GgmlType type, ReadOnlySpan<byte> data, int rows, int columns)
    {
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        var values = new float[(long)rows * columns];
        for (int r = 0; r < rows; r++)
            Dequantize.Row(type, data.Slice(r * rowBytes, rowBytes), values.AsSpan(r * columns, columns));
        return values;
    }

    // Throws when `data` (`rows` rows of `columns` values in `type`) decodes to a value that is not finite, decoding one row at a time.
    private static void CheckFinite(string name, GgmlType type, byte[] data, int rows, int columns)
    {
        int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
        var row = new float[columns];
        for (int r = 0; r < rows; r++)
        {
            Dequantize.Row(type, data.AsSpan(r * rowBytes, rowBytes), row);
            for (int j = 0; j < columns; j++)
            {
                if (!float.IsFinite(row[j]))
                    throw new InvalidOperationException($"tensor '{name}' would be written with {row[j]} at element {(long)r * columns + j}");
            }
        }
    }
}
