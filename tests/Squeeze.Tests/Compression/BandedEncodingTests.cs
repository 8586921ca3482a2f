using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Tests.Formats;
using Squeeze.Quantization;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Compression;

/// <summary>A tensor encoded in a GGUF type band by band of rows (what bounds the memory of encoding a 151,936-token
/// classifier to one band's f32 copies) gives the bytes and the errors of encoding it whole: the roundings encode rows
/// independently, GPTQ's rows are independent given the input's Hessian, and the errors are sums over rows in row order.</summary>
public sealed class BandedEncodingTests
{
    [Theory]
    [InlineData(CompressionMethod.Gptq)]
    [InlineData(CompressionMethod.Imatrix)]
    public void Bands_of_rows_write_the_bytes_of_whole_tensors(CompressionMethod method)
    {
        using var directory = new TempDirectory();
        // Rows of 256 and 512 values: Q4_K_M's k-quants (Q4_K, Q6_K) on every matrix, GPTQ on the classifier's 32,000 rows.
        string checkpoint = (RandomCheckpoint.Llama2 with { HiddenSize = 256, IntermediateSize = 512, Layers = 1 }).Write(directory.File("model"));
        using var model = ModelLoader.Load(checkpoint);
        var options = new CompressionOptions
        {
            Mix = QuantizationMix.Q4_K_M,
            Method = method,
            CalibrationTokens = 256,
            ContextLength = 128,
            RefinePasses = 1,
            Threads = 2,
            EncodingBandValues = int.MaxValue, // every tensor in one band, as it was encoded before bands
        };
        // 40 rows of 256 (20 of 512) per band: a band that divides no tensor's rows, 800 bands of the classifier.
        var banded = options with { EncodingBandValues = 40 * 256 };

        var whole = Compressor.Compress(model, CompressorTests.CalibrationText, options, directory.File("whole.gguf"));
        var inBands = Compressor.Compress(model, CompressorTests.CalibrationText, banded, directory.File("banded.gguf"));

        Assert.Equal(File.ReadAllBytes(directory.File("whole.gguf")), File.ReadAllBytes(directory.File("banded.gguf")));
        Assert.Equal(whole.Tensors.Select(t => (t.Name, t.Format, t.Encoding, t.ErrorBefore, t.ErrorAfter)),
            inBands.Tensors.Select(t => (t.Name, t.Format, t.Encoding, t.ErrorBefore, t.ErrorAfter)));
        var classifier = whole.Tensors.Single(t => t.Name == TensorNames.Output);
        Assert.StartsWith("Q", classifier.Format);
        Assert.Equal(method == CompressionMethod.Gptq ? "gptq" : "imatrix", classifier.Encoding);
    }
}
