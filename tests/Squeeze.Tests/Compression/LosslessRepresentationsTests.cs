using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Tests.Calibration;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Compression;

public sealed class LosslessRepresentationsTests
{
    [Theory]
    [InlineData("rot+uniform:3:~64")]
    [InlineData("entropy+uniform:4:32:sym")]
    [InlineData("entropy+rot+uniform:2:32")]
    [InlineData("dfloat11")]
    public void Specs_parse_back_to_themselves(string spec)
        => Assert.Equal(spec, NativeRepresentation.Parse(spec).Spec);

    [Theory]
    [InlineData("rot+f16")]
    [InlineData("entropy+f16")]
    [InlineData("entropy+dfloat11")]
    [InlineData("rot+")]
    public void Wrappers_of_what_they_cannot_wrap_are_refused(string spec)
        => Assert.Throws<FormatException>(() => NativeRepresentation.Parse(spec));

    [Fact]
    public void Rotated_entropy_and_dfloat11_levels_encode_every_layer_with_the_sizes_and_errors_they_promise()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibratorTests.CalibrationText(20_000), new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        var encoder = new TensorEncoder(model, stats, new CompressionOptions { Threads = 2, RefinePasses = 0 });
        var uniform = NativeRepresentation.Parse("uniform:3:32");
        var rotated = NativeRepresentation.Parse("rot+uniform:3:32");
        var entropy = NativeRepresentation.Parse("entropy+rot+uniform:3:32");
        var dfloat11 = NativeRepresentation.Parse("dfloat11");
        long codedBytes = 0, packedBytes = 0;
        foreach (var t in model.Tensors.Where(t => t.Shape.Length == 2 && t.Name != TensorNames.TokenEmbedding && t.Columns % 32 == 0))
        {
            var u = uniform.Encode(encoder, t.Name);
            var r = rotated.Encode(encoder, t.Name);
            var e = entropy.Encode(encoder, t.Name);
            var d = dfloat11.Encode(encoder, t.Name);
            Assert.Equal("rotated gptq", r.Encoding);
            Assert.Equal(u.Weight.StoredBytes, r.Weight.StoredBytes);
            Assert.InRange(r.OutputError, 0, 0.5);
            // Entropy coding is lossless: the same rotated weight in fewer bytes.
            var coded = Assert.IsType<RotatedWeight>(e.Weight);
            Assert.IsType<EntropyCodedWeight>(coded.Inner);
            Assert.Equal(r.Weight.Decode(), e.Weight.Decode());
            Assert.Equal(r.OutputError, e.OutputError);
            codedBytes += e.Weight.StoredBytes;
            packedBytes += r.Weight.StoredBytes;
            Assert.IsType<DFloat11Weight>(d.Weight);
            Assert.InRange(d.OutputError, 0, 1e-4);
        }
        // The tables cost a few bytes, so a tiny tensor (2,048 codes) may grow; the model's weights shrink.
        Assert.True(codedBytes < packedBytes, $"{codedBytes} coded vs {packedBytes}");
    }
}
