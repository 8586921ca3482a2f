using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Pipeline;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests;

/// <summary>The library example of README.md, the same calls on stories260K, so the README cannot drift from the API.</summary>
public class ReadmeExampleTests
{
    [Fact]
    public void Library_example_runs()
    {
        using var temp = new TempDirectory();
        string output = temp.File("stories260K-Q4_K_M.gguf");

        using var model = ModelLoader.Load(SharedData.Stories260K);
        using var cancel = new CancellationTokenSource();
        var stages = new List<StageProgress>();
        var report = CompressionPipeline.Run(model, new CompressionJob
        {
            Target = new MixTarget(QuantizationMix.Q4_K_M),
            Method = CompressionMethod.Gptq,
            CalibrationText = File.ReadAllText(SharedData.Corpus("tinystories-calib.txt"))[..20_000],
            Output = output,
        }, new SynchronousProgress<StageProgress>(stages.Add), cancel.Token);
        using var quantized = ModelLoader.Load(report.Output!);
        var result = Evaluator.Evaluate(quantized, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")), new EvaluationOptions { ContextLength = 256, MaxChunks = 4 }, baseModel: model);
        using var runtime = new Transformer(quantized);
        var tokens = Generator.Generate(runtime, "Once upon a time", 100, new Sampler(new SamplingOptions { Temperature = 0 }));

        Assert.Equal(new FileInfo(output).Length, report.FileBytes);
        Assert.Equal(["calibrating and encoding layer by layer", "writing"], stages.Select(s => s.Stage).Distinct());
        Assert.InRange(result.Perplexity, 1, 50);
        Assert.InRange(result.KlDivergence!.Mean, 1e-6, 1.0);
        Assert.NotEmpty(tokens);
    }
}
