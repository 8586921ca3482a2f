using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Runtime;

/// <summary>llama.cpp's quantized stories15M files, scored by Squeeze on tinystories-eval (ctx 256), against the
/// figures llama.cpp measured for them (shared/golden/README.md): perplexity within 0.2%, mean KLD within 3%.</summary>
public class GoldenQuantizedTests(ITestOutputHelper output)
{
    [Fact]
    public void Perplexity_and_kld_of_llama_cpp_quantized_files_match_llama_cpp()
    {
        (string File, double Perplexity, double Kld)[] golden =
        [
            ("stories15M-Q8_0.gguf", 6.5016, 0.001439),
            ("stories15M-Q4_0-imatrix.gguf", 6.8543, 0.091786),
            ("stories15M-Q4_K_M-imatrix.gguf", 6.6272, 0.026935),
        ];
        using var baseModel = ModelLoader.Load(SharedData.Golden("stories15M-f32.gguf"));
        var models = golden.Select(g => ModelLoader.Load(SharedData.Golden(g.File))).ToArray();
        try
        {
            string text = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"));
            var results = Evaluator.EvaluateMany(models, text, new EvaluationOptions { ContextLength = 256, Threads = 2 }, baseModel);
            for (int i = 0; i < golden.Length; i++)
            {
                var (file, perplexity, kld) = golden[i];
                var r = results[i];
                output.WriteLine($"{file}: perplexity {r.Perplexity:0.0000} (llama.cpp {perplexity}), mean KLD {r.KlDivergence!.Mean:0.000000} (llama.cpp {kld}), ratio {r.KlDivergence.Mean / kld:0.000}");
            }
            for (int i = 0; i < golden.Length; i++)
            {
                var (file, perplexity, kld) = golden[i];
                Assert.True(Math.Abs(results[i].Perplexity / perplexity - 1) <= 0.002, $"{file}: perplexity {results[i].Perplexity:0.0000}, llama.cpp {perplexity}");
                Assert.True(Math.Abs(results[i].KlDivergence!.Mean / kld - 1) <= 0.03, $"{file}: mean KLD {results[i].KlDivergence!.Mean:0.000000}, llama.cpp {kld}");
            }
        }
        finally
        {
            foreach (var m in models)
                m.Dispose();
        }
    }
}
