using Squeeze.Allocation;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Models;
using Squeeze.Pipeline;
using Squeeze.Quantization;
using Squeeze.Tests.Compression;
using Squeeze.Tests.Formats;
using Squeeze.Tokenizers;
using Squeeze.Tuning;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Pipeline;

public sealed class CompressionPipelineTests : IDisposable
{
    private readonly Model model = Llama2cReader.Load(SharedData.Stories260K);

    private static string CalibrationText => CompressorTests.CalibrationText[..20_000];

    public void Dispose() => model.Dispose();

    // A 9-bpw GGUF budget for stories260K (its smallest file is 7.46 bpw), calibrated on 1,024 tokens.
    private static CompressionJob BudgetJob(string path) => new()
    {
        Target = new BudgetTarget(Bytes: null, BitsPerWeight: 9.0),
        Method = CompressionMethod.Gptq,
        CalibrationText = CalibrationText,
        CalibrationTokens = 1024,
        ContextLength = 128,
        Threads = 2,
        Output = path,
    };

    [Fact]
    public void A_mix_job_writes_the_bytes_the_compressor_writes_and_reports_them()
    {
        var stats = Calibrator.Run(model, CalibrationText, new CalibrationOptions { ContextLength = 128, MaxTokens = 2048, CollectGram = true, Threads = 2 });
        string direct = CompressorTests.TempPath("direct.gguf"), piped = CompressorTests.TempPath("piped.gguf");
        try
        {
            var options = new CompressionOptions { Mix = QuantizationMix.Q4_0, Method = CompressionMethod.Gptq, Statistics = stats, Threads = 2 };
            var expected = Compressor.Compress(model, "", options, direct);
            var stages = new List<StageProgress>();
            var report = CompressionPipeline.Run(model, new CompressionJob
            {
                Target = new MixTarget(QuantizationMix.Q4_0),
                Method = CompressionMethod.Gptq,
                Statistics = stats,
                Threads = 2,
                Output = piped,
            }, new SynchronousProgress<StageProgress>(stages.Add));

            Assert.Equal(File.ReadAllBytes(direct), File.ReadAllBytes(piped));
            Assert.Equal(expected.Tensors.Select(t => (t.Name, t.Format, t.Bytes)), report.Tensors.Select(t => (t.Name, t.Format, t.Bytes)));
            Assert.Equal(("gguf", "Q4_0", new FileInfo(piped).Length), (report.Format, report.Target, report.FileBytes));
            Assert.Equal(8.0 * report.FileBytes / model.ParameterCount, report.BitsPerWeight);
            // Statistics were given: no calibration stage.
            Assert.Equal(["encoding", "writing"], stages.Select(s => s.Stage).Distinct());
            Assert.All(stages, s => Assert.Equal(2, s.Count));
        }
        finally
        {
            File.Delete(direct);
            File.Delete(piped);
        }
    }

    [Fact]
    public void A_budget_job_numbers_its_stages_in_order_and_fits_the_budget()
    {
        string path = CompressorTests.TempPath("budget.gguf");
        try
        {
            var stages = new List<StageProgress>();
            var report = CompressionPipeline.Run(model, BudgetJob(path), new SynchronousProgress<StageProgress>(stages.Add));

            // Each block is calibrated just before its candidates are encoded: one stage, whose notes say which block.
            Assert.Equal([Allocator.CalibratingAndEncoding, "measuring", "searching", "writing"], stages.Select(s => s.Stage).Distinct());
            Assert.Contains(stages, s => s.Stage == Allocator.CalibratingAndEncoding && s.Note.StartsWith("calibrating layer 0", StringComparison.Ordinal));
            Assert.Contains(stages, s => s.Stage == Allocator.CalibratingAndEncoding && s.Note.StartsWith("calibrating classifier", StringComparison.Ordinal));
            Assert.All(stages, s => Assert.Equal(4, s.Count));
            Assert.True(stages.Zip(stages.Skip(1)).All(p => p.First.Number <= p.Second.Number), "stage numbers went back");
            Assert.All(stages, s => Assert.True(s.Done >= 0 && s.Done <= s.Total, $"{s.Stage}: {s.Done} of {s.Total}"));
            Assert.Equal(new FileInfo(path).Length, report.FileBytes);
            Assert.True(report.FileBytes <= report.Budget, $"{report.FileBytes} > {report.Budget}");
            Assert.Equal("9 bpw", report.Target);
            Assert.All(report.Tensors, t => Assert.NotNull(t.SwapKld));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_budget_job_with_rounded_candidates_encodes_the_chosen_types_with_gptq_at_the_planned_size()
    {
        string path = CompressorTests.TempPath("rounded.gguf"), planned = CompressorTests.TempPath("rounded-plan.gguf");
        try
        {
            var target = new BudgetTarget(Bytes: null, BitsPerWeight: 9.0, Candidates: CandidateEncoding.Rounding);
            var plan = CompressionPipeline.Run(model, BudgetJob(planned) with { Target = target, Output = null });
            var stages = new List<StageProgress>();
            var report = CompressionPipeline.Run(model, BudgetJob(path) with { Target = target }, new SynchronousProgress<StageProgress>(stages.Add));

            Assert.Equal([Allocator.CalibratingAndEncoding, "measuring", "searching", "calibrating and encoding the chosen types with gptq"],
                stages.Select(s => s.Stage).Distinct());
            Assert.All(stages, s => Assert.Equal(4, s.Count));
            // The search chose among roundings; the file has its types and size, each tensor encoded anew with GPTQ,
            // never worse than the rounding the search weighed.
            Assert.Equal(plan.FileBytes, report.FileBytes);
            Assert.Equal((1, 2), (plan.CalibrationPasses, report.CalibrationPasses));
            Assert.Equal(new FileInfo(path).Length, report.FileBytes);
            Assert.True(report.FileBytes <= report.Budget, $"{report.FileBytes} > {report.Budget}");
            Assert.Equal(plan.Tensors.Select(t => (t.Name, t.Format)), report.Tensors.Where(t => t.SwapKld is not null).Select(t => (t.Name, t.Format)));
            Assert.All(plan.Tensors, t => Assert.StartsWith("imatrix", t.Encoding, StringComparison.Ordinal));
            Assert.Contains("candidates encoded by imatrix rounding", plan.Note, StringComparison.Ordinal);
            var encoded = report.Tensors.Where(t => t.SwapKld is not null).ToList();
            Assert.Contains(encoded, t => t.Encoding == "gptq");
            Assert.All(encoded, t => Assert.True(t.ErrorAfter <= t.ErrorBefore!.Value * (1 + 1e-9), $"{t.Name}: {t.Encoding} {t.ErrorBefore} -> {t.ErrorAfter}"));

            // llama.cpp runs the file as Squeeze does.
            var agreement = RuntimeAgreement.Measure(path, [.. Tokenizer.Create(model.Vocabulary).Encode(CalibrationText[..400], addBos: true).Take(48)]);
            Assert.True(agreement.SameTopShare >= 0.95 && agreement.MeanKld < 1e-3, agreement.ToString());
        }
        finally
        {
            File.Delete(path);
            File.Delete(planned);
        }
    }

    [Fact]
    public void Candidates_are_encoded_with_the_method_while_that_is_affordable_and_tuning_refuses_rounded_ones()
    {
        var options = new AllocationOptions { Compression = new CompressionOptions { Method = CompressionMethod.Gptq } };
        Assert.False(Allocator.RoundsCandidates(model, options)); // stories260K: far below the threshold
        Assert.True(Allocator.RoundsCandidates(model, options with { Candidates = CandidateEncoding.Rounding }));
        Assert.False(Allocator.RoundsCandidates(model, options with { Compression = new CompressionOptions { Method = CompressionMethod.Imatrix }, Candidates = CandidateEncoding.Rounding }));
        var job = BudgetJob(CompressorTests.TempPath("tuned.gguf")) with
        {
            Target = new BudgetTarget(Bytes: null, BitsPerWeight: 9.0, Candidates: CandidateEncoding.Rounding),
            Tuning = new TuningOptions(),
        };
        Assert.Contains("--tune", Assert.Throws<ArgumentException>(() => CompressionPipeline.Run(model, job)).Message);
    }

    [Fact]
    public void Cancelling_stops_the_job_and_leaves_no_output()
    {
        string path = CompressorTests.TempPath("cancelled.gguf");
        using var cancellation = new CancellationTokenSource();
        var job = BudgetJob(path);
        var seen = new List<string>();
        Assert.ThrowsAny<OperationCanceledException>(() => CompressionPipeline.Run(model, job, new SynchronousProgress<StageProgress>(p =>
        {
            seen.Add(p.Stage);
            if (p.Stage == "measuring")
                cancellation.Cancel();
        }), cancellation.Token));
        Assert.DoesNotContain("searching", seen);
        Assert.False(File.Exists(path));
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + "*"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Sampled_swaps_measure_each_candidate_of_an_untied_embedding(bool native)
    {
        // No activation enters an untied embedding (a lookup), so its candidates have no output error to scale a sampled
        // measurement by: each is measured instead (the job failed after its whole encoding stage before).
        using var directory = new TempDirectory();
        string checkpoint = RandomCheckpoint.Llama2.Write(directory.File("untied"));
        using var untied = ModelLoader.Load(checkpoint);
        Assert.True(untied.Contains(TensorNames.Output));
        var report = CompressionPipeline.Run(untied, BudgetJob(directory.File(native ? "native" : "sampled.gguf")) with
        {
            Target = new BudgetTarget(null, native ? 6.0 : 9.0, Native: native, Swaps: SwapMeasurement.Sampled,
                Representations: native ? [.. new[] { "uniform:4:32", "uniform:8:32", "f16" }.Select(NativeRepresentation.Parse)] : null),
            Method = CompressionMethod.Imatrix,
        });
        var embedding = report.Tensors.Single(t => t.Name == TensorNames.TokenEmbedding);
        Assert.True(embedding.SwapKld is >= 0 and < double.PositiveInfinity, $"embedding swap KLD {embedding.SwapKld}");
        Assert.True(native ? Directory.Exists(directory.File("native")) : File.Exists(directory.File("sampled.gguf")));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_native_budget_below_the_fixed_files_is_refused_before_any_work(bool bitsPerWeight)
    {
        // config.json, the tokenizer files and the weights file's header and norms take these bytes whatever the levels:
        // a budget below them was refused only after the whole encoding stage.
        long fixedBytes = NativeCandidateSet.FixedBytes(model);
        long budget = fixedBytes - NativeCandidateSet.CandidateGrain;
        var stages = new List<StageProgress>();
        using var directory = new TempDirectory();
        var target = bitsPerWeight
            ? new BudgetTarget(null, 8.0 * budget / model.ParameterCount, Native: true)
            : new BudgetTarget(budget, null, Native: true);
        var error = Assert.Throws<ArgumentException>(() => CompressionPipeline.Run(model, BudgetJob(directory.File("native")) with { Target = target },
            new SynchronousProgress<StageProgress>(stages.Add)));
        Assert.Contains(model.Source, error.Message, StringComparison.Ordinal);
        Assert.Contains($"{fixedBytes:N0} bytes", error.Message, StringComparison.Ordinal);
        Assert.Contains("fixed files", error.Message, StringComparison.Ordinal);
        Assert.Empty(stages);
        Assert.False(Directory.Exists(directory.File("native")));
    }

    [Fact]
    public void Jobs_that_do_not_fit_together_are_refused_before_any_work()
    {
        var stages = new List<StageProgress>();
        var progress = new SynchronousProgress<StageProgress>(stages.Add);
        Assert.Contains("calibration text", Assert.Throws<ArgumentException>(() => CompressionPipeline.Run(model,
            new CompressionJob { Target = new BudgetTarget(null, 4.0), Output = CompressorTests.TempPath("x.gguf") }, progress)).Message);
        Assert.Contains("exactly one budget", Assert.Throws<ArgumentException>(() => CompressionPipeline.Run(model,
            new CompressionJob { Target = new BudgetTarget(1000, 4.0), CalibrationText = CalibrationText }, progress)).Message);
        Assert.Contains("give an output", Assert.Throws<ArgumentException>(() => CompressionPipeline.Run(model,
            new CompressionJob { Target = new MixTarget(QuantizationMix.Q8_0), Method = CompressionMethod.Rtn }, progress)).Message);
        Assert.Contains("over the input", Assert.Throws<ArgumentException>(() => CompressionPipeline.Run(model,
            new CompressionJob { Target = new MixTarget(QuantizationMix.Q8_0), Method = CompressionMethod.Rtn, Output = model.Source }, progress)).Message);
        // round-to-nearest candidates have no output error for sampled swaps to predict from, in either format
        foreach (bool native in new[] { false, true })
        {
            Assert.Contains("--swaps all", Assert.Throws<ArgumentException>(() => CompressionPipeline.Run(model, new CompressionJob
            {
                Target = new BudgetTarget(null, 9.0, Native: native, Swaps: SwapMeasurement.Sampled),
                Method = CompressionMethod.Rtn,
                CalibrationText = CalibrationText,
            }, progress)).Message);
        }
        Assert.Empty(stages);
    }
}
