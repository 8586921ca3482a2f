using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Tests.Formats.Gguf;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Compression;

public sealed class CompressorTests(ITestOutputHelper output)
{
    // stories260K: calibrate on the first part of tinystories-calib, score on held-out tinystories-eval.
    internal static string CalibrationText => File.ReadAllText(SharedData.Corpus("tinystories-calib.txt"))[..40_000];

    private static string EvaluationText => File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..30_000];

    internal static string TempPath(string name) => Path.Combine(Path.GetTempPath(), $"squeeze-compress-{Environment.ProcessId}-{Guid.NewGuid():N}-{name}");

    [Theory]
    [InlineData("Q4_0")]
    [InlineData("Q8_0")]
    public void Gptq_and_awq_gptq_files_are_closer_to_the_float_model_than_rtn_and_imatrix_files_of_the_same_size(string mixName)
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibrationText, new CalibrationOptions { ContextLength = 128, MaxTokens = 4096, CollectGram = true, Threads = 2 });
        var methods = new[] { CompressionMethod.Rtn, CompressionMethod.Imatrix, CompressionMethod.Gptq, CompressionMethod.AwqGptq };
        var paths = methods.Select(m => TempPath($"{mixName}-{m}.gguf")).ToArray();
        var models = new List<Model>();
        try
        {
            var reports = new List<CompressionReport>();
            for (int i = 0; i < methods.Length; i++)
            {
                var options = new CompressionOptions { Mix = QuantizationMix.Parse(mixName), Method = methods[i], Statistics = stats, Threads = 2 };
                reports.Add(Compressor.Compress(model, "", options, paths[i]));
            }
            foreach (string path in paths)
            {
                var loaded = ModelLoader.Load(path);
                models.Add(loaded);
                AssertFinite(loaded);
            }
            var results = Evaluator.EvaluateMany(models, EvaluationText, new EvaluationOptions { ContextLength = 128, MaxChunks = 16, Threads = 2 }, model);
            var kld = results.Select(r => r.KlDivergence!.Mean).ToArray();
            for (int i = 0; i < methods.Length; i++)
                output.WriteLine($"{mixName} {methods[i]}: {reports[i].FileBytes:N0} bytes, mean KLD {kld[i]:0.000000}, PPL {results[i].Perplexity:0.0000}");

            long rtnBytes = reports[0].FileBytes;
            for (int i = 1; i < methods.Length; i++)
                Assert.True(reports[i].FileBytes <= rtnBytes, $"{methods[i]}: {reports[i].FileBytes} bytes > RTN's {rtnBytes}");
            foreach (int i in new[] { 2, 3 })
            {
                Assert.True(kld[i] < kld[0], $"{methods[i]} KLD {kld[i]} not below RTN's {kld[0]}");
                Assert.True(kld[i] < kld[1], $"{methods[i]} KLD {kld[i]} not below imatrix's {kld[1]}");
            }
            // Every quantized linear layer went through GPTQ and did not lose to plain rounding on the calibration error.
            var gptqTensors = reports[2].Tensors.Where(t => LinearInputs.TryGet(t.Name, out _, out _) && t.Encoding != "copy").ToList();
            Assert.NotEmpty(gptqTensors);
            Assert.All(gptqTensors, t => Assert.True(t.ErrorAfter <= t.ErrorBefore && t.ErrorMetric == "H", $"{t.Name}: {t.Encoding} {t.ErrorBefore} -> {t.ErrorAfter} ({t.ErrorMetric})"));
            Assert.Equal(2 * model.Config.LayerCount, reports[3].AwqAlphas.Count);
        }
        finally
        {
            foreach (var m in models)
                m.Dispose();
            foreach (string path in paths)
                File.Delete(path);
        }
    }

    [Fact]
    public void Sequential_gptq_runs_the_text_through_the_model_once_and_beats_rtn()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string rtnPath = TempPath("rtn.gguf"), seqPath = TempPath("seq.gguf");
        try
        {
            var rtn = Compressor.Compress(model, "", new CompressionOptions { Method = CompressionMethod.Rtn, Threads = 2 }, rtnPath);
            var progress = new List<CompressionProgress>();
            var seq = Compressor.Compress(model, CalibrationText, new CompressionOptions { Method = CompressionMethod.Gptq, Sequential = true, CalibrationTokens = 2048, ContextLength = 128, Threads = 2 },
                seqPath, new SynchronousProgress<CompressionProgress>(progress.Add));
            Assert.Equal(0, rtn.CalibrationPasses);
            Assert.Equal(1, seq.CalibrationPasses); // block by block, each block's input from the block before as compressed
            Assert.Equal(2048, seq.CalibrationTokens);
            Assert.Contains(progress, p => p.Stage == "calibrating");
            Assert.Contains(progress, p => p.Stage == "quantizing" && p.Done == p.Total);
            Assert.Equal(rtn.FileBytes, seq.FileBytes);
            using var a = ModelLoader.Load(rtnPath);
            using var b = ModelLoader.Load(seqPath);
            AssertFinite(b);
            var results = Evaluator.EvaluateMany([a, b], EvaluationText, new EvaluationOptions { ContextLength = 128, MaxChunks = 16, Threads = 2 }, model);
            output.WriteLine($"Q4_0 RTN KLD {results[0].KlDivergence!.Mean:0.000000}, sequential GPTQ {results[1].KlDivergence!.Mean:0.000000}");
            Assert.True(results[1].KlDivergence!.Mean < results[0].KlDivergence!.Mean);
        }
        finally
        {
            File.Delete(rtnPath);
            File.Delete(seqPath);
        }
    }

    [Theory]
    [InlineData(CompressionMethod.Rtn)]
    [InlineData(CompressionMethod.AwqGptq)]
    public void A_bf16_checkpoint_s_kept_tensors_are_written_in_f32_and_llama_cpp_runs_the_file(CompressionMethod method)
    {
        using var directory = new TempDirectory();
        var checkpoint = RandomCheckpoint.Llama2 with { BFloat16 = true };
        string hf = checkpoint.Write(directory.File("hf"));
        string path = directory.File("bf16.gguf");
        using (var model = ModelLoader.Load(hf))
        {
            Assert.Contains(model.Tensors, t => t.Shape.Length == 1 && t.Type == GgmlType.BF16);
            Compressor.Compress(model, method == CompressionMethod.Rtn ? "" : CalibrationText,
                new CompressionOptions { Mix = QuantizationMix.Parse("Q4_0"), Method = method, CalibrationTokens = 512, ContextLength = 64, Threads = 2 }, path);
        }
        using (var gguf = GgufFile.Open(path))
        {
            // llama.cpp's converter keeps 1-D tensors in F32, and its CPU operations take no BF16 norm
            Assert.All(gguf.Tensors.Where(t => t.Shape.Length == 1), t => Assert.Equal(GgmlType.F32, t.Type));
        }
        var agreement = LlamaCppAgreementTests.AssertAgreement(path, LlamaCppAgreementTests.Tokens(path), floats: false, output);
        Assert.True(agreement.Positions > 0);
    }

    [Fact]
    public void Statistics_of_another_model_are_refused()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibrationText, new CalibrationOptions { ContextLength = 64, MaxTokens = 128, CollectGram = true, Threads = 1 });
        var other = new CalibrationStatistics(new ModelIdentity(stats.Model.Hash ^ 1, "another model"), stats.TextHash, stats.TokenCount, stats.ContextLength, stats.Entries);
        string path = TempPath("other.gguf");
        var e = Assert.Throws<ArgumentException>(() => Compressor.Compress(model, "", new CompressionOptions { Statistics = other, Threads = 1 }, path));
        Assert.Contains("another model", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Statistics_without_the_gram_matrix_are_refused_for_gptq()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, CalibrationText, new CalibrationOptions { ContextLength = 64, MaxTokens = 128, Threads = 1 });
        string path = TempPath("nogram.gguf");
        var e = Assert.Throws<ArgumentException>(() => Compressor.Compress(model, "", new CompressionOptions { Method = CompressionMethod.Gptq, Statistics = stats, Threads = 1 }, path));
        Assert.Contains("--gram", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void A_missing_output_directory_fails_before_any_work_and_leaves_no_file()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string path = Path.Combine(TempPath("missing-dir"), "out.gguf");
        Assert.Throws<DirectoryNotFoundException>(() => Compressor.Compress(model, CalibrationText, new CompressionOptions { Threads = 1 }, path));
        Assert.False(Directory.Exists(Path.GetDirectoryName(path)));
    }

    [Fact]
    public void Relative_error_is_zero_for_an_exact_copy_and_one_for_all_zeros()
    {
        var random = new Random(42);
        int rows = 3, columns = 8;
        var w = Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        var h = new double[columns * columns];
        for (int i = 0; i < columns; i++)
            h[i * columns + i] = 1 + i;
        Assert.Equal(0, Compressor.RelativeError(w, w, rows, columns, h, [], threads: 2));
        Assert.Equal(1, Compressor.RelativeError(w, new float[w.Length], rows, columns, h, [], threads: 2), 12);
        // A diagonal H gives the same as the importance-weighted form.
        var diag = Enumerable.Range(0, columns).Select(i => 1f + i).ToArray();
        var q = w.Select(x => MathF.Round(x * 4) / 4).ToArray();
        Assert.Equal(Compressor.RelativeError(w, q, rows, columns, h, []), Compressor.RelativeError(w, q, rows, columns, [], diag), 12);
    }

    internal static void AssertFinite(Model model)
    {
        foreach (var t in model.Tensors)
        {
            var values = new float[t.ElementCount];
            Dequantize.Tensor(t, values);
            Assert.True(values.All(float.IsFinite), $"{t.Name} has a value that is not finite");
        }
    }
}
