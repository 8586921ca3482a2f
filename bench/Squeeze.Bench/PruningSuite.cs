using System.Diagnostics;
using System.Globalization;
using Squeeze.Calibration;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Pruning;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Bench;

/// <summary>
/// Pruning on stories15M: every 2-D weight except token_embd pruned to 25 %, 50 % (unstructured, per row) and 2:4 by
/// magnitude, Wanda and SparseGPT (calibrated on tinystories-calib, ctx 256, with XᵀX), kept values in f16, plus 2:4 with
/// 4-bit uniform values; scored against the f32 model on tinystories-eval (ctx 256), beside dense f16 and dense uniform
/// codes of similar size. Then the product's speed: 2:4 and 50 % masked layers against dense ones of about the same
/// bytes (one thread, median of repetitions). Options: <c>--tokens N</c> (calibration tokens, default 16384),
/// <c>--chunks N</c> (evaluation chunks, default 0: the whole text), <c>--threads N</c>, <c>--repetitions N</c> (kernel
/// timings, default 200), <c>--speed-only</c>, <c>--structured</c> (instead of the unstructured forms: whole heads or
/// feed-forward units removed from every block, <see cref="StructuredPruning"/>).
/// </summary>
internal static class PruningSuite
{
    private static readonly UniformScheme Values4 = new(4, 48, symmetric: false);

    private sealed record Config(string Form, string Method, Func<string, LinearWeight> Build);

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int tokens = Program.Option(args, "--tokens", 16384);
        int chunks = Program.Option(args, "--chunks", 0);
        int repetitions = Program.Option(args, "--repetitions", 200);
        using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        if (!args.Contains("--speed-only"))
            Quality(shared, source, threads, tokens, chunks, args.Contains("--structured"));
        Speed(args, source, repetitions);
    }

    private static void Quality(string shared, Model source, int threads, int tokens, int chunks, bool structured)
    {
        string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        var clock = Stopwatch.StartNew();
        var stats = Calibrator.Run(source, calibText, new CalibrationOptions { ContextLength = 256, MaxTokens = tokens, CollectGram = true, Threads = threads });
        Console.Error.WriteLine($"calibration: {stats.TokenCount:N0} tokens, {clock.Elapsed.TotalSeconds:0.0} s");
        var names = source.Tensors.Where(t => t.Shape.Length == 2 && t.Name != TensorNames.TokenEmbedding).Select(t => t.Name).ToArray();
        var hessians = new Dictionary<(int, Runtime.LinearInput), GptqHessian>();
        var options = new PruningOptions { Threads = threads };

        ActivationStatistics Input(string name)
        {
            if (!LinearInputs.TryGet(name, out int layer, out var kind))
                throw new InvalidOperationException($"'{name}' has no calibration input");
            return stats.Get(layer, kind);
        }
        PruningResult Prune(string name, SparsityPattern pattern, PruningMethod method)
        {
            var w = source.Weight(name);
            var input = Input(name);
            if (method != PruningMethod.SparseGpt)
                return Pruner.Prune(w.Decode(), w.Rows, w.Columns, pattern, method, input, options);
            var key = (input.Layer, input.Kind);
            if (!hessians.TryGetValue(key, out var hessian))
                hessians[key] = hessian = GptqHessian.Prepare(input.Hessian(), input.Width, options.DampingFraction, activationOrder: false, threads);
            return Pruner.SparseGpt(w.Decode(), w.Rows, hessian, pattern, options);
        }
        LinearWeight Uniform4(string name, float[] values, int rows, int columns) => UniformWeight.Encode(name, values, rows, columns, Values4);

        LinearWeight DenseF16(string name) => PrunedWeights.F16(name, source.Weight(name).Decode(), source.Weight(name).Rows, source.Weight(name).Columns);
        var configs = new List<Config> { new("dense f16", "-", DenseF16) };
        if (structured)
        {
            // Coupled structured forms: every block loses the same share of heads (attn_output's column groups, then the
            // heads' q/k/v rows) or of feed-forward units (ffn_down's columns, then ffn_gate/ffn_up rows); the rest f16.
            foreach (var (form, heads, fraction) in new (string, bool, double)[]
                     { ("heads 1/6", true, 1.0 / 6), ("heads 1/3", true, 1.0 / 3), ("ffn units 25 %", false, 0.25), ("ffn units 50 %", false, 0.5) })
            {
                foreach (var method in new[] { PruningMethod.Magnitude, PruningMethod.Wanda, PruningMethod.SparseGpt })
                {
                    Dictionary<string, LinearWeight>? pruned = null;
                    configs.Add(new(form, MethodName(method), name =>
                    {
                        pruned ??= Enumerable.Range(0, source.Config.LayerCount)
                            .SelectMany(l => heads ? StructuredPruning.Heads(source, l, fraction, method, stats, options) : StructuredPruning.FeedForwardUnits(source, l, fraction, method, stats, options))
                            .ToDictionary(p => p.Name, p => PrunedWeights.Structured(p.Name, p.Result), StringComparer.Ordinal);
                        return pruned.TryGetValue(name, out var w) ? w : DenseF16(name);
                    }));
                }
            }
        }
        else
        {
            foreach (var (form, pattern) in new (string, SparsityPattern)[]
                     { ("25 %", new SparsityPattern.Unstructured(0.25)), ("50 %", new SparsityPattern.Unstructured(0.5)), ("2:4", new SparsityPattern.NOfM(2, 4)) })
            {
                foreach (var method in new[] { PruningMethod.Magnitude, PruningMethod.Wanda, PruningMethod.SparseGpt })
                    configs.Add(new($"{form} f16", MethodName(method), name => PrunedWeights.For(name, Prune(name, pattern, method), pattern)));
            }
            foreach (var method in new[] { PruningMethod.Wanda, PruningMethod.SparseGpt })
                configs.Add(new("2:4, 4-bit values", MethodName(method), name => PrunedWeights.NOfM(name, Prune(name, new SparsityPattern.NOfM(2, 4), method), 2, 4, Uniform4)));
            foreach (int bits in new[] { 4, 3 })
            {
                var scheme = new UniformScheme(bits, 48, symmetric: false);
                configs.Add(new($"dense {scheme}", "imatrix RTN", name =>
                {
                    var w = source.Weight(name);
                    return UniformWeight.Encode(name, w.Decode(), w.Rows, w.Columns, scheme, Input(name).Importance());
                }));
            }
        }

        var models = new List<Model>();
        var prunedBytes = new List<long>();
        var pruneSeconds = new List<double>();
        long prunedWeights = names.Sum(n => source[n].ElementCount);
        try
        {
            foreach (var config in configs)
            {
                clock.Restart();
                var weights = names.Select(config.Build).ToList();
                pruneSeconds.Add(clock.Elapsed.TotalSeconds);
                prunedBytes.Add(weights.Sum(w => w.StoredBytes));
                models.Add(source.WithWeights(weights));
                Console.Error.WriteLine($"{config.Form} {config.Method}: {prunedBytes[^1]:N0} bytes, {pruneSeconds[^1]:0.0} s");
            }
            var results = Evaluator.EvaluateMany(models, evalText, new EvaluationOptions { ContextLength = 256, MaxChunks = chunks, Threads = threads }, source);
            string extra = (tokens != 16384 ? $" --tokens {tokens}" : "") + (chunks != 0 ? $" --chunks {chunks}" : "") + (structured ? " --structured" : "");
            Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- pruning --threads {threads}{extra}` (stories15M.bin; calibration: " +
                $"{stats.TokenCount:N0} tokens of tinystories-calib at ctx 256 with XᵀX; every 2-D weight but token_embd ({prunedWeights:N0} weights) {(structured ? "in f16, with heads or feed-forward units removed from every block" : "pruned per row")}; " +
                $"scored on {(chunks == 0 ? "the whole" : $"the first {chunks} chunks of")} tinystories-eval, ctx 256, against the f32 model; the f32 model's PPL is {results[0].KlDivergence!.BasePerplexity:0.0000})");
            Console.WriteLine();
            Console.WriteLine("| form | method | pruned layers' bytes | bits / weight | model bytes | PPL | mean KLD | same top % | prune s |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            for (int i = 0; i < configs.Count; i++)
            {
                var k = results[i].KlDivergence!;
                Console.WriteLine($"| {configs[i].Form} | {configs[i].Method} | {prunedBytes[i]:N0} | {8.0 * prunedBytes[i] / prunedWeights:0.00} | {models[i].TensorBytes:N0} | " +
                    $"{results[i].Perplexity:0.0000} | {k.Mean:0.000000} | {k.SameTopTokenPercent:0.00} | {pruneSeconds[i]:0.0} |");
            }
            Console.WriteLine();
        }
        finally
        {
            foreach (var model in models)
                model.Dispose();
        }
    }

    // One-thread product time of sparse layers against dense ones of about the same bytes, on stories15M's ffn_up
    // ([768, 288]) and ffn_down ([288, 768]) shapes, for one token (decoding) and 64 (a prompt batch).
    private static void Speed(string[] args, Model source, int repetitions)
    {
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- pruning --speed-only --repetitions {repetitions}` " +
            $"(one thread, median of {repetitions} products; blk.0 of stories15M, magnitude-pruned; the machine is shared, so compare within a column)");
        Console.WriteLine();
        Console.WriteLine("| layer | representation | bits / weight | µs, 1 token | vs dense F16 | µs, 64 tokens | vs dense F16 |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        using var context = new ComputeContext(1);
        foreach (string name in new[] { TensorNames.Up(0), TensorNames.Down(0) })
        {
            var w = source.Weight(name);
            var dense = w.Decode();
            int rows = w.Rows, columns = w.Columns;
            var nm = Pruner.Prune(dense, rows, columns, new SparsityPattern.NOfM(2, 4), PruningMethod.Magnitude);
            var half = Pruner.Prune(dense, rows, columns, new SparsityPattern.Unstructured(0.5), PruningMethod.Magnitude);
            var candidates = new (string Label, LinearWeight Weight)[]
            {
                ("dense F16", PrunedWeights.F16(name, dense, rows, columns)),
                ("dense Q8_0", Block(name, dense, rows, columns, GgmlType.Q8_0)),
                ("2:4, f16 values", PrunedWeights.NOfM(name, nm, 2, 4)),
                ("50 % masked, f16 values", PrunedWeights.Unstructured(name, half)),
                ("dense Q4_0", Block(name, dense, rows, columns, GgmlType.Q4_0)),
                ($"dense {Values4}", UniformWeight.Encode(name, dense, rows, columns, Values4)),
                ($"dense {new UniformScheme(3, 48, false)}", UniformWeight.Encode(name, dense, rows, columns, new UniformScheme(3, 48, false))),
                ($"2:4, values {Values4}", PrunedWeights.NOfM(name, nm, 2, 4, (n, v, r, c) => UniformWeight.Encode(n, v, r, c, Values4))),
            };
            // Round robin: every repetition times each representation once, so load from other processes hits all alike.
            var one = Medians(candidates.Select(c => c.Weight).ToArray(), 1, context, repetitions);
            var batch = Medians(candidates.Select(c => c.Weight).ToArray(), 64, context, Math.Max(5, repetitions / 4));
            for (int i = 0; i < candidates.Length; i++)
            {
                Console.WriteLine($"| {name} [{rows}, {columns}] | {candidates[i].Label} | {candidates[i].Weight.BitsPerWeight:0.00} | {one[i]:0.0} | {one[i] / one[0]:0.00}x | " +
                    $"{batch[i]:0} | {batch[i] / batch[0]:0.00}x |");
            }
        }
        Console.WriteLine();
    }

    private static unsafe BlockWeight Block(string name, float[] values, int rows, int columns, GgmlType type)
    {
        long rowBytes = GgmlTypes.RowBytes(type, columns);
        var buffer = NativeBuffer.Allocate(rowBytes * rows);
        Quantize.Rows(type, values, columns, [], new Span<byte>(buffer.Pointer, checked((int)(rowBytes * rows))));
        return new BlockWeight(new Tensor(name, type, [rows, columns], buffer, 0));
    }

    private static double[] Medians(LinearWeight[] weights, int tokens, ComputeContext context, int repetitions)
    {
        var random = new Random(1);
        int columns = weights[0].Columns, rows = weights[0].Rows;
        var x = Enumerable.Range(0, tokens * columns).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var y = new float[tokens * rows];
        var times = new double[weights.Length][];
        for (int i = 0; i < weights.Length; i++)
        {
            times[i] = new double[repetitions];
            for (int warm = 0; warm < 3; warm++)
                weights[i].Multiply(x, tokens, context, y);
        }
        var clock = new Stopwatch();
        for (int rep = 0; rep < repetitions; rep++)
        {
            for (int i = 0; i < weights.Length; i++)
            {
                clock.Restart();
                weights[i].Multiply(x, tokens, context, y);
                times[i][rep] = clock.Elapsed.TotalMicroseconds;
            }
        }
        return times.Select(t =>
        {
            Array.Sort(t);
            return t[repetitions / 2];
        }).ToArray();
    }

    private static string MethodName(PruningMethod method) => method switch
    {
        PruningMethod.Magnitude => "magnitude",
        PruningMethod.Wanda => "Wanda",
        _ => "SparseGPT",
    };
}
