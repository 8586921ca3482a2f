using System.Buffers.Binary;
using System.Text.Json;

namespace Squeeze.Tests.Infrastructure;

/// <summary>
/// A scalar reference of a Hugging Face Llama / Mistral / Qwen2 decoder as transformers computes it, in double precision,
/// written from the transformers modeling code and independent of Squeeze: it parses model.safetensors (F32) itself,
/// rotates with rotate_half on the stored rows, masks each layer's attention with its own window, and can multiply cos and
/// sin by an attention factor (YaRN's) and the queries by Llama 4's position temperature (Ministral 3's). One sequence,
/// every position, all layers dense.
/// </summary>
public sealed class ReferenceDecoder
{
    private readonly RandomCheckpoint checkpoint;
    private readonly Dictionary<string, float[]> weights;

    /// <summary>Reads <paramref name="directory"/>'s model.safetensors, written from <paramref name="checkpoint"/>.</summary>
    public ReferenceDecoder(RandomCheckpoint checkpoint, string directory)
    {
        if (checkpoint.BFloat16 || checkpoint.Experts > 0 || checkpoint.GemmaNorms || checkpoint.FusedProjections || checkpoint.QkNorm)
            throw new ArgumentException("the reference runs dense F32 Llama, Mistral and Qwen2 checkpoints only");
        this.checkpoint = checkpoint;
        weights = ReadSafetensors(Path.Combine(directory, "model.safetensors"));
        InverseFrequencies = [.. Enumerable.Range(0, HeadDim / 2).Select(i => Math.Pow(checkpoint.RopeTheta, -2.0 * i / HeadDim))];
    }

    private int HeadDim => checkpoint.HeadDim ?? checkpoint.HiddenSize / checkpoint.Heads;

    /// <summary>The rotary inverse frequency of each pair (θ^(−2i/d) unless set: YaRN's mixed ones).</summary>
    public double[] InverseFrequencies { get; init; }

    /// <summary>Multiplies every cos and sin (transformers' attention_scaling).</summary>
    public double AttentionFactor { get; init; } = 1;

    /// <summary>The window of each layer (0: every earlier position); a query at p sees p − w + 1 … p.</summary>
    public Func<int, int> Window { get; init; } = _ => 0;

    /// <summary>Ministral 3's llama_4_scaling_beta: queries at position p are multiplied by 1 + β·ln(1 + ⌊p / n⌋) with
    /// n = <see cref="TemperatureLength"/>; 0 means none.</summary>
    public double TemperatureBeta { get; init; }

    /// <summary>The n of <see cref="TemperatureBeta"/> (original_max_position_embeddings).</summary>
    public int TemperatureLength { get; init; } = 1;

    /// <summary>YaRN's inverse frequencies as transformers' _compute_yarn_parameters computes them (truncated correction
    /// range, linear ramp) for head size <paramref name="dims"/>.</summary>
    public static double[] YarnFrequencies(int dims, double theta, double factor, int originalContext, double betaFast = 32, double betaSlow = 1)
    {
        double CorrectionDim(double rotations) => dims * Math.Log(originalContext / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
        double low = Math.Max(Math.Floor(CorrectionDim(betaFast)), 0), high = Math.Min(Math.Ceiling(CorrectionDim(betaSlow)), dims - 1);
        if (low == high)
            high += 0.001;
        var result = new double[dims / 2];
        for (int i = 0; i < result.Length; i++)
        {
            double extrapolation = Math.Pow(theta, -2.0 * i / dims);
            double interpolation = extrapolation / factor;
            double extrapolationShare = 1 - Math.Clamp((i - low) / (high - low), 0, 1);
            result[i] = interpolation * (1 - extrapolationShare) + extrapolation * extrapolationShare;
        }
        return result;
    }

    /// <summary>The logits of every position of <paramref name="tokens"/>, [tokens, vocab] row-major.</summary>
    public float[] Logits(int[] tokens)
    {
        int n = tokens.Length, dim = checkpoint.HiddenSize, heads = checkpoint.Heads, kvHeads = checkpoint.KvHeads, hd = HeadDim;
        int vocab = checkpoint.VocabSize;
        var embedding = weights["model.embed_tokens.weight"];
        var x = new double[n][];
        for (int t = 0; t < n; t++)
            x[t] = [.. embedding.AsSpan(tokens[t] * dim, dim).ToArray().Select(v => (double)v)];
        for (int l = 0; l < checkpoint.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var q = new double[n][];
            var k = new double[n][];
            var v = new double[n][];
            for (int t = 0; t < n; t++)
            {
                var h = RmsNorm(x[t], weights[p + "input_layernorm.weight"]);
                q[t] = Linear(h, p + "self_attn.q_proj", heads * hd);
                k[t] = Linear(h, p + "self_attn.k_proj", kvHeads * hd);
                v[t] = Linear(h, p + "self_attn.v_proj", kvHeads * hd);
                for (int head = 0; head < heads; head++)
                    Rotate(q[t], head * hd, t);
                for (int head = 0; head < kvHeads; head++)
                    Rotate(k[t], head * hd, t);
                if (TemperatureBeta != 0)
                {
                    double temperature = 1 + TemperatureBeta * Math.Log(1 + Math.Floor((double)t / TemperatureLength));
                    for (int i = 0; i < q[t].Length; i++)
                        q[t][i] *= temperature;
                }
            }
            int window = Window(l);
            for (int t = 0; t < n; t++)
            {
                var attended = new double[heads * hd];
                int first = window > 0 ? Math.Max(0, t - window + 1) : 0;
                for (int head = 0; head < heads; head++)
                {
                    int kvHead = head / (heads / kvHeads);
                    var scores = new double[t - first + 1];
                    for (int s = first; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < hd; i++)
                            dot += q[t][head * hd + i] * k[s][kvHead * hd + i];
                        scores[s - first] = dot / Math.Sqrt(hd);
                    }
                    double max = scores.Max(), sum = scores.Sum(sc => Math.Exp(sc - max));
                    for (int s = first; s <= t; s++)
                    {
                        double weight = Math.Exp(scores[s - first] - max) / sum;
                        for (int i = 0; i < hd; i++)
                            attended[head * hd + i] += weight * v[s][kvHead * hd + i];
                    }
                }
                var projected = Linear(attended, p + "self_attn.o_proj", dim);
                for (int i = 0; i < dim; i++)
                    x[t][i] += projected[i];
                var h = RmsNorm(x[t], weights[p + "post_attention_layernorm.weight"]);
                var gate = Linear(h, p + "mlp.gate_proj", checkpoint.IntermediateSize);
                var up = Linear(h, p + "mlp.up_proj", checkpoint.IntermediateSize);
                for (int i = 0; i < gate.Length; i++)
                    gate[i] = gate[i] / (1 + Math.Exp(-gate[i])) * up[i];
                var down = Linear(gate, p + "mlp.down_proj", dim);
                for (int i = 0; i < dim; i++)
                    x[t][i] += down[i];
            }
        }
        var classifier = weights[checkpoint.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight"];
        var logits = new float[n * vocab];
        for (int t = 0; t < n; t++)
        {
            var h = RmsNorm(x[t], weights["model.norm.weight"]);
            for (int r = 0; r < vocab; r++)
            {
                double sum = 0;
                for (int i = 0; i < dim; i++)
                    sum += classifier[r * dim + i] * h[i];
                logits[t * vocab + r] = (float)sum;
            }
        }
        return logits;
    }

    // transformers' apply_rotary_pos_emb: x·cos + rotate_half(x)·sin on one head, pairs (i, i + d/2).
    private void Rotate(double[] values, int offset, int position)
    {
        int half = HeadDim / 2;
        for (int i = 0; i < half; i++)
        {
            double angle = position * InverseFrequencies[i];
            double cos = Math.Cos(angle) * AttentionFactor, sin = Math.Sin(angle) * AttentionFactor;
            double a = values[offset + i], b = values[offset + i + half];
            values[offset + i] = a * cos - b * sin;
            values[offset + i + half] = b * cos + a * sin;
        }
    }

    private double[] RmsNorm(double[] x, float[] weight)
    {
        double meanSquare = x.Sum(v => v * v) / x.Length;
        double scale = 1 / Math.Sqrt(meanSquare + checkpoint.RmsNormEps);
        return [.. x.Select((v, i) => v * scale * weight[i])];
    }

    private double[] Linear(double[] input, string name, int rows)
    {
        var w = weights[name + ".weight"];
        weights.TryGetValue(name + ".bias", out var bias);
        var output = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double sum = bias?[r] ?? 0;
            for (int i = 0; i < input.Length; i++)
                sum += w[r * input.Length + i] * input[i];
            output[r] = sum;
        }
        return output;
    }

    // safetensors: 8-byte little-endian header length, the JSON header, then the F32 data at each entry's offsets.
    private static Dictionary<string, float[]> ReadSafetensors(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int headerLength = checked((int)BinaryPrimitives.ReadInt64LittleEndian(bytes));
        using var header = JsonDocument.Parse(bytes.AsMemory(8, headerLength));
        var result = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var entry in header.RootElement.EnumerateObject().Where(e => e.Name != "__metadata__"))
        {
            if (entry.Value.GetProperty("dtype").GetString() != "F32")
                throw new ArgumentException($"{path}: '{entry.Name}' is not F32");
            long start = entry.Value.GetProperty("data_offsets")[0].GetInt64(), end = entry.Value.GetProperty("data_offsets")[1].GetInt64();
            var values = new float[(end - start) / 4];
            for (int i = 0; i < values.Length; i++)
                values[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(checked((int)(8 + headerLength + start + 4L * i))));
            result[entry.Name] = values;
        }
        return result;
    }
}
