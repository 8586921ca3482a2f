using System.Globalization;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>stories15M converted by Squeeze to every named mix (no imatrix), scored on tinystories-eval (ctx 256)
/// against the f32 model in one pass, beside llama.cpp's figures for its same-named files without imatrix.</summary>
internal static class MixesSuite
{
    // shared/golden/README.md, rows without imatrix: (mix, bytes, perplexity, mean KLD).
    private static readonly (string Mix, long Bytes, double Perplexity, double Kld)[] LlamaCpp =
    [
        ("Q8_0", 16_879_328, 6.5016, 0.001439),
        ("Q6_K", 16_557_920, 6.5131, 0.003257),
        ("Q5_K_M", 15_040_736, 6.5696, 0.020825),
        ("Q5_0", 14_639_840, 6.6772, 0.029895),
        ("Q4_K_M", 14_650_208, 6.6567, 0.032127),
        ("Q4_K_S", 14_494_688, 6.5864, 0.040705),
        ("Q4_0", 13_893_344, 7.0422, 0.115526),
        ("Q3_K_M", 14_028_128, 6.7364, 0.062579),
        ("Q3_K_S", 13_717_088, 7.2767, 0.137484),
    ];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        string directory = Directory.CreateTempSubdirectory("squeeze-mixes-").FullName;
        try
        {
            using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
            var files = new List<string>();
            foreach (var (mix, _, _, _) in LlamaCpp)
            {
                string path = Path.Combine(directory, $"stories15M-{mix}.gguf");
                var plan = Squeeze.Quantization.QuantizationMix.Plan(source, Squeeze.Quantization.QuantizationMix.Parse(mix), [], pure: false);
                Squeeze.Quantization.GgufQuantizer.Write(source, plan, path, importance: null, threads);
                files.Add(path);
            }
            var models = files.Select(f => ModelLoader.Load(f)).ToArray();
            try
            {
                var results = Evaluator.EvaluateMany(models, text, new EvaluationOptions { ContextLength = 256, Threads = threads }, source);
                Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- mixes --threads {threads}` (stories15M.bin converted by `squeeze convert --type MIX`, no imatrix; tinystories-eval, ctx 256)");
                Console.WriteLine();
                Console.WriteLine("| mix | bytes | llama.cpp bytes | PPL | llama.cpp PPL | mean KLD | llama.cpp KLD | KLD ratio | same top % |");
                Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
                for (int i = 0; i < files.Count; i++)
                {
                    var (mix, bytes, ppl, kld) = LlamaCpp[i];
                    var r = results[i];
                    var k = r.KlDivergence!;
                    Console.WriteLine($"| {mix} | {new FileInfo(files[i]).Length:N0} | {bytes:N0} | {r.Perplexity:0.0000} | {ppl:0.0000} | {k.Mean:0.000000} | {kld:0.000000} | {k.Mean / kld:0.000} | {k.SameTopTokenPercent:0.00} |");
                }
            }
            finally
            {
                foreach (var m in models)
                    m.Dispose();
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
