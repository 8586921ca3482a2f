using System.Diagnostics;
using System.IO.Hashing;
using Squeeze.Calibration;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Bench;

/// <summary>
/// GPTQ's speed per weight matrix at real layer shapes (TinyLlama-1.1B's attention 2048×2048, ffn_gate/up 5632×2048,
/// ffn_down 2048×5632), per grid type and refinement passes. The weights are Gaussian; the Hessian is XᵀX / n of random
/// correlated activations (per-column scales spread over an order of magnitude plus a shared rank-8 part), prepared
/// once per width outside the timing, as the compressor shares one between the matrices that read the same input. Each
/// cell: the median wall and process CPU seconds of the repetitions, the round-to-nearest fit of the same grid (the
/// block-scale search GPTQ calls once per block) for scale, and a hash of the packed bytes so that two builds can be
/// compared for identical output.
/// </summary>
internal static class GptqSpeedSuite
{
    public static void Run(string[] args)
    {
        int repetitions = Program.Option(args, "--repetitions", 3);
        int threads = Program.Option(args, "--threads", 2);
        int tokens = Program.Option(args, "--tokens", 1024);
        var shapes = (Program.Value(args, "--shapes") ?? "2048x2048,5632x2048,2048x5632").Split(',')
            .Select(s => s.Split('x')).Select(p => (Rows: int.Parse(p[0]), Columns: int.Parse(p[1]))).ToArray();
        var types = (Program.Value(args, "--types") ?? "Q4_K,Q6_K").Split(',').Select(Enum.Parse<GgmlType>).ToArray();
        var refines = (Program.Value(args, "--refine") ?? "0,4").Split(',').Select(int.Parse).ToArray();
        if (args.Contains("--kernels"))
        {
            Kernels(repetitions);
            return;
        }

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- gptq-speed {string.Join(' ', args)}` "
            + $"({threads} threads, Hessian from {tokens} random tokens, median of {repetitions}; wall s / CPU s)");
        Console.WriteLine();
        Console.WriteLine("| rows × columns | type | refine | GPTQ wall / CPU s | round-to-nearest wall s | output bytes (XxHash64) |");
        Console.WriteLine("|---|---|---|---|---|---|");
        var hessians = new Dictionary<int, GptqHessian>();
        foreach (var (rows, columns) in shapes)
        {
            if (!hessians.TryGetValue(columns, out var hessian))
            {
                hessian = GptqHessian.Prepare(RandomHessian(columns, tokens, seed: columns), columns, 0.01, activationOrder: true, threads);
                hessians[columns] = hessian;
            }
            var weights = RandomWeights(rows, columns, seed: rows * 7 + columns);
            foreach (var type in types)
            {
                var grid = BlockGrid.For(type);
                var importance = hessian.Diagonal;
                var rtn = Median(repetitions, () => Gptq.RoundToNearest(weights, rows, columns, grid, importance, out _));
                foreach (int refine in refines)
                {
                    byte[] data = [];
                    var options = new GptqOptions { RefinePasses = refine, Threads = threads, Importance = importance };
                    var time = Median(repetitions, () => data = Gptq.Quantize(weights, rows, hessian, grid, options).Data);
                    Console.WriteLine($"| {rows} × {columns} | {type} | {refine} | {time.Wall:0.00} / {time.Cpu:0.00} | {rtn.Wall:0.00} | {XxHash64.HashToUInt64(data):x16} |");
                    Console.Out.Flush();
                }
            }
        }
    }

    // Each kernel of GPTQ's path against its definition (or the code it replaced), on one thread: GPTQ's lazy update of a
    // 32-row tile by a batch of 256 columns over 2048 columns; the refinement's residual of 32 rows against 2048 rows of H;
    // the factorization of a 2048-wide H (Cholesky, then the triangular inverse); and the output error e_rᵀ H e_r of 256
    // rows, against the double DotRows of 32-row tiles it replaced.
    private static void Kernels(int repetitions)
    {
        const int Rows = 32, Count = 256, N = 2048, ErrorRows = 256;
        var random = new Random(1);
        double[] Fill(long length) => [.. Enumerable.Range(0, (int)length).Select(_ => Gaussian(random))];
        var c = Fill(Rows * Count);
        var x = Fill((long)Count * N);
        var y = Fill((long)Rows * N);
        var h = Fill((long)N * N);
        var d = new double[Rows * N];
        var spd = RandomHessian(N, 1024, seed: 3);
        for (int i = 0; i < N; i++)
            spd[(long)i * N + i] += 0.01;
        var factor = (double[])spd.Clone();
        LinearAlgebra.CholeskyLower(factor, N, 1);
        var upper = LinearAlgebra.Transpose(factor, N, N);
        var w = RandomWeights(ErrorRows, N, seed: 4);
        var q = w.Select(v => v + (float)(0.001 * Gaussian(random))).ToArray();
        var forms = new double[ErrorRows];
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- gptq-speed --kernels` (one thread, median of {repetitions}; G multiply-adds of the definition per CPU second)");
        Console.WriteLine();
        Console.WriteLine("| product | definition (or the code it replaced) | kernel | speed-up |");
        Console.WriteLine("|---|---|---|---|");
        void Row(string name, double work, Action reference, Action grouped)
        {
            double slow = work / Median(repetitions, reference).Cpu / 1e9, fast = work / Median(repetitions, grouped).Cpu / 1e9;
            Console.WriteLine($"| {name} | {slow:0.00} | {fast:0.00} | {fast / slow:0.0} |");
            Console.Out.Flush();
        }
        Row($"y[{Rows}, {N}] −= c[{Rows}, {Count}] · x[{Count}, {N}] (SubtractProducts)", (double)Rows * Count * N,
            () => LinearAlgebra.SubtractProductsReference(c, 0, Count, x, 0, N, Rows, Count, N, y, 0, N),
            () => LinearAlgebra.SubtractProducts(c, 0, Count, x, 0, N, Rows, Count, N, y, 0, N));
        Row($"d[{Rows}, {N}] = y[{Rows}, {N}] · H[{N}, {N}]ᵀ (DotRows)", (double)Rows * N * N,
            () => LinearAlgebra.DotRowsReference(y, 0, N, h, 0, N, Rows, N, N, d, 0, N),
            () => LinearAlgebra.DotRows(y, 0, N, h, 0, N, Rows, N, N, d, 0, N));
        Row($"H[{N}, {N}] = L·Lᵀ (CholeskyLower, same bits)", (double)N * N * N / 6,
            () => LinearAlgebra.CholeskyLowerReference((double[])spd.Clone(), N),
            () => LinearAlgebra.CholeskyLower((double[])spd.Clone(), N, 1));
        Row($"U = V⁻¹, V [{N}, {N}] upper (InvertUpper, same bits)", (double)N * N * N / 6,
            () => LinearAlgebra.InvertUpperReference(upper, N),
            () => LinearAlgebra.InvertUpper(upper, N, 1));
        Row($"e_rᵀ H e_r for {ErrorRows} rows of {N} (QuadraticForms, f32, against double DotRows)", (double)ErrorRows * N * N,
            () =>
            {
                var e = new double[(long)Rows * N];
                var he = new double[(long)Rows * N];
                for (int r0 = 0; r0 < ErrorRows; r0 += Rows)
                {
                    for (long i = 0; i < e.LongLength; i++)
                        e[i] = (double)w[r0 * N + i] - q[r0 * N + i];
                    LinearAlgebra.DotRows(e, 0, N, spd, 0, N, Rows, N, N, he, 0, N);
                    for (int t = 0; t < Rows; t++)
                        forms[r0 + t] = LinearAlgebra.Dot(e.AsSpan(t * N, N), he.AsSpan(t * N, N));
                }
            },
            () => LinearAlgebra.QuadraticForms(spd, N, w, q, ErrorRows, forms, 1));
    }

    private static float[] RandomWeights(int rows, int columns, int seed)
    {
        var random = new Random(seed);
        var w = new float[(long)rows * columns];
        for (long i = 0; i < w.LongLength; i++)
            w[i] = (float)(0.02 * Gaussian(random));
        return w;
    }

    // H = XᵀX / tokens for X [tokens, n] with x_t = s ⊙ (z_t + A c_t): z [n] and c [8] standard normal, A [n, 8] random, s log-normal.
    private static double[] RandomHessian(int n, int tokens, int seed)
    {
        const int Rank = 8;
        var random = new Random(seed);
        var scale = new double[n];
        var a = new double[n * Rank];
        for (int i = 0; i < n; i++)
            scale[i] = Math.Exp(0.75 * Gaussian(random));
        for (int i = 0; i < a.Length; i++)
            a[i] = 0.5 * Gaussian(random);
        var xt = new float[(long)n * tokens]; // [n, tokens]: Xᵀ
        var c = new double[Rank];
        for (int t = 0; t < tokens; t++)
        {
            for (int k = 0; k < Rank; k++)
                c[k] = Gaussian(random);
            for (int i = 0; i < n; i++)
            {
                double x = Gaussian(random);
                for (int k = 0; k < Rank; k++)
                    x += a[i * Rank + k] * c[k];
                xt[(long)i * tokens + t] = (float)(scale[i] * x);
            }
        }
        var gram = new float[(long)n * n];
        LinearAlgebra.MultiplyTransposed(xt, xt, n, tokens, n, gram, Environment.ProcessorCount);
        var h = new double[(long)n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                // Symmetric exactly: each pair from the one product element of the upper triangle.
                float v = i <= j ? gram[(long)i * n + j] : gram[(long)j * n + i];
                h[(long)i * n + j] = (double)v / tokens;
            }
        }
        return h;
    }

    private static double Gaussian(Random random) => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());

    private static (double Wall, double Cpu) Median(int repetitions, Action action)
    {
        var walls = new double[repetitions];
        var cpus = new double[repetitions];
        for (int r = 0; r < repetitions; r++)
        {
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            long start = Stopwatch.GetTimestamp();
            action();
            walls[r] = Stopwatch.GetElapsedTime(start).TotalSeconds;
            cpus[r] = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        }
        Array.Sort(walls);
        Array.Sort(cpus);
        return (walls[repetitions / 2], cpus[repetitions / 2]);
    }
}
