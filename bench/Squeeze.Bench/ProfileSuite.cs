using System.Diagnostics;
using Squeeze.Formats;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Bench;

/// <summary>Where the time of a 256-token prompt goes: every product of one layer timed alone (× layers), against the
/// whole forward pass; the rest is attention, norms, RoPE and element-wise work. <c>profile --decode FILE</c>: the same
/// for one decode step of that model, every product of every layer (each layer's weights are distinct memory at real
/// sizes), on the weights the runtime decodes with.</summary>
internal static unsafe class ProfileSuite
{
    public static void Run(string[] args)
    {
        if (Program.Value(args, "--decode") is { } decodeFile)
        {
            Decode(decodeFile, Program.Option(args, "--threads", 2), Program.Option(args, "--repetitions", 9));
            return;
        }
        string shared = Program.Shared(args);
        int repetitions = Program.Option(args, "--repetitions", 9);
        int threads = Program.Option(args, "--threads", 2);
        const int tokens = 256;
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- profile --threads {threads}` (ms per 256-token prompt, fastest of {repetitions}: the machine is shared)");
        Console.WriteLine();
        Console.WriteLine("| weights | q | k | v | attn_output | gate | up | down | products | forward | rest |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var file in SpeedSuite.Selected(args, shared))
        {
            using var model = ModelLoader.Load(file);
            var config = model.Config;
            using var context = new ComputeContext(threads);
            int layers = config.LayerCount;
            var names = new[] { TensorNames.Query(0), TensorNames.Key(0), TensorNames.Value(0), TensorNames.AttentionOutput(0), TensorNames.Gate(0), TensorNames.Up(0), TensorNames.Down(0) };
            var times = new List<double>();
            var random = new Random(1);
            var prompt = new int[tokens];
            for (int i = 0; i < tokens; i++)
                prompt[i] = random.Next(config.VocabSize);
            using var runtime = new Transformer(model, new RuntimeOptions { Threads = threads, ContextLength = tokens, BatchSize = tokens });
            for (int i = 0; i < 5; i++) // warm-up: the kernels reach their last JIT tier
            {
                runtime.Reset();
                runtime.Forward(prompt);
            }
            foreach (string name in names)
            {
                Tensor w = model[name];
                var x = new float[tokens * w.Columns];
                for (int i = 0; i < x.Length; i++)
                    x[i] = (float)(random.NextDouble() * 2 - 1);
                var y = new float[tokens * w.Rows];
                times.Add(layers * Median(repetitions, () => MatMul.Multiply(w, x, tokens, context, y)));
            }
            double forward = Median(repetitions, () => { runtime.Reset(); runtime.Forward(prompt); });
            Console.WriteLine($"attention alone (1 thread, all layers): AVX2 {CausalAttention(config, tokens, repetitions, Attention.HeadAvx2):0.00} ms, scalar {CausalAttention(config, tokens, repetitions, Attention.HeadScalar):0.00} ms");
            double products = times.Sum();
            Console.WriteLine($"| {Path.GetFileName(file)} | {string.Join(" | ", times.Select(t => $"{t:0.00}"))} | {products:0.00} | {forward:0.00} | {forward - products:0.00} |");
        }
    }

    /// <summary>One decode step (a token at position 64) against all its products alone, in the runtime's order.</summary>
    private static void Decode(string file, int threads, int repetitions)
    {
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- profile --decode {file} --threads {threads} --repetitions {repetitions}` (ms per decode step, fastest of {repetitions}: the machine is shared)");
        using var model = ModelLoader.Load(file);
        var config = model.Config;
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = threads, ContextLength = 128, BatchSize = 64, KvCache = KvCachePolicy.Parse("f16") });
        var random = new Random(1);
        var prompt = new int[64];
        for (int i = 0; i < prompt.Length; i++)
            prompt[i] = random.Next(config.VocabSize);
        var step = new int[1];
        double decode = FastestOf(repetitions, () =>
        {
            runtime.Reset();
            runtime.Forward(prompt);
        }, () => runtime.Forward(step));
        var names = new List<string>();
        for (int l = 0; l < config.LayerCount; l++)
            names.AddRange([TensorNames.Query(l), TensorNames.Key(l), TensorNames.Value(l), TensorNames.AttentionOutput(l), TensorNames.Gate(l), TensorNames.Up(l), TensorNames.Down(l)]);
        names.Add(model.Contains(TensorNames.Output) ? TensorNames.Output : TensorNames.TokenEmbedding);
        var weights = names.Select(n => model.Weight(n)).Select(w => (LinearWeight?)RowGroupWeight.For(w) ?? w).ToList();
        using var context = new ComputeContext(threads);
        var x = new float[weights.Max(w => w.Columns)];
        var y = new float[weights.Max(w => w.Rows)];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(random.NextDouble() * 2 - 1);
        double products = FastestOf(repetitions, () => { }, () =>
        {
            foreach (var w in weights)
                w.Multiply(x.AsSpan(0, w.Columns), 1, context, y.AsSpan(0, w.Rows));
        });
        double bytes = weights.Sum(w => (double)w.StoredBytes);
        Console.WriteLine($"decode step {decode:0.00} ms, its {weights.Count} products alone {products:0.00} ms ({bytes / products / 1e6:0.0} GB/s), the rest {decode - products:0.00} ms");
        foreach (var w in weights.OfType<IDisposable>())
            w.Dispose();
    }

    /// <summary>The fastest of <paramref name="repetitions"/> timings of <paramref name="timed"/>, each after an untimed
    /// <paramref name="setup"/>, after one untimed warm-up.</summary>
    private static double FastestOf(int repetitions, Action setup, Action timed)
    {
        setup();
        timed();
        var ms = new double[repetitions];
        for (int r = 0; r < repetitions; r++)
        {
            setup();
            long start = Stopwatch.GetTimestamp();
            timed();
            ms[r] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        return ms.Min();
    }

    private delegate void HeadKernel(float* query, float* keys, float* values, int stride, int positions, int headDim, float scale, float* scores, float* output);

    /// <summary>Causal attention of a <paramref name="tokens"/>-token prompt over every head of every layer, on one thread.</summary>
    private static double CausalAttention(ModelConfig config, int tokens, int repetitions, HeadKernel kernel)
    {
        var random = new Random(3);
        var q = new float[tokens * config.QDim];
        var kv = new float[2 * tokens * config.KvDim];
        foreach (var a in new[] { q, kv })
            for (int i = 0; i < a.Length; i++)
                a[i] = (float)(random.NextDouble() * 2 - 1);
        var scores = new float[tokens];
        var output = new float[tokens * config.QDim];
        int group = config.HeadCount / config.KvHeadCount;
        return Median(repetitions, () =>
        {
            fixed (float* pq = q, pk = kv, ps = scores, po = output)
            {
                float* pv = pk + tokens * config.KvDim;
                for (int layer = 0; layer < config.LayerCount; layer++)
                    for (int h = 0; h < config.HeadCount; h++)
                        for (int t = 0; t < tokens; t++)
                            kernel(pq + t * config.QDim + h * config.HeadDim, pk + h / group * config.HeadDim, pv + h / group * config.HeadDim, config.KvDim, t + 1,
                                config.HeadDim, 0.1f, ps, po + t * config.QDim + h * config.HeadDim);
            }
        });
    }

    private static double Median(int repetitions, Action action)
    {
        action();
        var ms = new double[repetitions];
        for (int r = 0; r < repetitions; r++)
        {
            long start = Stopwatch.GetTimestamp();
            action();
            ms[r] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        Array.Sort(ms);
        return ms[0];
    }
}
