using System.Runtime.InteropServices;
using Squeeze.Calibration;
using Squeeze.Evaluation;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Calibration;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Quantization;

public sealed class GptqModelTests(ITestOutputHelper output)
{
    [Fact]
    public void Gptq_stories260K_is_closer_to_the_float_model_than_imatrix_round_to_nearest()
    {
        const GgmlType type = GgmlType.Q4_0;
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibratorTests.CalibrationText(12000), new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 1 });

        var gptq = new Dictionary<string, byte[]>();
        var rtn = new Dictionary<string, byte[]>();
        foreach (var t in model.Tensors)
        {
            if (!LinearInputs.TryGet(t.Name, out int layer, out var kind) || t.Columns % GgmlTypes.BlockSize(type) != 0)
                continue;
            var entry = stats.Get(layer, kind);
            var result = Gptq.QuantizeTensor(t, stats, type, new GptqOptions { Threads = 1 });
            var values = new float[t.ElementCount];
            Dequantize.Tensor(t, values);
            var bytes = new byte[GgmlTypes.RowBytes(type, t.Columns) * t.Rows];
            Squeeze.Quantization.Quantize.Rows(type, values, (int)t.Columns, entry.Importance(), bytes, maxThreads: 1);
            var rtnValues = new float[values.Length];
            for (int r = 0; r < t.Rows; r++)
                Dequantize.Row(type, bytes.AsSpan((int)(r * GgmlTypes.RowBytes(type, t.Columns)), (int)GgmlTypes.RowBytes(type, t.Columns)), rtnValues.AsSpan((int)(r * t.Columns), (int)t.Columns));
            var h = entry.Hessian();
            double gptqError = Gptq.OutputError(values, result.Dequantized, (int)t.Rows, (int)t.Columns, h);
            double rtnError = Gptq.OutputError(values, rtnValues, (int)t.Rows, (int)t.Columns, h);
            output.WriteLine($"{t.Name}: GPTQ {gptqError:0.0000e+0} RTN(imatrix) {rtnError:0.0000e+0} ratio {gptqError / rtnError:0.000}");
            Assert.True(gptqError < rtnError, $"{t.Name}: GPTQ {gptqError} vs RTN {rtnError}");
            gptq[t.Name] = result.Data;
            rtn[t.Name] = bytes;
        }
        Assert.True(gptq.Count >= 4 * model.Config.LayerCount, $"only {gptq.Count} tensors quantized");

        using var gptqModel = WithTensors(model, gptq, type);
        using var rtnModel = WithTensors(model, rtn, type);
        string evalText = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..8000];
        int[] tokens = model.Tokenizer.Encode(evalText, addBos: true);
        double gptqKl = MeanKl(model, gptqModel, tokens, 64, 8);
        double rtnKl = MeanKl(model, rtnModel, tokens, 64, 8);
        output.WriteLine($"mean KL vs f32 on held-out text: GPTQ {gptqKl:0.000000}, RTN(imatrix) {rtnKl:0.000000}");
        Assert.True(gptqKl < rtnKl, $"GPTQ KL {gptqKl} vs RTN {rtnKl}");
    }

    private static Model WithTensors(Model model, Dictionary<string, byte[]> replaced, GgmlType type)
    {
        var owned = new List<IDisposable>();
        var tensors = new List<Tensor>();
        foreach (var t in model.Tensors)
        {
            if (!replaced.TryGetValue(t.Name, out var bytes))
            {
                tensors.Add(t);
                continue;
            }
            var buffer = NativeBuffer.Allocate(bytes.Length);
            owned.Add(buffer);
            unsafe
            {
                bytes.CopyTo(new Span<byte>(buffer.Pointer, bytes.Length));
            }
            tensors.Add(new Tensor(t.Name, type, t.Shape, buffer, 0));
        }
        return new Model(model.Config, model.Vocabulary, tensors, model.Source, owned);
    }

    private static double MeanKl(Model baseModel, Model model, int[] tokens, int ctx, int chunks)
    {
        using var a = new Transformer(baseModel, new RuntimeOptions { Threads = 1, ContextLength = ctx });
        using var b = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = ctx });
        int vocab = baseModel.Config.VocabSize;
        var p = new float[vocab];
        var q = new float[vocab];
        double sum = 0;
        int count = 0;
        for (int c = 0; c < chunks; c++)
        {
            var chunk = tokens.AsSpan(c * ctx, ctx);
            a.Reset();
            b.Reset();
            float[] la = a.Forward(chunk, ctx).ToArray();
            var lb = b.Forward(chunk, ctx);
            for (int t = 0; t < ctx; t++)
            {
                LogSoftmax.Compute(la.AsSpan(t * vocab, vocab), p);
                LogSoftmax.Compute(lb.Slice(t * vocab, vocab), q);
                sum += Evaluator.KlDivergence(p, q);
                count++;
            }
        }
        return sum / count;
    }
}
