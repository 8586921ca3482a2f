using Squeeze.Compression;
using Squeeze.Formats.Llama2c;
using Squeeze.Quantization;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Compression;

/// <summary>The block-by-block engine's promises at the edges: an interrupted job resumed gives the same bytes, a job
/// over its memory estimate is refused before any work, and every block's time is reported.</summary>
public sealed class LayerwiseCompressionTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("squeeze-layerwise-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_job_interrupted_midway_and_resumed_writes_the_bytes_of_an_uninterrupted_run(bool sequential)
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var options = new CompressionOptions
        {
            Mix = QuantizationMix.Parse("Q4_K_M"),
            Method = sequential ? CompressionMethod.AwqGptq : CompressionMethod.Gptq,
            Sequential = sequential,
            CalibrationTokens = 1024,
            ContextLength = 128,
            RefinePasses = 1,
            Threads = 2,
        };
        string whole = Path.Combine(dir, "whole.gguf"), resumed = Path.Combine(dir, "resumed.gguf");
        var reference = Compressor.Compress(model, CompressorTests.CalibrationText, options, whole);
        Assert.Equal(model.Config.LayerCount, reference.LayerSeconds.Count);

        // Stopped while the third block's tensors are encoded: two blocks are on record.
        using (var cancel = new CancellationTokenSource())
        {
            var progress = new SynchronousProgress<CompressionProgress>(p =>
            {
                if (p.Stage == "quantizing" && p.Note.StartsWith("blk.2.", StringComparison.Ordinal))
                    cancel.Cancel();
            });
            Assert.ThrowsAny<OperationCanceledException>(() => Compressor.Compress(model, CompressorTests.CalibrationText, options with { Resume = true }, resumed, progress, cancel.Token));
        }
        Assert.False(File.Exists(resumed));
        string state = Path.Combine(dir, ".resumed.gguf.resume");
        Assert.True(File.Exists(Path.Combine(state, "state.json")));
        Assert.True(File.Exists(Path.Combine(state, "partial.gguf")));

        var report = Compressor.Compress(model, CompressorTests.CalibrationText, options with { Resume = true }, resumed);
        Assert.Equal("resumed at layer 2", report.Note);
        Assert.Equal(File.ReadAllBytes(whole), File.ReadAllBytes(resumed));
        Assert.False(Directory.Exists(state));
        Assert.Equal(reference.Tensors.Select(t => (t.Name, t.Format, t.Encoding, t.ErrorAfter)), report.Tensors.Select(t => (t.Name, t.Format, t.Encoding, t.ErrorAfter)));
        Assert.Equal(reference.AwqAlphas, report.AwqAlphas);
        Assert.Equal(model.Config.LayerCount, report.LayerSeconds.Count);
    }

    [Fact]
    public void A_saved_state_of_another_job_is_not_resumed()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var options = new CompressionOptions { Mix = QuantizationMix.Parse("Q4_0"), Method = CompressionMethod.Imatrix, CalibrationTokens = 512, ContextLength = 128, Threads = 2, Resume = true };
        string path = Path.Combine(dir, "out.gguf");
        using (var cancel = new CancellationTokenSource())
        {
            var progress = new SynchronousProgress<CompressionProgress>(p =>
            {
                if (p.Stage == "quantizing" && p.Note.StartsWith("blk.1.", StringComparison.Ordinal))
                    cancel.Cancel();
            });
            Assert.ThrowsAny<OperationCanceledException>(() => Compressor.Compress(model, CompressorTests.CalibrationText, options, path, progress, cancel.Token));
        }
        // Another mix: the saved progress is of another file and is started over.
        var report = Compressor.Compress(model, CompressorTests.CalibrationText, options with { Mix = QuantizationMix.Parse("Q8_0") }, path);
        Assert.Equal("", report.Note);
        Assert.Equal(File.ReadAllBytes(path), Compress(model, options with { Mix = QuantizationMix.Parse("Q8_0"), Resume = false }));
        Assert.Equal(["out.gguf", "reference.gguf"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Order());
    }

    [Fact]
    public void A_job_over_its_memory_limit_is_refused_before_any_work()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string path = Path.Combine(dir, "out.gguf");
        var options = new CompressionOptions { Mix = QuantizationMix.Parse("Q4_0"), Method = CompressionMethod.Gptq, CalibrationTokens = 1024, ContextLength = 128, MemoryLimit = 1 << 20 };
        var progress = new List<CompressionProgress>();
        var e = Assert.Throws<InsufficientMemoryException>(() => Compressor.Compress(model, CompressorTests.CalibrationText, options, path,
            new SynchronousProgress<CompressionProgress>(progress.Add)));
        Assert.StartsWith($"{path}: the job needs about ", e.Message);
        Assert.Contains("more than the limit of 1 MiB; use fewer calibration tokens than 1,024", e.Message);
        Assert.Empty(progress);
        Assert.Empty(Directory.GetFileSystemEntries(dir));

        // The estimate grows with the calibration tokens (the residual stream) and with GPTQ's Gram matrices.
        var plan = QuantizationMix.Plan(model, options.Mix, [], false, hasImportance: true);
        var small = ResourceEstimate.ForMix(model, plan, CompressionMethod.Gptq, 1024, 1);
        var large = ResourceEstimate.ForMix(model, plan, CompressionMethod.Gptq, 65536, 1);
        var imatrix = ResourceEstimate.ForMix(model, plan, CompressionMethod.Imatrix, 1024, 1);
        Assert.Equal(2L * (65536 - 1024) * model.Config.Dim * sizeof(float), large.MemoryBytes - small.MemoryBytes);
        Assert.True(imatrix.MemoryBytes < small.MemoryBytes);
    }

    private byte[] Compress(Squeeze.Models.Model model, CompressionOptions options)
    {
        string path = Path.Combine(dir, "reference.gguf");
        Compressor.Compress(model, CompressorTests.CalibrationText, options, path);
        return File.ReadAllBytes(path);
    }
}
