using Squeeze.Calibration;
using Squeeze.Compression.Representations;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.LowRank;
using Squeeze.Models;
using Squeeze.Tests.Calibration;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Compression;

public sealed class LowRankRepresentationTests
{
    [Theory]
    [InlineData("svd:16", "svd:16")]
    [InlineData("SVD:8:4", "svd:8:4")]
    [InlineData("eora:3:~64:16", "eora:3:~64:16")]
    [InlineData("eora:2:32:8:4", "eora:2:32:8:4")]
    [InlineData("eora:2:32:8:16", "eora:2:32:8")]
    [InlineData("slim:2:4:4:16:4", "slim:2:4:4:16:4")]
    [InlineData("slim:2:4:f16:8", "slim:2:4:f16:8")]
    public void Specs_parse_and_print_back(string spec, string expected)
        => Assert.Equal(expected, NativeRepresentation.Parse(spec).Spec);

    [Theory]
    [InlineData("svd")]
    [InlineData("svd:0")]
    [InlineData("svd:8:12")]
    [InlineData("eora:3:32")]
    [InlineData("eora:9:32:8")]
    [InlineData("eora:3:32:8:1")]
    [InlineData("slim:2:4:4")]
    [InlineData("slim:2:4:9:8")]
    public void Bad_specs_are_refused(string spec)
        => Assert.Throws<FormatException>(() => NativeRepresentation.Parse(spec));

    [Fact]
    public void Slim_adds_a_low_rank_correction_to_a_pruned_quantized_weight_and_lowers_its_error()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibratorTests.CalibrationText(20_000), new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        var encoder = new TensorEncoder(model, stats, new CompressionOptions { Threads = 2 });
        var pruned = NativeRepresentation.Parse("nm:2:4:4");
        var slim = NativeRepresentation.Parse("slim:2:4:4:8:4");
        var t = model.Tensors.First(t => t.Name == TensorNames.Up(0));
        var p = pruned.Encode(encoder, t.Name);
        var s = slim.Encode(encoder, t.Name);
        var sum = Assert.IsType<SumWeight>(s.Weight);
        Assert.IsType<NmSparseWeight>(sum.Terms[0]);
        Assert.IsType<LowRankWeight>(sum.Terms[1]);
        Assert.Equal(p.Weight.StoredBytes + RankSelection.FactorBytes((int)t.Rows, (int)t.Columns, 8, 4), sum.StoredBytes);
        Assert.True(s.OutputError < p.OutputError, $"slim {s.OutputError}, pruned {p.OutputError}");
    }

    [Fact]
    public void Levels_encode_with_exact_bytes_and_eora_lowers_its_bases_output_error()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibratorTests.CalibrationText(20_000), new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        var encoder = new TensorEncoder(model, stats, new CompressionOptions { Threads = 2 });
        var baseline = (UniformRepresentation)NativeRepresentation.Parse("uniform:2:32");
        var eora = NativeRepresentation.Parse("eora:2:32:8:4");
        var svd = NativeRepresentation.Parse("svd:16");
        var plainSvd = new TensorEncoder(model, null, new CompressionOptions { Threads = 2 });
        int checkedTensors = 0;
        foreach (var t in model.Tensors.Where(t => t.Shape.Length == 2 && t.Name.StartsWith("blk.", StringComparison.Ordinal)))
        {
            int rows = (int)t.Rows, columns = (int)t.Columns;
            if (!eora.Fits(rows, columns))
                continue;
            var q = baseline.Encode(encoder, t.Name);
            var corrected = eora.Encode(encoder, t.Name);
            var sum = Assert.IsType<SumWeight>(corrected.Weight);
            Assert.Equal(q.Weight.StoredBytes + RankSelection.FactorBytes(rows, columns, 8, 4), sum.StoredBytes);
            Assert.True(corrected.OutputError < q.OutputError, $"{t.Name}: eora {corrected.OutputError}, base {q.OutputError}");

            var aware = svd.Encode(encoder, t.Name);
            Assert.Equal(RankSelection.FactorBytes(rows, columns, 16), aware.Weight.StoredBytes);
            // Activation-aware truncation minimizes exactly this error; the plain SVD cannot do better on it.
            var plain = svd.Encode(plainSvd, t.Name);
            Assert.True(aware.OutputError <= encoder.RelativeError(t.Name, plain.Weight) * 1.001,
                $"{t.Name}: activation-aware {aware.OutputError}");
            checkedTensors++;
        }
        Assert.True(checkedTensors >= 20, $"only {checkedTensors} tensors checked");
    }
}
