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

    [Theory]
    [InlineData(CompressionMethod.Gptq)]
    [InlineData(CompressionMethod.Imatrix)]
    [InlineData(CompressionMethod.Rtn)]
    public void Leaving_plain_rounding_unmeasured_changes_no_byte_and_no_error_after(CompressionMethod method)
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CompressorTests.CalibrationText, new CalibrationOptions { ContextLength = 64, MaxTokens = 512, CollectGram = true, Threads = 2 });
        var options = new CompressionOptions { Method = method, Threads = 2 };
        var measured = new TensorEncoder(model, stats, options);
        var unmeasured = new TensorEncoder(model, stats, options with { MeasureErrorBefore = false });
        foreach (var (name, type) in new[] { ("blk.0.attn_q.weight", GgmlType.Q4_0), ("blk.1.ffn_gate.weight", GgmlType.IQ4_NL), ("blk.2.attn_output.weight", GgmlType.Q5_1) })
        {
            var a = measured.Encode(name, type);
            var b = unmeasured.Encode(name, type);
            Assert.True(a.Data.AsSpan().SequenceEqual(b.Data), $"{name} {type}: bytes differ");
            Assert.Equal((a.Report.Encoding, a.Report.ErrorAfter), (b.Report.Encoding, b.Report.ErrorAfter));
            Assert.NotNull(a.Report.ErrorBefore);
            // Round-to-nearest is rtn's own encoding, so its error is known either way.
            Assert.Equal(method == CompressionMethod.Rtn ? a.Report.ErrorBefore : null, b.Report.ErrorBefore);
        }
    }

    [Fact]
    public void The_llama_cpp_scale_search_rounds_with_llama_cpp_s_search_alone()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var refined = new TensorEncoder(model, null, new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 2 });
        var llama = new TensorEncoder(model, null, new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 2, ScaleSearch = ScaleSearch.LlamaCpp });
        const string name = "blk.0.attn_q.weight";
        var tensor = model[name];
        int columns = checked((int)tensor.Columns);
        var values = new float[tensor.ElementCount];
        Dequantize.Tensor(tensor, values);
        var expected = new byte[GgmlTypes.RowBytes(GgmlType.IQ4_NL, columns) * tensor.Rows];
        Quantize.Rows(GgmlType.IQ4_NL, values, columns, [], expected, 1, ScaleSearch.LlamaCpp);
        var a = llama.Encode(name, GgmlType.IQ4_NL);
        var b = refined.Encode(name, GgmlType.IQ4_NL);
        Assert.True(a.Data.AsSpan().SequenceEqual(expected), "not llama.cpp's search alone");
        Assert.False(a.Data.AsSpan().SequenceEqual(b.Data), "the refined search changed nothing");
        Assert.True(b.Report.ErrorAfter < a.Report.ErrorAfter, $"refined {b.Report.ErrorAfter} against llama.cpp's search {a.Report.ErrorAfter}");
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
