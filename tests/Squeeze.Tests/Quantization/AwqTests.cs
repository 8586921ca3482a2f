using Squeeze.Calibration;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Calibration;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Quantization;

public sealed class AwqTests(ITestOutputHelper output)
{
    [Fact]
    public void Salient_channels_make_awq_beat_round_to_nearest()
    {
        const int width = 64, tokens = 256, rows = 32;
        var random = new Random(42);
        int[] salient = [5, 17, 40];
        var x = new float[tokens * width];
        for (int t = 0; t < tokens; t++)
            for (int j = 0; j < width; j++)
                x[t * width + j] = (float)(GptqTests.Gaussian(random) * (salient.Contains(j) ? 25 : 1));
        var stats = new ActivationStatistics(0, LinearInput.Attention, width, collectGram: true);
        stats.Accumulate(x, tokens);
        var weights = new List<float[]>();
        for (int k = 0; k < 3; k++)
        {
            var w = new float[rows * width];
            for (int i = 0; i < w.Length; i++)
                w[i] = (float)(0.05 * GptqTests.Gaussian(random));
            weights.Add(w);
        }
        var norm = new float[width];
        for (int j = 0; j < width; j++)
            norm[j] = (float)(0.5 + random.NextDouble());

        var result = Awq.Search(norm, weights, stats, GgmlType.Q4_0);
        output.WriteLine($"alpha {result.Alpha}: AWQ error {result.Error:0.0000e+0}, RTN {result.BaselineError:0.0000e+0}, ratio {result.Error / result.BaselineError:0.000}");
        Assert.True(result.Alpha > 0);
        Assert.True(result.Error < 0.8 * result.BaselineError, $"AWQ {result.Error} vs RTN {result.BaselineError}");
        // Salient channels get the largest scales.
        float smallestSalient = salient.Min(j => result.Scales[j]);
        Assert.True(Enumerable.Range(0, width).Where(j => !salient.Contains(j)).All(j => result.Scales[j] < smallestSalient));

        // The reported errors are ‖X eᵀ‖² / n for e = Q(W·s)/s − W, recomputed here from the raw activations.
        var imp = stats.Importance();
        double Recompute(float[] s)
        {
            double total = 0;
            foreach (var w in weights)
            {
                for (int r = 0; r < rows; r++)
                {
                    var scaled = new float[width];
                    var importance = new float[width];
                    for (int j = 0; j < width; j++)
                    {
                        scaled[j] = w[r * width + j] * s[j];
                        importance[j] = imp[j] / (s[j] * s[j]);
                    }
                    var bytes = new byte[GgmlTypes.RowBytes(GgmlType.Q4_0, width)];
                    Squeeze.Quantization.Quantize.Row(GgmlType.Q4_0, scaled, importance, bytes);
                    var decoded = new float[width];
                    Dequantize.Row(GgmlType.Q4_0, bytes, decoded);
                    for (int t = 0; t < tokens; t++)
                    {
                        double y = 0;
                        for (int j = 0; j < width; j++)
                            y += ((double)decoded[j] / s[j] - w[r * width + j]) * x[t * width + j];
                        total += y * y;
                    }
                }
            }
            return total / tokens;
        }
        Assert.Equal(result.Error, Recompute(result.Scales), result.Error * 1e-9);
        Assert.Equal(result.BaselineError, Recompute(Awq.Scales(stats.MeanAbs(), 0)), result.BaselineError * 1e-9);

        // Folding: norm' · W' is norm · W column by column.
        for (int k = 0; k < weights.Count; k++)
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < width; j++)
                    Assert.Equal(weights[k][r * width + j] * norm[j], result.Weights[k][r * width + j] * result.NormWeight[j], 1e-6);
    }

    [Fact]
    public void Folding_keeps_the_float_model_outputs_on_stories260K()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string text = CalibratorTests.CalibrationText(4000);
        var stats = Calibrator.Run(model, text, new CalibrationOptions { ContextLength = 64, MaxTokens = 128, CollectGram = true, Threads = 1 });
        var (transformed, groups) = Awq.Apply(model, stats, GgmlType.Q4_0);
        using (transformed)
        {
            output.WriteLine(string.Join(", ", groups.Select(g => $"α={g.Alpha:0.00} {g.Error / g.BaselineError:0.000}")));
            Assert.Equal(2 * model.Config.LayerCount, groups.Count);
            Assert.Contains(groups, g => g.Alpha > 0);
            Assert.All(groups, g => Assert.True(g.Error <= g.BaselineError));
            Assert.NotEqual(Read(model[TensorNames.Query(0)]), Read(transformed[TensorNames.Query(0)]));

            int[] tokens = model.Tokenizer.Encode(text[..600], addBos: true)[..48];
            using var a = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = 64 });
            using var b = new Transformer(transformed, new RuntimeOptions { Threads = 1, ContextLength = 64 });
            float[] expected = a.Forward(tokens, tokens.Length).ToArray();
            float[] actual = b.Forward(tokens, tokens.Length).ToArray();
            double maxDiff = expected.Zip(actual).Max(p => Math.Abs(p.First - p.Second));
            output.WriteLine($"max |Δlogit| {maxDiff:0.000e+0}");
            Assert.True(maxDiff <= 1e-4, $"max logit difference {maxDiff}");
        }
    }

    private static float[] Read(Tensor tensor)
    {
        var values = new float[tensor.ElementCount];
        Dequantize.Tensor(tensor, values);
        return values;
    }
}
