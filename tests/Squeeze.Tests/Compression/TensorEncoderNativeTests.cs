using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tests.Calibration;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Compression;

public sealed class TensorEncoderNativeTests
{
    [Theory]
    [InlineData(2, 32, false)]
    [InlineData(3, 64, false)]
    [InlineData(4, 32, true)]
    public void Gptq_on_the_uniform_grid_lowers_the_output_error_of_rounding_on_every_layer(int bits, int group, bool symmetric)
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibratorTests.CalibrationText(20_000), new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        var scheme = new UniformScheme(bits, group, symmetric);
        var gptq = new TensorEncoder(model, stats, new CompressionOptions { Threads = 2 });
        var rtn = new TensorEncoder(model, stats, new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 2 });
        int better = 0, count = 0;
        foreach (var t in model.Tensors.Where(t => t.Shape.Length == 2 && t.Name != TensorNames.TokenEmbedding && t.Columns % group == 0))
        {
            var a = gptq.EncodeUniform(t.Name, scheme);
            var b = rtn.EncodeUniform(t.Name, scheme);
            Assert.Equal(b.Weight.StoredBytes, a.Weight.StoredBytes);
            Assert.True(a.OutputError <= b.OutputError, $"{t.Name}: gptq {a.OutputError} > rounding {b.OutputError}");
            Assert.InRange(a.OutputError, 0, 1);
            // the reported error is the error of the weight returned
            Assert.Equal(a.OutputError, gptq.RelativeError(t.Name, a.Weight));
            if (a.OutputError < b.OutputError * 0.95)
                better++;
            count++;
        }
        Assert.True(better * 2 > count, $"GPTQ lowered the error by 5% on only {better} of {count} layers");
    }

    [Fact]
    public void Vector_levels_use_the_calibration_and_a_residual_stage_lowers_the_error()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibratorTests.CalibrationText(20_000), new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        var gptq = new TensorEncoder(model, stats, new CompressionOptions { Threads = 2 });
        var rtn = new TensorEncoder(model, stats, new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 2 });
        var single = NativeRepresentation.Parse("vq:4:6:scaled");
        var residual = NativeRepresentation.Parse("rvq:4:6:4:scaled");
        foreach (string name in (string[])["blk.0.attn_q.weight", "blk.2.ffn_down.weight", TensorNames.TokenEmbedding])
        {
            var a = single.Encode(gptq, name);
            var b = single.Encode(rtn, name);
            var c = residual.Encode(gptq, name);
            Assert.Equal(name == TensorNames.TokenEmbedding ? "imatrix" : "gptq", a.Encoding);
            Assert.Equal(a.OutputError, gptq.RelativeError(name, a.Weight));
            if (name == TensorNames.TokenEmbedding)
                Assert.Equal(b.OutputError, a.OutputError); // no Gram matrix for the tied embedding: the nearest centroid either way
            else
                Assert.True(a.OutputError < b.OutputError, $"{name}: second-order {a.OutputError}, nearest {b.OutputError}");
            Assert.True(c.OutputError < a.OutputError, $"{name}: residual stage {c.OutputError}, one stage {a.OutputError}");
            var sum = Assert.IsType<SumWeight>(c.Weight);
            Assert.Equal(2, sum.Terms.Count);
            Assert.All(sum.Terms, t => Assert.IsType<VectorCodebookWeight>(t));
        }
    }

    [Fact]
    public void The_grid_decodes_as_the_uniform_weight_it_builds()
    {
        var scheme = new UniformScheme(3, 48, false);
        var grid = new UniformSchemeGrid(scheme);
        const int rows = 3, columns = 96;
        var values = Squeeze.Tests.Weights.LinearWeightTests.RandomValues(rows * columns, 4);
        var data = new byte[rows * 2 * grid.BlockBytes];
        var expected = new float[rows * columns];
        var random = new Random(9);
        for (int r = 0; r < rows; r++)
        {
            for (int g = 0; g < 2; g++)
            {
                var block = data.AsSpan((r * 2 + g) * grid.BlockBytes, grid.BlockBytes);
                grid.Fit(values.AsSpan(r * columns + g * 48, 48), [], block);
                for (int i = 0; i < 48; i++)
                {
                    int code = random.Next(grid.Levels);
                    grid.SetCode(block, i, code);
                    expected[r * columns + g * 48 + i] = grid.Value(block, i, code);
                }
            }
        }
        var weight = grid.ToWeight("w", data, rows, columns);
        Assert.Equal(expected, weight.Decode());
    }
}
