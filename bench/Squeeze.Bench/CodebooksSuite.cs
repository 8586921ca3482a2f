using System.Diagnostics;
using System.Globalization;
using Squeeze.Calibration;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Bench;

/// <summary>
/// Non-uniform codebooks and dense-and-sparse outliers on stories15M: every 2-D weight except token_embd replaced by
/// uniform codes (asymmetric, importance-searched range, <see cref="UniformCodec"/>), by per-group codebooks
/// (importance-weighted k-means, <see cref="CodebookQuantizer"/>), and by codebooks plus sparse outliers
/// (<see cref="DenseAndSparse"/>), at 2, 3 and 4 bits with groups of 32, 96 and a whole row; each model run directly by
/// the runtime and scored against the f32 model. Options: <c>--chunks N</c> (evaluation chunks of tinystories-eval,
/// default 16), <c>--tokens N</c> (calibration tokens, default 0: the whole text), <c>--gptq</c> (adds GPTQ rows with
/// codebooks as the grid; collects XᵀX), <c>--threads N</c>.
/// </summary>
internal static class CodebooksSuite
{
    private static readonly int[] Bits = [2, 3, 4];
    private static readonly int[] Groups = [32, 96, 0]; // 0: one group per row
    private static readonly double[] OutlierFractions = [0.005, 0.01];

    /// <summary>Prompt and decode tokens/s of the f32 model and of one model per kind of representation at 3 bits
    /// (medians of 5 runs), with the codebook model also run through the default decoded product to show what its
    /// table-decoding kernel gains.</summary>
    private static void Speed(Model source, List<Row> rows, Model[] models, int threads)
    {
        const int Prompt = 128, Decode = 64, Repetitions = 5;
        var picks = new List<(string Name, Model Model)> { ("f32 (stories15M.bin)", source) };
        foreach (var (method, group, outliers) in (ReadOnlySpan<(string, string, string)>)[("uniform", "96", ""), ("codebook", "row", ""), ("codebook", "96", ""), ("codebook", "row", "1.0%"), ("uniform", "96", "1%")])
        {
            int i = rows.FindIndex(r => r.Method == method && r.Bits == 3 && r.Group == group && r.Outliers == outliers);
            if (i >= 0)
                picks.Add(($"{method} b3 {Label(group)}{(outliers.Length > 0 ? " + " + outliers + " outliers" : "")}", models[i]));
        }
        int codebook = rows.FindIndex(r => r.Method == "codebook" && r.Bits == 3 && r.Group == "row" && r.Outliers.Length == 0);
        using var decodedOnly = codebook < 0 ? null : source.WithWeights(rows[codebook].Weights.Select(w => (LinearWeight)new DecodedProductOnly(w)));
        if (decodedOnly is not null)
            picks.Add(("codebook b3 per row, default decoded product", decodedOnly));
        Console.WriteLine();
        Console.WriteLine($"| model | prompt tokens/s ({Prompt}) | decode tokens/s ({Decode}) |");
        Console.WriteLine("|---|---|---|");
        foreach (var (name, model) in picks)
        {
            var result = SpeedBenchmark.Run(model, threads, Prompt, Decode, Repetitions);
            Console.WriteLine($"| {name} | {result.PromptTokensPerSecond:0} | {result.DecodeTokensPerSecond:0} |");
        }
    }

    private static string Label(string group) => group == "row" ? "per row" : "g" + group;

    // A weight multiplied by LinearWeight's default product (rows decoded by the scalar reference, then f32 dots).
    private sealed class DecodedProductOnly(LinearWeight inner) : LinearWeight(inner.Name, inner.Rows, inner.Columns)
    {
        public override long StoredBytes => inner.StoredBytes;

        public override string Scheme => inner.Scheme;

        public override void DecodeRow(int row, Span<float> destination) => inner.DecodeRow(row, destination);
    }

    private sealed record Row(string Method, int Bits, string Group, string Outliers, IReadOnlyList<LinearWeight> Weights, double Seconds);

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int chunks = Program.Option(args, "--chunks", 16);
        int tokens = Program.Option(args, "--tokens", 0);
        bool gptq = args.Contains("--gptq");
        string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        var clock = Stopwatch.StartNew();
        var stats = Calibrator.Run(source, calibText, new CalibrationOptions { ContextLength = 256, MaxTokens = tokens, CollectGram = gptq, Threads = threads });
        double calibrationSeconds = clock.Elapsed.TotalSeconds;

        var targets = source.Tensors.Where(t => t.Shape.Length == 2 && t.Name != TensorNames.TokenEmbedding).ToList();
        var inputs = targets.ToDictionary(t => t.Name, t =>
        {
            var values = new float[t.ElementCount];
            Dequantize.Tensor(t, values);
            LinearInputs.TryGet(t.Name, out int layer, out var kind);
            return (Values: values, Rows: (int)t.Rows, Columns: (int)t.Columns, Input: stats.Get(layer, kind));
        });
        long parameters = targets.Sum(t => t.ElementCount);

        Row Encode(string method, int bits, int group, string outliers, Func<string, float[], int, int, float[], ActivationStatistics, LinearWeight> encode)
        {
            var watch = Stopwatch.StartNew();
            var weights = targets.Select(t =>
            {
                var (values, rows, columns, input) = inputs[t.Name];
                return encode(t.Name, values, rows, columns, input.Importance(), input);
            }).ToList();
            var row = new Row(method, bits, group == 0 ? "row" : group.ToString(CultureInfo.InvariantCulture), outliers, weights, watch.Elapsed.TotalSeconds);
            Console.Error.WriteLine($"{method} b{bits} {Label(row.Group)} {outliers}: {8.0 * weights.Sum(w => w.StoredBytes) / parameters:0.000} bpw, {row.Seconds:0.0} s");
            return row;
        }

        var rows = new List<Row>();
        foreach (int bits in Bits)
        {
            foreach (int group in Groups)
            {
                rows.Add(Encode("uniform", bits, group, "", (name, values, r, c, importance, _) =>
                    UniformWeight.Encode(name, values, r, c, new UniformScheme(bits, group == 0 ? c : group, symmetric: false), importance)));
                rows.Add(Encode("codebook", bits, group, "", (name, values, r, c, importance, _) =>
                    CodebookQuantizer.Quantize(name, values, r, c, importance, bits, group)));
            }
            foreach (double fraction in OutlierFractions)
            {
                rows.Add(Encode("codebook", bits, 0, $"{100 * fraction:0.0#}%", (name, values, r, c, importance, _) =>
                {
                    var (dense, sparse) = DenseAndSparse.Encode(name, values, r, c, importance, fraction, OutlierCriterion.Magnitude, DenseAndSparse.CodebookEncoder(bits, 0));
                    return new SumWeight(name, [dense, sparse]);
                }));
            }
            rows.Add(Encode("codebook", bits, 0, "1% by error", (name, values, r, c, importance, _) =>
            {
                var (dense, sparse) = DenseAndSparse.Encode(name, values, r, c, importance, 0.01, OutlierCriterion.Error, DenseAndSparse.CodebookEncoder(bits, 0));
                return new SumWeight(name, [dense, sparse]);
            }));
            rows.Add(Encode("uniform", bits, 96, "1%", (name, values, r, c, importance, _) =>
            {
                var (dense, sparse) = DenseAndSparse.Encode(name, values, r, c, importance, 0.01, OutlierCriterion.Magnitude,
                    DenseAndSparse.UniformEncoder(new UniformScheme(bits, 96, symmetric: false)));
                return new SumWeight(name, [dense, sparse]);
            }));
            if (gptq)
            {
                var hessians = new Dictionary<ActivationStatistics, GptqHessian>();
                rows.Add(Encode("codebook gptq", bits, 0, "", (name, values, r, c, importance, input) =>
                {
                    if (!hessians.TryGetValue(input, out var hessian))
                        hessians[input] = hessian = GptqHessian.Prepare(input.Hessian(), input.Width, 0.01, activationOrder: true, threads);
                    return CodebookQuantizer.QuantizeGptq(name, values, r, hessian, bits, 0,
                        new GptqOptions { Importance = importance, RefinePasses = 4, Threads = threads });
                }));
            }
        }

        var models = rows.Select(r => source.WithWeights(r.Weights)).ToArray();
        try
        {
            clock.Restart();
            var results = Evaluator.EvaluateMany(models, evalText, new EvaluationOptions { ContextLength = 256, MaxChunks = chunks, Threads = threads }, source);
            double evalSeconds = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- codebooks --threads {threads} --chunks {chunks}" +
                (tokens != 0 ? $" --tokens {tokens}" : "") + (gptq ? " --gptq" : "") + "` (stories15M.bin; importance = mean x² from " +
                $"{stats.TokenCount:N0} tokens of tinystories-calib at ctx 256; scored on the first {results[0].Chunks} chunks of tinystories-eval " +
                $"({results[0].ScoredTokens:N0} tokens), ctx 256, against the f32 model; every 2-D weight but token_embd replaced: {parameters:N0} weights)");
            Console.WriteLine();
            Console.WriteLine("| representation | bits | group | outliers | bits per weight | PPL | mean KLD | same top % | encode s |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            for (int i = 0; i < rows.Count; i++)
            {
                var r = rows[i];
                var k = results[i].KlDivergence!;
                double bpw = 8.0 * r.Weights.Sum(w => w.StoredBytes) / parameters;
                Console.WriteLine($"| {r.Method} | {r.Bits} | {r.Group} | {(r.Outliers.Length == 0 ? "–" : r.Outliers)} | {bpw:0.000} | " +
                    $"{results[i].Perplexity:0.0000} | {k.Mean:0.000000} | {k.SameTopTokenPercent:0.00} | {r.Seconds:0.0} |");
            }
            Console.WriteLine();
            Console.WriteLine($"f32 model on the same chunks: PPL {Evaluator.Evaluate(source, evalText, new EvaluationOptions { ContextLength = 256, MaxChunks = chunks, Threads = threads }).Perplexity:0.0000}. " +
                $"Calibration {calibrationSeconds:0.0} s, evaluation of the {rows.Count} models {evalSeconds:0.0} s ({threads} threads).");
            Speed(source, rows, models, threads);
        }
        finally
        {
            foreach (var m in models)
                m.Dispose();
        }
    }
}
