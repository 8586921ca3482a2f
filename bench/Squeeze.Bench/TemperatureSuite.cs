using System.Runtime.InteropServices;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Tensors;

namespace Squeeze.Bench;

/// <summary>
/// What perplexity on tinystories-eval rewards: the f32 stories15M with every logit multiplied by a factor (its
/// <c>output_norm</c> weights scaled, which scales the classifier's input and so the logits of the tied classifier),
/// scored on the whole text (ctx 256) against the unscaled model. A factor below 1 flattens the distribution.
/// Options: <c>--factors 1.1,1.05,…</c>, <c>--threads N</c>.
/// </summary>
internal static class TemperatureSuite
{
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        float[] factors = Program.Value(args, "--factors") is { } list
            ? [.. list.Split(',').Select(f => float.Parse(f, System.Globalization.CultureInfo.InvariantCulture))]
            : [1.05f, 1.02f, 1.01f, 0.99f, 0.98f, 0.95f];
        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        var models = factors.Select(f => ScaledLogits(source, f)).ToList();
        try
        {
            var results = Evaluator.EvaluateMany(models, text, new EvaluationOptions { ContextLength = 256, Threads = threads }, source);
            var reference = Evaluator.Evaluate(source, text, new EvaluationOptions { ContextLength = 256, Threads = threads });
            Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- temperature --threads {threads}` " +
                "(stories15M f32, logits × factor, whole tinystories-eval at ctx 256, KLD against the unscaled model)");
            Console.WriteLine();
            Console.WriteLine("| logits × | PPL | PPL change | mean KLD |");
            Console.WriteLine("|---|---|---|---|");
            Console.WriteLine($"| 1 (the model) | {reference.Perplexity:0.0000} | | 0 |");
            for (int i = 0; i < factors.Length; i++)
                Console.WriteLine($"| {factors[i]} | {results[i].Perplexity:0.0000} | {100 * (results[i].Perplexity / reference.Perplexity - 1):+0.00;-0.00} % | {results[i].KlDivergence!.Mean:0.000000} |");
        }
        finally
        {
            foreach (var m in models)
                m.Dispose();
        }
    }

    // The model with output_norm's weights multiplied by factor (every other tensor shared with source).
    private static Model ScaledLogits(Model source, float factor)
    {
        var norm = source[TensorNames.OutputNorm];
        var values = new float[norm.ElementCount];
        Dequantize.Tensor(norm, values);
        for (int i = 0; i < values.Length; i++)
            values[i] *= factor;
        return source.WithTensors(new Dictionary<string, (GgmlType, byte[])> { [norm.Name] = (GgmlType.F32, MemoryMarshal.AsBytes(values.AsSpan()).ToArray()) });
    }
}
