using Squeeze.Calibration;
using Squeeze.Compression.Representations;
using Squeeze.Models;
using Squeeze.Pruning;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Weights;

namespace Squeeze.Compression;

/// <summary>A weight encoded in a native representation, how, and its relative calibration output error
/// tr(E H Eᵀ) / tr(W H Wᵀ) (diag(H) when there is no Gram matrix; NaN without statistics).</summary>
public sealed record NativeEncoded(LinearWeight Weight, string Encoding, double OutputError);

/// <summary>
/// Encodes a model's 2-D weights in the native format's representations, with the same calibration data
/// <see cref="TensorEncoder"/> uses for GGUF types: GPTQ on the representation's grid (one prepared Hessian per shared
/// input, kept between calls) when the statistics hold the layer's Gram matrix, importance-weighted rounding when they
/// hold only its diagonal (the tied embedding is weighted by the classifier's input), plain rounding without
/// statistics. It also exposes what other encoders need: a tensor's values, its input statistics and Hessian.
/// </summary>
public sealed class NativeTensorEncoder
{
    private readonly Model model;
    private readonly CompressionOptions options;
    private readonly Dictionary<(int, LinearInput), ActivationStatistics>? stats;
    private readonly Dictionary<ActivationStatistics, GptqHessian> hessians = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<ActivationStatistics, GptqHessian> naturalOrderHessians = new(ReferenceEqualityComparer.Instance);
    private readonly (string Name, int[] Rows)? selection;

    /// <param name="model">The model whose tensors are encoded.</param>
    /// <param name="statistics">Its activation statistics on calibration text, or null for the levels that need none
    /// (plain rounding, f16).</param>
    /// <param name="options">How tensors are encoded (GPTQ settings, threads).</param>
    /// <param name="tokenUsage">How much the model uses each token on the calibration text (indexed by token id,
    /// <see cref="TokenUsage.Measure"/>), or null: what the levels that treat the rows of token-indexed matrices by use
    /// need (<see cref="RowSplitRepresentation"/>).</param>
    /// <exception cref="ArgumentException">Statistics of another model, or token usage of another vocabulary.</exception>
    public NativeTensorEncoder(Model model, CalibrationStatistics? statistics, CompressionOptions options, double[]? tokenUsage = null)
    {
        if (tokenUsage is not null && tokenUsage.Length != model?.Config.VocabSize)
            throw new ArgumentException($"token usage of {tokenUsage.Length} tokens for a vocabulary of {model?.Config.VocabSize}", nameof(tokenUsage));
        TokenUsage = tokenUsage;
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        if (statistics is not null)
        {
            Compressor.CheckStatistics(model, statistics, needsGram: false);
            stats = statistics.Entries.ToDictionary(e => (e.Layer, e.Kind));
        }
        this.model = model;
        this.options = options;
    }

    // The same model, statistics and caches, with tensor name seen as only its rows `rows` of the parent's view (which
    // may itself be a selection: selection.Rows are rows of the whole tensor).
    private NativeTensorEncoder(NativeTensorEncoder parent, string name, int[] rows)
    {
        model = parent.model;
        options = parent.options;
        stats = parent.stats;
        hessians = parent.hessians;
        naturalOrderHessians = parent.naturalOrderHessians;
        TokenUsage = parent.TokenUsage is { } usage && usage.Length == parent.Rows(name) ? [.. rows.Select(r => usage[r])] : null;
        selection = (name, parent.selection?.Name == name ? [.. rows.Select(r => parent.selection.Value.Rows[r])] : rows);
    }

    /// <summary>An encoder that sees tensor <paramref name="name"/> as only its rows <paramref name="rows"/> (in that
    /// order), with the same input statistics and, for a token-indexed matrix, the usage of those rows' tokens: the
    /// levels of one group of rows.</summary>
    public NativeTensorEncoder ForRows(string name, int[] rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        int all = Rows(name);
        if (rows.Length == 0 || rows.Any(r => r < 0 || r >= all))
            throw new ArgumentException($"{name}: a row selection must name at least one row, each in [0, {all})", nameof(rows));
        return new NativeTensorEncoder(this, name, rows);
    }

    /// <summary>How much the model uses each token on the calibration text (of the selected rows, for an encoder made
    /// by <see cref="ForRows"/> on a token-indexed matrix), or null when not known.</summary>
    public double[]? TokenUsage { get; }

    /// <summary>How tensors are encoded (method, GPTQ settings, threads).</summary>
    public CompressionOptions Options => options;

    /// <summary>The tensor's row length.</summary>
    public int Columns(string name) => model.Weight(name).Columns;

    /// <summary>The tensor's number of rows (of the selection, for an encoder made by <see cref="ForRows"/>).</summary>
    public int Rows(string name) => selection?.Name == name ? selection.Value.Rows.Length : model.Weight(name).Rows;

    /// <summary>The tensor's values, [rows, columns] row-major f32 (decoded once per tensor and shared: the levels of
    /// one tensor are encoded one after another).</summary>
    public ReadOnlySpan<float> Values(string name) => ReferenceOf(name).Values;

    /// <summary>The statistics of the tensor's input (for the tied embedding: the classifier's), or null.</summary>
    public ActivationStatistics? Input(string name)
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
        if (!hessians.TryGetValue(entry, out var prepared))
        {
            prepared = GptqHessian.Prepare(entry.Hessian(), entry.Width, options.Damping, options.ActivationOrder, Math.Max(1, options.Threads));
            hessians[entry] = prepared;
        }
        return prepared;
    }

    /// <summary>Relative output error of <paramref name="encoded"/> against the tensor's values under its input
    /// statistics (<see cref="Compressor.RelativeError"/>: H when there is a Gram matrix for a linear layer, else the
    /// diagonal); NaN without statistics. The values, H and the signal tr(W H Wᵀ) are computed once per tensor.</summary>
    public double RelativeError(string name, LinearWeight encoded)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        var reference = ReferenceOf(name);
        if (reference.Input is null)
            return double.NaN;
        if (reference.Signal <= 0)
            return 0;
        int threads = Math.Max(1, options.Threads);
        return Compressor.Energy(reference.Values, encoded.Decode(), encoded.Rows, encoded.Columns, reference.Hessian, reference.Importance, threads) / reference.Signal;
    }

    // The tensor being encoded: its values and what its output error is measured with. One entry: the levels of a tensor
    // are encoded together, and keeping every tensor's values would hold the whole model in f32.
    private Reference? current;

    private sealed record Reference(string Name, float[] Values, ActivationStatistics? Input, double[] Hessian, float[] Importance, double Signal);

    private Reference ReferenceOf(string name)
    {
        if (current?.Name == name)
            return current;
        var weight = model.Weight(name);
        var values = weight.Decode();
        int rows = weight.Rows, columns = weight.Columns;
        if (selection?.Name == name)
        {
            var selected = selection.Value.Rows;
            var subset = new float[(long)selected.Length * columns];
            for (int i = 0; i < selected.Length; i++)
                values.AsSpan(selected[i] * columns, columns).CopyTo(subset.AsSpan(i * columns));
            (values, rows) = (subset, selected.Length);
        }
        var input = Input(name);
        double[] hessian = input?.Gram is not null && LinearInputs.TryGet(name, out _, out _) ? input.Hessian() : [];
        float[] importance = input?.Importance() ?? [];
        double signal = input is null ? double.NaN
            : Compressor.Energy(values, null, rows, columns, hessian, importance, Math.Max(1, options.Threads));
        return current = new Reference(name, values, input, hessian, importance, signal);
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

    // Rounding (importance-weighted when there are statistics), then GPTQ on the same grid when the input has a Gram
    // matrix and the method allows; the encoding with the lower output error is kept.
    private NativeEncoded Encode(string name, Func<float[], int, int, float[], LinearWeight> round, Func<float[], int, GptqHessian, GptqOptions, LinearWeight> gptq)
    {
        var reference = ReferenceOf(name);
        var values = reference.Values;
        int columns = Columns(name), rows = values.Length / columns;
        float[] importance = reference.Importance;
        var rounded = round(values, rows, columns, importance);
        double roundedError = RelativeError(name, rounded);
        var hessian = Hessian(name);
        if (hessian is null || options.Method == CompressionMethod.Rtn)
            return new NativeEncoded(rounded, importance.Length > 0 ? "imatrix" : "rtn", roundedError);
        var result = gptq(values, rows, hessian, new GptqOptions
        {
            DampingFraction = options.Damping,
            ActivationOrder = options.ActivationOrder,
            RefinePasses = options.RefinePasses,
            Importance = importance,
            Threads = Math.Max(1, options.Threads),
        });
        double gptqError = RelativeError(name, result);
        return gptqError <= roundedError ? new NativeEncoded(result, "gptq", gptqError) : new NativeEncoded(rounded, "imatrix (lower error than gptq)", roundedError);
    }

    /// <summary>Encodes tensor <paramref name="name"/> by vector quantization (<see cref="VectorQuantizer"/>): the codebook by
    /// importance-weighted k-means, the assignment by GPTQ's second-order rule with the input's Hessian in natural column
    /// order (vectors are consecutive columns) when there is a Gram matrix and the method allows, else the nearest centroid
    /// under the importance. With <paramref name="residual"/> (VPTQ's residual stage), a second codebook then codes what
    /// the first left, W − Q₁, the same way, and the weight is the sum Q₁ + Q₂. The threads come from the options.</summary>
    public NativeEncoded EncodeVector(string name, VectorQuantizerOptions settings, VectorQuantizerOptions? residual = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var reference = ReferenceOf(name);
        int columns = Columns(name), rows = reference.Values.Length / columns, threads = Math.Max(1, options.Threads);
        GptqHessian? hessian = null;
        if (options.Method != CompressionMethod.Rtn && LinearInputs.TryGet(name, out _, out _) && Input(name) is { Gram: not null } entry)
        {
            if (!naturalOrderHessians.TryGetValue(entry, out hessian))
            {
                hessian = GptqHessian.Prepare(entry.Hessian(), entry.Width, options.Damping, activationOrder: false, threads);
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
            new PruningOptions { DampingFraction = options.Damping, Threads = Math.Max(1, options.Threads) });
        ValueEncoder encode = valueBits == 0
            ? PrunedWeights.F16
            : (n, v, r, c) => UniformWeight.Encode(n, v, r, c, new UniformScheme(valueBits, Groups.For(c, 64, atMost: true) is > 0 and var g ? g : c, false));
        var weight = PrunedWeights.For(name, result, pattern, encode);
        return new NativeEncoded(weight, method.ToString().ToLowerInvariant(), RelativeError(name, weight));
    }

    /// <summary>Tensor <paramref name="name"/> rounded to f16, as a plain weight in a buffer the weight keeps alive.</summary>
    public NativeEncoded EncodeFloat16(string name)
    {
        var weight = BlockWeight.Float16(name, Values(name), Rows(name), Columns(name));
        return new NativeEncoded(weight, "f16", RelativeError(name, weight));
    }
}
