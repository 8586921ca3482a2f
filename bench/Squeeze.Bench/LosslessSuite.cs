using System.Diagnostics;
using Squeeze.Calibration;
using Squeeze.Coding;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Bench;

/// <summary>
/// Rotations and lossless coding on stories15M (issue 8): (a) DFloat11 size ratio and speed on stories15M in BF16 and
/// on a synthetic BF16 tensor with LLM-like statistics; (b) bits per weight of uniform codes before and after entropy
/// coding; (c) KLD and perplexity of uniform 2/3/4-bit GPTQ with and without a randomized Hadamard rotation at the same
/// bits per weight; (d) decode tokens/s of rotated against unrotated weights (and DFloat11 against BF16).
/// </summary>
internal static class LosslessSuite
{
    private static readonly string[] Kinds = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

    private enum Rotation { None, Blocks, PermutedBlocks }

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int tokens = Program.Option(args, "--tokens", 16384);
        int chunks = Program.Option(args, "--chunks", 60);
        int group = Program.Option(args, "--group", 32);
        int repetitions = Program.Option(args, "--repetitions", 3);
        string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        if (args.Contains("--overhead"))
        {
            Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- lossless --overhead --repetitions {repetitions}` (one thread; fastest of {repetitions} interleaved runs of 200 calls each, after 200 warm-up calls)");
            Console.WriteLine();
            OverheadTable(repetitions);
            return;
        }
        using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- lossless --threads {threads} --tokens {tokens} --chunks {chunks} --group {group} --repetitions {repetitions}` " +
            $"(stories15M.bin; {threads} threads; timings are medians of {repetitions} on a shared 2-core machine, so noisy)");
        Console.WriteLine();
        DFloat11Table(source, threads, repetitions);

        var clock = Stopwatch.StartNew();
        var stats = Calibrator.Run(source, calibText, new CalibrationOptions { ContextLength = 256, MaxTokens = tokens, CollectGram = true, Threads = threads });
        Console.Error.WriteLine($"calibration: {stats.TokenCount:N0} tokens, {clock.Elapsed.TotalSeconds:0.0} s");
        var names = Enumerable.Range(0, source.Config.LayerCount).SelectMany(l => Kinds.Select(k => $"blk.{l}.{k}.weight")).ToArray();
        long parameters = names.Sum(n => (long)source.Weight(n).Rows * source.Weight(n).Columns);

        var rows = new List<(int Bits, Rotation Rotation, IReadOnlyList<LinearWeight> Weights, double Seconds)>();
        foreach (int bits in new[] { 2, 3, 4 })
        {
            foreach (var rotation in Enum.GetValues<Rotation>())
            {
                clock.Restart();
                var weights = names.AsParallel().AsOrdered().WithDegreeOfParallelism(Math.Max(1, threads))
                    .Select(n => Quantize(source, stats, n, new UniformScheme(bits, group, symmetric: false), rotation)).ToArray();
                rows.Add((bits, rotation, weights, clock.Elapsed.TotalSeconds));
                Console.Error.WriteLine($"{bits}-bit {rotation}: {clock.Elapsed.TotalSeconds:0.0} s");
            }
        }

        var models = rows.Select(r => source.WithWeights(r.Weights)).ToArray();
        try
        {
            var results = Evaluator.EvaluateMany(models, evalText, new EvaluationOptions { ContextLength = 256, MaxChunks = chunks, Threads = threads }, source);
            Console.WriteLine($"Uniform g{group} asymmetric codes for the {names.Length} linear weights of the blocks ({parameters:N0} parameters; the embedding stays f32), " +
                $"GPTQ on the uniform grid (act-order, damping 0.01) under the calibration Hessian ({stats.TokenCount:N0} tokens of tinystories-calib, ctx 256), " +
                $"rotated: the same after W′ = W·Fᵀ, H′ = F·H·Fᵀ with F = randomized Hadamard (seed 1; blocks of 32 for 288 columns, 256 for 768). " +
                $"Scored on the first {results[0].Chunks} chunks of tinystories-eval at ctx 256 against the f32 model. " +
                "bpw counts the codes, scales and mins of those tensors; entropy bpw is the same weights with their codes rANS-coded (lossless, same KLD).");
            Console.WriteLine();
            Console.WriteLine("| bits | rotation | bpw | entropy-coded bpw | code bits after coding | PPL | mean KLD | same top % | quantize s |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            for (int i = 0; i < rows.Count; i++)
            {
                var (bits, rotation, weights, seconds) = rows[i];
                var uniforms = weights.Select(w => w is RotatedWeight r ? (UniformWeight)r.Inner : (UniformWeight)w).ToArray();
                long stored = uniforms.Sum(u => u.StoredBytes);
                var coded = uniforms.Select(u => EntropyCodedWeight.Encode(u, threads: threads)).ToArray();
                long codedBytes = coded.Sum(c => c.StoredBytes);
                long scaleBytes = uniforms.Sum(u => 2L * (u.Scales.Length + u.Mins.Length));
                var k = results[i].KlDivergence!;
                Console.WriteLine($"| {bits} | {Label(rotation)} | {8.0 * stored / parameters:0.000} | {8.0 * codedBytes / parameters:0.000} | " +
                    $"{8.0 * (codedBytes - scaleBytes) / parameters:0.000} | {results[i].Perplexity:0.0000} | {k.Mean:0.000000} | {k.SameTopTokenPercent:0.00} | {seconds:0.0} |");
            }
            Console.WriteLine();
            SpeedTable(source, models, rows.Select(r => (r.Bits, r.Rotation)).ToArray(), threads, repetitions);
        }
        finally
        {
            foreach (var model in models)
                model.Dispose();
        }
    }

    private static string Label(Rotation rotation) => rotation switch
    {
        Rotation.None => "none",
        Rotation.Blocks => "Hadamard blocks",
        _ => "permuted Hadamard blocks",
    };

    private static LinearWeight Quantize(Model source, CalibrationStatistics stats, string name, UniformScheme scheme, Rotation rotation)
    {
        var weight = source.Weight(name);
        var values = weight.Decode();
        LinearInputs.TryGet(name, out int layer, out var kind);
        var hessian = stats.Get(layer, kind).Hessian();
        var options = new GptqOptions { ActivationOrder = true, Threads = 1 };
        if (rotation == Rotation.None)
            return RotatedQuantizer.QuantizeUniform(name, values, weight.Rows, weight.Columns, scheme, hessian, options);
        return RotatedQuantizer.Quantize(name, values, weight.Rows, scheme, new RandomizedHadamard(weight.Columns, 1, rotation == Rotation.PermutedBlocks), hessian, options);
    }

    private static unsafe BlockWeight ToBf16(string name, float[] values, int rows, int columns)
    {
        var buffer = NativeBuffer.Allocate(2L * values.Length);
        var bits = new Span<ushort>(buffer.Pointer, values.Length);
        for (int i = 0; i < values.Length; i++)
            bits[i] = HalfConversions.F32ToBf16(values[i]);
        return new BlockWeight(new Tensor(name, GgmlType.BF16, [rows, columns], buffer, 0));
    }

    /// <summary>[rows, columns] values shaped like an LLM's linear weights: per-row standard deviations log-normal
    /// around 0.02 (σ of the log 0.3), Gaussian values, and 0.1% outliers 10 times larger.</summary>
    private static float[] LlmLike(int rows, int columns, int seed)
    {
        var rng = new Random(seed);
        var values = new float[(long)rows * columns];
        for (int r = 0; r < rows; r++)
        {
            double scale = 0.02 * Math.Exp(0.3 * Gaussian(rng));
            for (int c = 0; c < columns; c++)
                values[(long)r * columns + c] = (float)(Gaussian(rng) * scale * (rng.NextDouble() < 0.001 ? 10 : 1));
        }
        return values;
    }

    private static double Gaussian(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    private static unsafe void DFloat11Table(Model source, int threads, int repetitions)
    {
        var stories = source.Tensors.Where(t => t.Shape.Length == 2).Select(t => t.Name).Concat(source.Weights.Select(w => w.Name))
            .Select(n => source.Weight(n)).Select(w => ToBf16(w.Name, w.Decode(), w.Rows, w.Columns)).ToArray();
        var synthetic = new[] { ToBf16("synthetic", LlmLike(4096, 4096, 1), 4096, 4096) };
        Console.WriteLine("DFloat11 (exponents rANS-coded, sign and mantissa raw; bit-exact round trip checked on every tensor):");
        Console.WriteLine();
        Console.WriteLine("| tensors | BF16 bytes | coded bytes | ratio | exponent bits / value | encode MB/s | decode MB/s |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var (label, weights) in new[] { ("stories15M, every matrix in BF16", stories), ("synthetic 4096×4096, LLM-like", synthetic) })
        {
            long bf16 = weights.Sum(w => w.StoredBytes), values = weights.Sum(w => (long)w.Rows * w.Columns);
            var encodeSeconds = new List<double>();
            var decodeSeconds = new List<double>();
            long coded = 0, exponentBytes = 0;
            for (int rep = 0; rep < repetitions; rep++)
            {
                var clock = Stopwatch.StartNew();
                var encoded = weights.Select(w => DFloat11Weight.Encode(w, threads: threads)).ToArray();
                encodeSeconds.Add(clock.Elapsed.TotalSeconds);
                var parts = encoded.Select(e => e.Code(threads)).ToArray();
                coded = encoded.Sum(e => e.StoredBytes);
                exponentBytes = parts.Sum(p => p.Exponents.Streams.LongLength);
                clock.Restart();
                var decoded = encoded.Select((e, i) => DFloat11Weight.Decode(e.Name, e.Rows, e.Columns, parts[i].SignMantissa, parts[i].Exponents, e.ChunkRows, threads)).ToArray();
                decodeSeconds.Add(clock.Elapsed.TotalSeconds);
                for (int i = 0; i < weights.Length; i++)
                {
                    var a = new ReadOnlySpan<byte>(weights[i].Tensor.Data, (int)weights[i].StoredBytes);
                    var b = new ReadOnlySpan<byte>(decoded[i].Decoded.Tensor.Data, (int)weights[i].StoredBytes);
                    if (!a.SequenceEqual(b))
                        throw new InvalidOperationException($"{weights[i].Name}: DFloat11 round trip differs");
                }
            }
            Console.WriteLine($"| {label} | {bf16:N0} | {coded:N0} | {100.0 * coded / bf16:0.0}% | {8.0 * exponentBytes / values:0.000} | " +
                $"{bf16 / 1e6 / Median(encodeSeconds):0} | {bf16 / 1e6 / Median(decodeSeconds):0} |");
        }
        Console.WriteLine();
    }

    private static void SpeedTable(Model source, Model[] models, (int Bits, Rotation Rotation)[] labels, int threads, int repetitions)
    {
        var bf16 = source.Tensors.Where(t => t.Shape.Length == 2 && t.Name != TensorNames.TokenEmbedding).Select(t => source.Weight(t.Name))
            .Select(w => ToBf16(w.Name, w.Decode(), w.Rows, w.Columns)).ToArray();
        using var bf16Model = source.WithWeights(bf16);
        using var dfloat11Model = source.WithWeights(bf16.Select(w => DFloat11Weight.Encode(w, threads: threads)));
        var rows = new List<(string Label, Model Model)> { ("f32 (source)", source), ("BF16 (every block matrix)", bf16Model), ("DFloat11 (decoded at load to BF16)", dfloat11Model) };
        for (int i = 0; i < models.Length; i++)
            rows.Add(($"uniform {labels[i].Bits}-bit, rotation {Label(labels[i].Rotation)}", models[i]));
        Console.WriteLine($"Decode speed (prompt 64 tokens, then 64 decoded; {threads} threads; medians of {repetitions}). Uniform weights run through the decoded-row product; " +
            "a rotation adds one O(n log n) transform of each token's activations per weight:");
        Console.WriteLine();
        Console.WriteLine("| weights | prompt tok/s | decode tok/s |");
        Console.WriteLine("|---|---|---|");
        foreach (var (label, model) in rows)
        {
            var r = SpeedBenchmark.Run(model, threads, promptTokens: 64, decodeTokens: 64, repetitions);
            Console.WriteLine($"| {label} | {r.PromptTokensPerSecond:0} | {r.DecodeTokensPerSecond:0} |");
        }
        Console.WriteLine();
    }

    /// <summary>The rotation's cost in isolation: one token's product with a uniform 4-bit g32 weight of each stories15M
    /// shape, with and without the rotation, and the transform alone.</summary>
    private static void OverheadTable(int repetitions)
    {
        const int calls = 200;
        Console.WriteLine("| shape (rows × columns) | transform µs | uniform product µs | rotated product µs | overhead |");
        Console.WriteLine("|---|---|---|---|---|");
        using var context = new ComputeContext(1);
        foreach (var (rows, columns) in new[] { (288, 288), (768, 288), (288, 768) })
        {
            var rng = new Random(rows + columns);
            var values = Enumerable.Range(0, rows * columns).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.1f).ToArray();
            var rotation = new RandomizedHadamard(columns, 1, permute: true);
            var rotated = RotatedQuantizer.Quantize("w", values, rows, new UniformScheme(4, 32, false), rotation, []);
            var plain = (UniformWeight)rotated.Inner;
            var x = Enumerable.Range(0, columns).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            var transformed = new float[columns];
            var y = new float[rows];
            // Fastest of the runs, the three calls interleaved run by run: on a shared machine preemption only adds time.
            var best = new double[3];
            Array.Fill(best, double.PositiveInfinity);
            Action[] actions = [() => rotation.Forward<float>(x, transformed), () => plain.Multiply(x, 1, context, y), () => rotated.Multiply(x, 1, context, y)];
            foreach (var call in actions)
            {
                for (int i = 0; i < calls; i++) // warm-up: let the JIT reach its final tier
                    call();
            }
            for (int rep = 0; rep < repetitions; rep++)
            {
                for (int k = 0; k < actions.Length; k++)
                {
                    var clock = Stopwatch.StartNew();
                    for (int i = 0; i < calls; i++)
                        actions[k]();
                    best[k] = Math.Min(best[k], clock.Elapsed.TotalMicroseconds / calls);
                }
            }
            var (transform, product, rotatedProduct) = (best[0], best[1], best[2]);
            Console.WriteLine($"| {rows} × {columns} | {transform:0.00} | {product:0.0} | {rotatedProduct:0.0} | {100 * (rotatedProduct / product - 1):+0.0;-0.0}% |");
        }
        Console.WriteLine();
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
