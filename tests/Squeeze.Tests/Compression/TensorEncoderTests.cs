using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Compression;

public sealed class TensorEncoderTests
{
    [Theory]
    [InlineData("Q4_0")]
    [InlineData("Q8_0")]
    public void Each_tensor_is_encoded_to_the_bytes_compress_writes_for_it(string mixName)
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CompressorTests.CalibrationText, new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        var options = new CompressionOptions { Mix = QuantizationMix.Parse(mixName), Pure = true, Method = CompressionMethod.Gptq, Statistics = stats, Threads = 2 };
        string path = CompressorTests.TempPath($"{mixName}.gguf");
        try
        {
            var report = Compressor.Compress(model, "", options, path);
            using var written = ModelLoader.Load(path);
            var encoder = new TensorEncoder(model, stats, options);
            foreach (var t in report.Tensors.Where(t => t.Encoding != "copy"))
            {
                var encoded = encoder.Encode(t.Name, Enum.Parse<GgmlType>(t.Format));
                Assert.Equal(t.Encoding, encoded.Report.Encoding);
                Assert.Equal(t.ErrorAfter, encoded.Report.ErrorAfter);
                var tensor = written[t.Name];
                var bytes = new byte[tensor.ByteLength];
                for (long r = 0; r < tensor.Rows; r++)
                    tensor.Row(r).CopyTo(bytes.AsSpan((int)(r * tensor.RowBytes)));
                Assert.True(bytes.AsSpan().SequenceEqual(encoded.Data), $"{t.Name} {t.Format}: bytes differ from the compressed file's");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Rows_no_block_fits_awq_and_gptq_without_statistics_are_refused()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var encoder = new TensorEncoder(model, null, new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 1 });
        // stories260K's ffn_down rows are 172 wide: no 32-value block fits.
        var error = Assert.Throws<ArgumentException>(() => encoder.Encode("blk.0.ffn_down.weight", Squeeze.Tensors.GgmlType.Q4_0));
        Assert.Contains("not a multiple", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new TensorEncoder(model, null, new CompressionOptions { Method = CompressionMethod.AwqGptq }));
        var uncalibrated = new TensorEncoder(model, null, new CompressionOptions { Method = CompressionMethod.Gptq });
        Assert.Contains("needs calibration statistics", Assert.Throws<ArgumentException>(() => uncalibrated.Encode("blk.0.attn_q.weight", GgmlType.Q8_0)).Message, StringComparison.Ordinal);
    }
}
