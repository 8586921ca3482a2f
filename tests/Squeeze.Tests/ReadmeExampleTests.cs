using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Generation;
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
        var plan = QuantizationMix.Plan(model, QuantizationMix.Q4_K_M, [], pure: false);
        GgufQuantizer.Write(model, plan, output);
        using var quantized = ModelLoader.Load(output);
        var result = Evaluator.Evaluate(quantized, File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")), new EvaluationOptions { ContextLength = 256, MaxChunks = 4 }, baseModel: model);
        using var runtime = new Transformer(quantized);
        var tokens = Generator.Generate(runtime, "Once upon a time", 100, new Sampler(new SamplingOptions { Temperature = 0 }));

        Assert.InRange(result.Perplexity, 1, 50);
        Assert.InRange(result.KlDivergence!.Mean, 1e-6, 1.0);
        Assert.NotEmpty(tokens);
    }
}
