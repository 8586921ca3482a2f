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
        if (n % GgmlTypes.BlockSize(type) != 0)
            throw new ArgumentException($"rows of {n} are not whole blocks of {type} ({GgmlTypes.BlockSize(type)})", nameof(type));
        if (!Quantize.IsSupported(type))
            throw new NotSupportedException($"no quantizer for {type}");
        ArgumentOutOfRangeException.ThrowIfLessThan(options.GridSteps, 1, nameof(options));
        foreach (var w in weights)
        {
            if (w.Length % n != 0)
                throw new ArgumentException($"a matrix of {w.Length} values is not whole rows of {n}", nameof(weights));
        }
        double[] h = stats.Hessian();
        float[] meanAbs = stats.MeanAbs();
        float[] importance = stats.Importance();

        double bestError = double.PositiveInfinity, baseline = double.NaN;
        float bestAlpha = 0;
        float[] bestScales = [];
        for (int step = 0; step <= options.GridSteps; step++)
        {
            float alpha = (float)step / options.GridSteps;
            float[] s = Scales(meanAbs, alpha);
            double error = 0;
            foreach (var w in weights)
                error += ScaledError(w, n, s, h, type, options.UseImportance ? importance : null);
            if (step == 0)
                baseline = error;
            if (error < bestError)
            {
                bestError = error;
                bestAlpha = alpha;
                bestScales = s;
            }
        }

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

    private static float[] ScaleColumns(float[] w, int n, float[] s)
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
