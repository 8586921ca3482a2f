using System.Runtime.InteropServices;
using Squeeze.Calibration;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>Settings of the AWQ scale search.</summary>
public sealed record AwqOptions
{
    /// <summary>Number of steps of α in [0, 1]: α = 0, 1/GridSteps, …, 1 (20 gives 0, 0.05, …, 1).</summary>
    public int GridSteps { get; init; } = 20;

    /// <summary>Quantize with the imatrix (mean x², rescaled by 1/s²) as importance, as the final quantization would.</summary>
    public bool UseImportance { get; init; } = true;
}

/// <summary>One matrix of an AWQ scale search: its values [rows, columns] (read when the search reaches it, so one
/// member's are held at a time), the statistics of the rows of input it sees (a routed expert's: the tokens routed to
/// it) and its share of the group's error (the tokens of those statistics, so that summed errors are over calibration
/// rows).</summary>
public sealed record AwqMember(Func<float[]> Values, ActivationStatistics Input, double Share);

/// <summary>The scales an AWQ search chose for one input: the exponent α, s, and the group's error at α and at α = 0.</summary>
public sealed record AwqScales(float Alpha, float[] Scales, double Error, double BaselineError);

/// <summary>The AWQ transform of one group of layers sharing an input (q/k/v after attn_norm, gate/up after ffn_norm).</summary>
public sealed class AwqGroupResult
{
    internal AwqGroupResult(float alpha, float[] scales, double error, double baselineError, float[] normWeight, IReadOnlyList<float[]> weights)
    {
        Alpha = alpha;
        Scales = scales;
        Error = error;
        BaselineError = baselineError;
        NormWeight = normWeight;
        Weights = weights;
    }

    /// <summary>The exponent chosen: s = mean|x|^α (normalised).</summary>
    public float Alpha { get; }

    /// <summary>Per-input-channel scales s ([columns]).</summary>
    public float[] Scales { get; }

    /// <summary>Σ over the group's matrices of Σ_rows eᵀ H e, e = Q(W·diag(s))·diag(s)⁻¹ − W, H = XᵀX / n, at the chosen α.</summary>
    public double Error { get; }

    /// <summary>The same error at α = 0 (s = 1: plain round-to-nearest).</summary>
    public double BaselineError { get; }

    /// <summary>The preceding RMSNorm's weight divided by s ([columns]).</summary>
    public float[] NormWeight { get; }

    /// <summary>The group's matrices times diag(s) ([rows, columns] each, in the order given).</summary>
    public IReadOnlyList<float[]> Weights { get; }
}

/// <summary>
/// AWQ (Lin et al. 2023): scales each input channel of a group of linear layers by s = mean|x|^α before quantizing,
/// so salient channels (large activations) lose less; α is searched on a grid to minimise the calibration output error
/// ‖X (Q(W·diag(s))·diag(s)⁻¹ − W)ᵀ‖², computed from the Gram matrix. The inverse scale is folded into the preceding
/// RMSNorm weight, so the transformed model is still a plain Llama model with the same float outputs.
/// </summary>
public static class Awq
{
    /// <summary>
    /// Searches α for one group of matrices that read the same input: <paramref name="weights"/> are [rows_k, columns]
    /// row-major, <paramref name="normWeight"/> is the RMSNorm weight before them ([columns]), and
    /// <paramref name="stats"/> their input's statistics (with the Gram matrix). <paramref name="type"/> is the block format
    /// whose quantize → dequantize defines Q.
    /// </summary>
    public static AwqGroupResult Search(ReadOnlySpan<float> normWeight, IReadOnlyList<float[]> weights, ActivationStatistics stats, GgmlType type, AwqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(stats);
        options ??= new AwqOptions();
        int n = stats.Width;
        if (normWeight.Length != n)
            throw new ArgumentException($"the norm has {normWeight.Length} weights for inputs of {n}", nameof(normWeight));
        var (bestAlpha, bestScales, bestError, baseline) = SearchScales(stats.MeanAbs(), [.. weights.Select(w => new AwqMember(() => w, stats, 1))], type, options);
        var norm = new float[n];
        for (int j = 0; j < n; j++)
            norm[j] = normWeight[j] / bestScales[j];
        var scaled = new List<float[]>(weights.Count);
        foreach (var w in weights)
            scaled.Add(ScaleColumns(w, n, bestScales));
        CheckFinite(norm, "AWQ norm weight");
        foreach (var w in scaled)
            CheckFinite(w, "AWQ weight");
        return new AwqGroupResult(bestAlpha, bestScales, bestError, baseline, norm, scaled);
    }

    /// <summary>
    /// The α on the grid (0, 1/GridSteps, …, 1; the first of equal errors) whose s = <see cref="Scales"/>(<paramref name="meanAbs"/>, α)
    /// gives the least Σ_members Share · Σ_rows eᵀ H e, e = Q(W·diag(s))·diag(s)⁻¹ − W, each member with its own input's
    /// H = XᵀX / n (and its imatrix, rescaled by 1/s², as the importance). Members are read one at a time, every α
    /// tried on each: a group of many matrices (a mixture's experts) holds one in memory. <paramref name="meanAbs"/> is
    /// the shared input's mean |x| (every member reads x / s).
    /// </summary>
    public static AwqScales SearchScales(float[] meanAbs, IReadOnlyList<AwqMember> members, GgmlType type, AwqOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(meanAbs);
        ArgumentNullException.ThrowIfNull(members);
        options ??= new AwqOptions();
        int n = meanAbs.Length;
        if (n % GgmlTypes.BlockSize(type) != 0)
            throw new ArgumentException($"rows of {n} are not whole blocks of {type} ({GgmlTypes.BlockSize(type)})", nameof(type));
        if (!Quantize.IsSupported(type))
            throw new NotSupportedException($"no quantizer for {type}");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.GridSteps, 1, nameof(options));
        var scales = new float[options.GridSteps + 1][];
        for (int step = 0; step <= options.GridSteps; step++)
            scales[step] = Scales(meanAbs, (float)step / options.GridSteps);
        var errors = new double[options.GridSteps + 1];
        foreach (var member in members)
        {
            if (member.Input.Width != n)
                throw new ArgumentException($"a member's input has {member.Input.Width} columns, the group {n}", nameof(members));
            float[] w = member.Values();
            if (w.Length % n != 0)
                throw new ArgumentException($"a matrix of {w.Length} values is not whole rows of {n}", nameof(members));
            double[] h = member.Input.Hessian();
            float[]? importance = options.UseImportance ? member.Input.Importance() : null;
            for (int step = 0; step <= options.GridSteps; step++)
                errors[step] += member.Share * ScaledError(w, n, scales[step], h, type, importance);
        }
        int best = 0;
        for (int step = 1; step <= options.GridSteps; step++)
        {
            if (errors[step] < errors[best])
                best = step;
        }
        return new AwqScales((float)best / options.GridSteps, scales[best], errors[best], errors[0]);
    }

    /// <summary>s_j = max(mean|x_j|, 1e-4)^α normalised by √(max s · min s), as AWQ does; α = 0 gives s = 1.</summary>
    public static float[] Scales(ReadOnlySpan<float> meanAbs, float alpha)
    {
        var s = new float[meanAbs.Length];
        if (alpha == 0)
        {
            Array.Fill(s, 1f);
            return s;
        }
        float max = 0, min = float.PositiveInfinity;
        for (int j = 0; j < s.Length; j++)
        {
            s[j] = MathF.Max(MathF.Pow(MathF.Max(meanAbs[j], 1e-4f), alpha), 1e-4f);
            max = MathF.Max(max, s[j]);
            min = MathF.Min(min, s[j]);
        }
        float norm = MathF.Sqrt(max * min);
        for (int j = 0; j < s.Length; j++)
            s[j] /= norm;
        return s;
    }

    /// <summary>
    /// Applies AWQ to every layer's q/k/v (folded into attn_norm) and gate/up (folded into ffn_norm) groups with the
    /// statistics' Gram matrices; returns a new model (f32 replacements for the transformed tensors, the other tensors
    /// shared with <paramref name="model"/>, which must outlive it) and the per-group results.
    /// </summary>
    public static (Model Model, IReadOnlyList<AwqGroupResult> Groups) Apply(Model model, CalibrationStatistics stats, GgmlType type, AwqOptions? options = null, IProgress<(int Done, int Total)>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(stats);
        var replaced = new Dictionary<string, (GgmlType Type, byte[] Bytes)>(StringComparer.Ordinal);
        var groups = new List<AwqGroupResult>();
        int total = 2 * model.Config.LayerCount;
        for (int l = 0; l < model.Config.LayerCount; l++)
        {
            foreach (var (kind, normName, names) in new[]
            {
                (LinearInput.Attention, TensorNames.AttentionNorm(l), new[] { TensorNames.Query(l), TensorNames.Key(l), TensorNames.Value(l) }),
                (LinearInput.FeedForward, TensorNames.FeedForwardNorm(l), new[] { TensorNames.Gate(l), TensorNames.Up(l) }),
            })
            {
                var entry = stats.Get(l, kind);
                var norm = Read(model[normName]);
                var weights = names.Select(name => Read(model[name])).ToList();
                var result = Search(norm, weights, entry, type, options);
                groups.Add(result);
                replaced[normName] = (GgmlType.F32, MemoryMarshal.AsBytes(result.NormWeight.AsSpan()).ToArray());
                for (int k = 0; k < names.Length; k++)
                    replaced[names[k]] = (GgmlType.F32, MemoryMarshal.AsBytes(result.Weights[k].AsSpan()).ToArray());
                progress?.Report((groups.Count, total));
            }
        }

        return (model.WithTensors(replaced), groups);
    }

    // Σ_rows eᵀ H e for e = Q(W·diag(s))·diag(s)⁻¹ − W, rows quantized with importance / s² when given.
    private static double ScaledError(float[] w, int n, float[] s, double[] h, GgmlType type, float[]? importance)
    {
        int rows = w.Length / n;
        var scaled = new float[n];
        var decoded = new float[n];
        var bytes = new byte[GgmlTypes.RowBytes(type, n)];
        var e = new double[n];
        float[] imp = [];
        if (importance is not null)
        {
            imp = new float[n];
            for (int j = 0; j < n; j++)
                imp[j] = importance[j] / (s[j] * s[j]);
        }
        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            var row = w.AsSpan(r * n, n);
            for (int j = 0; j < n; j++)
                scaled[j] = row[j] * s[j];
            Quantize.Row(type, scaled, imp, bytes);
            Dequantize.Row(type, bytes, decoded);
            for (int j = 0; j < n; j++)
                e[j] = (double)decoded[j] / s[j] - row[j];
            for (int i = 0; i < n; i++)
            {
                if (e[i] == 0)
                    continue;
                double acc = 0;
                var hi = h.AsSpan(i * n, n);
                for (int j = 0; j < n; j++)
                    acc += hi[j] * e[j];
                total += e[i] * acc;
            }
        }
        return total;
    }

    internal static float[] ScaleColumns(float[] w, int n, float[] s)
    {
        var result = new float[w.Length];
        for (int i = 0; i < w.Length; i++)
            result[i] = w[i] * s[i % n];
        return result;
    }

    private static float[] Read(Tensor tensor)
    {
        var values = new float[tensor.ElementCount];
        Dequantize.Tensor(tensor, values);
        return values;
    }

    private static void CheckFinite(float[] values, string what)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
                throw new InvalidOperationException($"{what}: value {i} is {values[i]}");
        }
    }
}
