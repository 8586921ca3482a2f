using System.Diagnostics;
using System.Globalization;
using Squeeze.Calibration;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.LowRank;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Bench;

/// <summary>
/// Low-rank factorization on stories15M (every 2-D weight of the blocks; token_embd, which is also the classifier, is
/// kept): (a) activation-aware SVD (whitened by the Cholesky factor of the calibration XᵀX) against plain SVD at equal
/// bytes, f16 factors keeping a fraction of each weight's f16 bytes; (b) EoRA's low-rank correction over uniform
/// low-bit bases at ranks 8, 16, 32 (and a plain SVD of the error at the largest rank); (c) the speed of low-rank layers
/// against dense ones at equal bytes, per layer and for the whole model; (r) the randomized SVD against the exact one on token_embd. Calibrated on tinystories-calib, scored on
/// tinystories-eval (ctx 256) against the f32 model. Options: <c>--tokens N</c> (calibration tokens, default 8192),
/// <c>--chunks N</c> (evaluation chunks, default 0: the whole text), <c>--keep a,b</c> (default 0.75,0.5),
/// <c>--bits a,b</c> (EoRA bases, default 3,2), <c>--ranks a,b</c> (default 8,16,32), <c>--parts a,b,c</c>,
/// <c>--repetitions N</c> (speed, default 5), <c>--threads N</c>.
/// </summary>
internal static class LowRankSuite
{
    private const int Group = 32;
    private const double Damping = 0.01;

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int tokens = Program.Option(args, "--tokens", 8192);
        int chunks = Program.Option(args, "--chunks", 0);
        int repetitions = Program.Option(args, "--repetitions", 5);
        double[] keeps = List(args, "--keep", "0.75,0.5").Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        int[] bits = List(args, "--bits", "3,2").Select(int.Parse).ToArray();
        int[] ranks = List(args, "--ranks", "8,16,32").Select(int.Parse).ToArray();
        string[] parts = List(args, "--parts", "a,b,c,r");
        bool quality = parts.Contains("a") || parts.Contains("b");
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- lowrank {string.Join(' ', args)}` (stories15M.bin" + (quality
            ? $"; every blk.* weight replaced, token_embd kept; calibration: {tokens:N0} tokens of tinystories-calib at ctx 256, damping {Damping} of the mean diagonal; " +
              $"scored on {(chunks > 0 ? $"the first {chunks} chunks" : "the whole")} of tinystories-eval, ctx 256, against the f32 model"
            : "") + $"; {threads} threads)");
        Console.WriteLine();

        using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        var names = source.Tensors.Where(t => t.Shape.Length == 2 && t.Name != TensorNames.TokenEmbedding).Select(t => t.Name).ToArray();
        var original = names.ToDictionary(n => n, n => source.Weight(n).Decode());
        long f16Bytes = names.Sum(n => 2L * source.Weight(n).Rows * source.Weight(n).Columns);
        long parameters = names.Sum(n => (long)source.Weight(n).Rows * source.Weight(n).Columns);
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        var evaluation = new EvaluationOptions { ContextLength = 256, MaxChunks = chunks, Threads = threads };

        if (quality)
        {
            string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
            var clock = Stopwatch.StartNew();
            var stats = Calibrator.Run(source, calibText, new CalibrationOptions { ContextLength = 256, MaxTokens = tokens, CollectGram = true, Threads = threads });
            Console.WriteLine($"Calibration: {stats.TokenCount:N0} tokens with XᵀX in {clock.Elapsed.TotalSeconds:0.0} s. Replaced weights: {names.Length} matrices, " +
                $"{parameters:N0} parameters, {f16Bytes:N0} bytes in f16. Bytes and bpw below are those matrices' stored bytes.");
            Console.WriteLine();
            var inputs = new Inputs(stats);
            var context = new Context(source, names, original, inputs, parameters, evalText, evaluation, threads);
            if (parts.Contains("a"))
                ActivationAware(context, keeps, f16Bytes);
            if (parts.Contains("b"))
                Compensation(context, bits, ranks);
        }
        if (parts.Contains("c"))
            Speed(source, names, original, threads, repetitions);
        if (parts.Contains("r"))
            RandomizedAgainstExact(source, threads);
    }

    // The randomized SVD against the exact one on the largest matrix at hand (token_embd, [32000, 288]).
    private static void RandomizedAgainstExact(Model source, int threads)
    {
        var weight = source.Weight(TensorNames.TokenEmbedding);
        int rows = weight.Rows, columns = weight.Columns;
        var m = Array.ConvertAll(weight.Decode(), v => (double)v);
        double total = m.Sum(v => v * v);
        Console.WriteLine($"Randomized SVD (Gaussian sketch, oversampling 10) against the exact one (thin QR, SVD of the {columns} x {columns} factor) on " +
            $"token_embd [{rows}, {columns}], {threads} threads; error = ‖W − W_r‖²_F / ‖W‖²_F:");
        Console.WriteLine();
        Console.WriteLine("| rank | method | power iterations | s | error | error / exact | σ_r / exact σ_r |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (int rank in new[] { 16, 64 })
        {
            var clock = Stopwatch.StartNew();
            var exact = TruncatedSvd.Compute(m, rows, columns, rank, new SvdOptions { Method = SvdMethod.Exact, Threads = threads });
            double exactSeconds = clock.Elapsed.TotalSeconds;
            double exactError = 1 - exact.Values.Sum(v => v * v) / total;
            Console.WriteLine($"| {rank} | exact | | {exactSeconds:0.00} | {exactError:0.0000} | 1.000 | 1.000 |");
            foreach (int iterations in new[] { 0, 1, 2 })
            {
                clock.Restart();
                var randomized = TruncatedSvd.Compute(m, rows, columns, rank, new SvdOptions { Method = SvdMethod.Randomized, PowerIterations = iterations, Threads = threads });
                double seconds = clock.Elapsed.TotalSeconds;
                // ‖W − U_r Σ_r V_rᵀ‖² = ‖W‖² − Σ σ² holds for the randomized factors too (U, V orthonormal, Σ = Uᵀ W V).
                double error = 1 - randomized.Values.Sum(v => v * v) / total;
                Console.WriteLine($"| {rank} | randomized | {iterations} | {seconds:0.00} | {error:0.0000} | {error / exactError:0.000} | {randomized.Values[^1] / exact.Values[^1]:0.000} |");
            }
        }
        Console.WriteLine();
    }

    private sealed record Context(Model Source, string[] Names, Dictionary<string, float[]> Original, Inputs Inputs, long Parameters,
        string EvalText, EvaluationOptions Evaluation, int Threads);

    /// <summary>One variant of the model: its replaced weights, and what the factorization reported.</summary>
    private sealed record Variant(string Label, string Detail, IReadOnlyList<LinearWeight> Weights, double MeanEnergy, double OutputError, double Seconds);

    // (a) plain against activation-aware SVD at equal bytes, with uniform quantization at similar bytes for context.
    private static void ActivationAware(Context c, double[] keeps, long f16Bytes)
    {
        var variants = new List<Variant> { Dense(c, "f16", "dense", n => BlockWeight.Float16(n, c.Original[n], Rows(c, n), Columns(c, n))) };
        foreach (double keep in keeps)
        {
            foreach (var (aware, factorBits) in new[] { (false, 16), (true, 16), (true, 8) })
            {
                var clock = Stopwatch.StartNew();
                var weights = new List<LinearWeight>();
                double energy = 0;
                foreach (string n in c.Names)
                {
                    int rows = Rows(c, n), columns = Columns(c, n);
                    int rank = RankSelection.RankForBytes(rows, columns, (long)(keep * 2L * rows * columns), factorBits);
                    var f = LowRankFactorizer.Factor(c.Original[n], rows, columns, rank, aware ? c.Inputs.Cholesky(n) : null, new SvdOptions { Threads = c.Threads });
                    weights.Add(LowRankEncoder.Weight(n, f, factorBits));
                    energy += f.EnergyCaptured;
                }
                string label = (aware ? "activation-aware SVD" : "plain SVD") + (factorBits == 16 ? "" : $", {factorBits}-bit factors");
                variants.Add(new Variant(label, $"keep {keep:0%} of f16", weights, energy / c.Names.Length, OutputError(c, weights), clock.Elapsed.TotalSeconds));
            }
        }
        foreach (int b in new[] { 8, 4 })
        {
            var scheme = new UniformScheme(b, Group, symmetric: false);
            variants.Add(Dense(c, $"uniform b{b} g{Group}", "importance-weighted rounding",
                n => UniformWeight.Encode(n, c.Original[n], Rows(c, n), Columns(c, n), scheme, c.Inputs.Importance(n))));
        }
        var results = Evaluate(c, variants);
        Console.WriteLine("Activation-aware against plain SVD at equal bytes (f16 factors of each weight's rank for the byte share; energy = mean " +
            "fraction of Σσ² kept, of W for plain and of W·S for activation-aware, before the factors are rounded; 8-bit factors buy about twice the rank; output error = Σ tr(E·H·Eᵀ) / Σ tr(W·H·Wᵀ) over the replaced weights, H = XᵀX / tokens):");
        Console.WriteLine();
        Console.WriteLine("| weights | bytes | of f16 | bpw | energy kept | output error | PPL | mean KLD | same top % | fit s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        for (int i = 0; i < variants.Count; i++)
        {
            var v = variants[i];
            long bytes = v.Weights.Sum(w => w.StoredBytes);
            string energy = double.IsNaN(v.MeanEnergy) ? "" : $"{v.MeanEnergy:0.000}";
            Console.WriteLine($"| {v.Label} ({v.Detail}) | {bytes:N0} | {(double)bytes / f16Bytes:0.0%} | {8.0 * bytes / c.Parameters:0.00} | {energy} | {v.OutputError:0.000e+0} | " +
                $"{results[i].Perplexity:0.0000} | {results[i].KlDivergence!.Mean:0.000000} | {results[i].KlDivergence!.SameTopTokenPercent:0.00} | {v.Seconds:0.0} |");
        }
        Console.WriteLine();
    }

    // (b) EoRA over uniform low-bit bases.
    private static void Compensation(Context c, int[] bits, int[] ranks)
    {
        var variants = new List<Variant>();
        foreach (int b in bits)
        {
            var scheme = new UniformScheme(b, Group, symmetric: false);
            var bases = c.Names.ToDictionary(n => n, n => (LinearWeight)UniformWeight.Encode(n, c.Original[n], Rows(c, n), Columns(c, n), scheme, c.Inputs.Importance(n)));
            variants.Add(Dense(c, $"uniform b{b} g{Group}", "no correction", n => bases[n]));
            foreach (int factorBits in new[] { 16, 4 })
            {
                foreach (int rank in ranks)
                {
                    var clock = Stopwatch.StartNew();
                    var weights = c.Names.Select(n => (LinearWeight)LowRankEncoder.Compensate(bases[n], c.Original[n], rank, c.Inputs.Eigen(n),
                        new SvdOptions { Threads = c.Threads }, factorBits)).ToList();
                    variants.Add(new Variant($"uniform b{b} g{Group}", $"+ EoRA r{rank}{(factorBits == 16 ? "" : $", {factorBits}-bit factors")}", weights, double.NaN,
                        OutputError(c, weights), clock.Elapsed.TotalSeconds));
                }
            }
            int largest = ranks.Max();
            var plainClock = Stopwatch.StartNew();
            var plain = c.Names.Select(n =>
            {
                var q = bases[n].Decode();
                var error = c.Original[n].Select((v, i) => v - q[i]).ToArray();
                var correction = LowRankEncoder.Truncate(n, error, Rows(c, n), Columns(c, n), largest, null, new SvdOptions { Threads = c.Threads });
                return (LinearWeight)new SumWeight(n, [bases[n], correction]);
            }).ToList();
            variants.Add(new Variant($"uniform b{b} g{Group}", $"+ plain SVD of the error r{largest}", plain, double.NaN, OutputError(c, plain), plainClock.Elapsed.TotalSeconds));
            if (b < 8)
            {
                var next = new UniformScheme(b + 1, Group, symmetric: false);
                variants.Add(Dense(c, $"uniform b{b + 1} g{Group}", "no correction (one more bit)",
                    n => UniformWeight.Encode(n, c.Original[n], Rows(c, n), Columns(c, n), next, c.Inputs.Importance(n))));
            }
        }
        var results = Evaluate(c, variants);
        Console.WriteLine($"EoRA: a quantized base (uniform codes, importance-weighted rounding) plus a rank-r correction of its error fitted in the " +
            "eigenspace of XᵀX (SumWeight; f16 factors, or 4-bit uniform factors), against the base alone, a plain SVD of the error, and one more bit:");
        Console.WriteLine();
        Console.WriteLine("| base | correction | bytes | bpw | output error | PPL | mean KLD | KLD / base | same top % | fit s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        double baseKld = double.NaN;
        for (int i = 0; i < variants.Count; i++)
        {
            var v = variants[i];
            double kld = results[i].KlDivergence!.Mean;
            if (v.Detail == "no correction")
                baseKld = kld;
            long bytes = v.Weights.Sum(w => w.StoredBytes);
            Console.WriteLine($"| {v.Label} | {v.Detail} | {bytes:N0} | {8.0 * bytes / c.Parameters:0.000} | {v.OutputError:0.000e+0} | {results[i].Perplexity:0.0000} | " +
                $"{kld:0.000000} | {kld / baseKld:0.000} | {results[i].KlDivergence!.SameTopTokenPercent:0.00} | {v.Seconds:0.0} |");
        }
        Console.WriteLine();
    }

    // (c) low-rank layers against dense ones at equal bytes: each dense type beside f16 factors of the rank its bytes buy.
    private static void Speed(Model source, string[] names, Dictionary<string, float[]> original, int threads, int repetitions)
    {
        GgmlType[] denseTypes = [GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0];
        string[] layerNames = ["blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "blk.0.attn_q.weight"];
        Console.WriteLine($"Speed at equal bytes: each dense type beside f16 factors of the largest rank that fits its bytes (median of {repetitions} runs " +
            $"after a warm-up, {threads} threads; the machine is shared, so timings are noisy). One layer, µs per product:");
        Console.WriteLine();
        Console.WriteLine("| layer | weights | rank | bytes | 1 token µs | 64 tokens µs | 1 token vs dense | 64 tokens vs dense |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        using var context = new ComputeContext(threads);
        foreach (string n in layerNames)
        {
            var weight = source.Weight(n);
            int rows = weight.Rows, columns = weight.Columns;
            foreach (var type in denseTypes)
            {
                var dense = Dense(n, original[n], rows, columns, type);
                int rank = RankSelection.RankForBytes(rows, columns, dense.StoredBytes);
                var f = LowRankFactorizer.Factor(original[n], rows, columns, rank);
                var lowRank = LowRankWeight.Float16(n, f.A, f.B, rows, rank, columns);
                var (d1, d64) = (Time(dense, 1, context, repetitions), Time(dense, 64, context, repetitions));
                var (l1, l64) = (Time(lowRank, 1, context, repetitions), Time(lowRank, 64, context, repetitions));
                Console.WriteLine($"| {n} [{rows}, {columns}] | {type} dense | | {dense.StoredBytes:N0} | {d1:0.0} | {d64:0.0} | | |");
                Console.WriteLine($"| | lowrank f16 | {rank} | {lowRank.StoredBytes:N0} | {l1:0.0} | {l64:0.0} | {d1 / l1:0.00}x | {d64 / l64:0.00}x |");
            }
        }
        Console.WriteLine();
        Console.WriteLine("Whole model (every blk.* weight replaced; prompt 256 tokens as one batch, decode 128 tokens one at a time; SpeedBenchmark):");
        Console.WriteLine();
        Console.WriteLine("| weights | bytes | prompt tok/s | decode tok/s |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var type in denseTypes)
        {
            var dense = names.Select(n => (LinearWeight)Dense(n, original[n], source.Weight(n).Rows, source.Weight(n).Columns, type)).ToList();
            var lowRank = names.Select(n =>
            {
                int rows = source.Weight(n).Rows, columns = source.Weight(n).Columns;
                int rank = RankSelection.RankForBytes(rows, columns, dense.First(d => d.Name == n).StoredBytes);
                var f = LowRankFactorizer.Factor(original[n], rows, columns, rank);
                return (LinearWeight)LowRankWeight.Float16(n, f.A, f.B, rows, rank, columns);
            }).ToList();
            foreach (var (label, weights) in new[] { ($"{type} dense", dense), ($"lowrank f16 at {type}'s bytes", lowRank) })
            {
                using var model = source.WithWeights(weights);
                var r = SpeedBenchmark.Run(model, threads, promptTokens: 256, decodeTokens: 128, repetitions);
                Console.WriteLine($"| {label} | {weights.Sum(w => w.StoredBytes):N0} | {r.PromptTokensPerSecond:0} | {r.DecodeTokensPerSecond:0} |");
            }
        }
        Console.WriteLine();
    }

    // Median µs of one product of `tokens` rows.
    private static double Time(LinearWeight weight, int tokens, ComputeContext context, int repetitions)
    {
        var x = new float[tokens * weight.Columns];
        for (int i = 0; i < x.Length; i++)
            x[i] = MathF.Sin(i * 0.37f);
        var y = new float[tokens * weight.Rows];
        int calls = Math.Max(1, 2000 / tokens);
        var samples = new List<double>();
        for (int r = 0; r <= repetitions; r++)
        {
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < calls; i++)
                weight.Multiply(x, tokens, context, y);
            if (r > 0)
                samples.Add(Stopwatch.GetElapsedTime(start).TotalMicroseconds / calls);
        }
        samples.Sort();
        return samples[samples.Count / 2];
    }

    private static Variant Dense(Context c, string label, string detail, Func<string, LinearWeight> encode)
    {
        var clock = Stopwatch.StartNew();
        var weights = c.Names.Select(encode).ToList();
        return new Variant(label, detail, weights, double.NaN, OutputError(c, weights), clock.Elapsed.TotalSeconds);
    }

    // A GGUF-typed weight over its own buffer.
    private static unsafe BlockWeight Dense(string name, float[] values, int rows, int columns, GgmlType type)
    {
        long bytes = GgmlTypes.RowBytes(type, columns) * rows;
        var buffer = NativeBuffer.Allocate(bytes);
        Quantize.Rows(type, values, columns, [], new Span<byte>(buffer.Pointer, checked((int)bytes)));
        return new BlockWeight(new Tensor(name, type, [rows, columns], buffer, 0));
    }

    private static IReadOnlyList<EvaluationResult> Evaluate(Context c, List<Variant> variants)
    {
        var models = variants.Select(v => c.Source.WithWeights(v.Weights)).ToArray();
        try
        {
            return Evaluator.EvaluateMany(models, c.EvalText, c.Evaluation, c.Source);
        }
        finally
        {
            foreach (var m in models)
                m.Dispose();
        }
    }

    // Σ tr(E·H·Eᵀ) / Σ tr(W·H·Wᵀ) over the replaced weights (H = XᵀX / tokens, undamped).
    private static double OutputError(Context c, IReadOnlyList<LinearWeight> weights)
    {
        double error = 0, signal = 0;
        foreach (var w in weights)
        {
            var h = c.Inputs.Hessian(w.Name);
            var decoded = w.Decode();
            var reference = c.Original[w.Name];
            int columns = w.Columns;
            var e = new double[columns];
            var x = new double[columns];
            for (int r = 0; r < w.Rows; r++)
            {
                for (int j = 0; j < columns; j++)
                {
                    x[j] = reference[r * columns + j];
                    e[j] = x[j] - decoded[r * columns + j];
                }
                error += Quadratic(h, e);
                signal += Quadratic(h, x);
            }
        }
        return error / signal;
    }

    // vᵀ·H·v.
    private static double Quadratic(double[] h, double[] v)
    {
        int n = v.Length;
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            double row = LinearAlgebra.Dot(new ReadOnlySpan<double>(h, i * n, n), v);
            sum += v[i] * row;
        }
        return sum;
    }

    private static int Rows(Context c, string name) => c.Source.Weight(name).Rows;

    private static int Columns(Context c, string name) => c.Source.Weight(name).Columns;

    private static string[] List(string[] args, string name, string fallback)
        => (Program.Value(args, name) ?? fallback).Split(',', StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Per layer input (shared by q/k/v and by gate/up): the Hessian, its whitenings and the importance, each
    /// computed once.</summary>
    private sealed class Inputs(CalibrationStatistics statistics)
    {
        private readonly Dictionary<(int, LinearInput), double[]> hessians = [];
        private readonly Dictionary<(int, LinearInput), Whitening> cholesky = [];
        private readonly Dictionary<(int, LinearInput), Whitening> eigen = [];

        public double[] Hessian(string name)
        {
            var key = Key(name);
            return hessians.TryGetValue(key, out var h) ? h : hessians[key] = statistics.Get(key.Item1, key.Item2).Hessian();
        }

        public Whitening Cholesky(string name)
        {
            var key = Key(name);
            return cholesky.TryGetValue(key, out var w) ? w : cholesky[key] = Whitening.Cholesky(Hessian(name), statistics.Get(key.Item1, key.Item2).Width, Damping);
        }

        public Whitening Eigen(string name)
        {
            var key = Key(name);
            return eigen.TryGetValue(key, out var w) ? w : eigen[key] = Whitening.Eigen(Hessian(name), statistics.Get(key.Item1, key.Item2).Width, Damping);
        }

        public float[] Importance(string name)
        {
            var key = Key(name);
            return statistics.Get(key.Item1, key.Item2).Importance();
        }

        private static (int, LinearInput) Key(string name)
            => LinearInputs.TryGet(name, out int layer, out var kind) ? (layer, kind) : throw new ArgumentException($"{name} is not a linear layer");
    }
}
