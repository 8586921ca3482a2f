using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Bench;

/// <summary>
/// The quantizers alone, one thread, against llama.cpp's (<c>ggml_quantize_chunk</c> of the CPU backend LLamaSharp
/// ships, called directly: without an importance matrix it runs llama.cpp's <c>quantize_row_*_ref</c>), on the same rows
/// of the 1.1B shape's first layer (<see cref="ShapesSuite"/>). Each repetition times Squeeze and llama.cpp one after the
/// other and takes the ratio; the table gives medians. The SHA-256 of Squeeze's bytes shows that a faster quantizer
/// writes the same file; the squared error of each tool's encoding, Σ(x − x̂)² ÷ Σx² over the same rows, shows what
/// Squeeze's refinement of llama.cpp's search buys for its time. The last columns time Squeeze with llama.cpp's search
/// alone (<see cref="ScaleSearch.LlamaCpp"/>, <c>convert --search llama.cpp</c>) and check its bytes against llama.cpp's.
/// </summary>
internal static unsafe class QuantizeSpeedSuite
{
    private static readonly GgmlType[] DefaultTypes =
        [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q2_K, GgmlType.Q3_K, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.IQ4_NL];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int repetitions = Program.Option(args, "--repetitions", 5);
        int rows = Program.Option(args, "--rows", 64);
        string shapeName = Program.Value(args, "--shape") ?? "tinyllama-1.1b";
        GgmlType[] types = Program.Value(args, "--types")?.Split(',').Select(Enum.Parse<GgmlType>).ToArray() ?? DefaultTypes;
        var shape = ShapesSuite.Shapes.FirstOrDefault(s => s.Name == shapeName)
            ?? throw new ArgumentException($"unknown shape {shapeName}; known: {string.Join(", ", ShapesSuite.Shapes.Select(s => s.Name))}");
        string hf = ShapesSuite.Ensure(shape, ShapesSuite.CacheDirectory(args), shared, seed: 1);
        var quantizeChunk = LlamaCppQuantizer();

        // The first rows of a matrix of each width: ffn_gate (rows of dim), ffn_down (rows of hidden).
        var sources = new List<(string Name, float[] Values, int Columns)>();
        using (var model = ModelLoader.Load(hf))
        {
            foreach (string name in new[] { TensorNames.Gate(0), TensorNames.Down(0) })
            {
                Tensor t = model[name];
                int columns = checked((int)t.Columns);
                var values = new float[rows * columns];
                for (int r = 0; r < rows; r++)
                    Dequantize.Row(t.Type, t.Row(r), values.AsSpan(r * columns, columns));
                sources.Add((name, values, columns));
            }
        }

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- quantize-speed {string.Join(' ', args)}` "
            + $"({shape.Name} shape: the first {rows} rows of {string.Join(" and ", sources.Select(s => $"{s.Name} ({s.Columns} columns)"))}; "
            + $"one thread, no importance; thread CPU ns per value, median of {repetitions})");
        Console.WriteLine();
        Console.WriteLine("| type | Squeeze | llama.cpp | ratio | relative error Squeeze | llama.cpp | ratio | SHA-256 of Squeeze's bytes "
            + "| Squeeze `--search llama.cpp` | ratio | its bytes llama.cpp's |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (GgmlType type in types)
        {
            long values = sources.Sum(s => (long)s.Values.Length);
            var outputs = sources.Select(s => new byte[GgmlTypes.RowBytes(type, s.Columns) * rows]).ToArray();
            var reference = sources.Select(s => new byte[GgmlTypes.RowBytes(type, s.Columns) * rows]).ToArray();
            var llamaSearch = sources.Select(s => new byte[GgmlTypes.RowBytes(type, s.Columns) * rows]).ToArray();
            double Time(Action action)
            {
                long start = ThreadCpuNanoseconds();
                action();
                return (double)(ThreadCpuNanoseconds() - start) / values;
            }
            void Squeeze()
            {
                for (int i = 0; i < sources.Count; i++)
                    Quantize.Rows(type, sources[i].Values, sources[i].Columns, [], outputs[i], maxThreads: 1);
            }
            void SqueezeLlamaCppSearch()
            {
                for (int i = 0; i < sources.Count; i++)
                    Quantize.Rows(type, sources[i].Values, sources[i].Columns, [], llamaSearch[i], maxThreads: 1, ScaleSearch.LlamaCpp);
            }
            void LlamaCpp()
            {
                for (int i = 0; i < sources.Count; i++)
                {
                    fixed (float* src = sources[i].Values)
                    fixed (byte* dst = reference[i])
                        quantizeChunk((int)type, src, dst, 0, rows, sources[i].Columns, null);
                }
            }
            // Warm-up until the kernels reach their last JIT tier: tiered compilation promotes a method only after it has
            // been called for a while with no new methods compiling (100 ms by default) and then compiles it in the
            // background, so a few fast calls would time tier-0 code. A second of calls, a pause, and one more call.
            var warmUp = System.Diagnostics.Stopwatch.StartNew();
            do
                Squeeze();
            while (warmUp.ElapsedMilliseconds < 1000);
            warmUp.Restart();
            do
                SqueezeLlamaCppSearch();
            while (warmUp.ElapsedMilliseconds < 1000);
            Thread.Sleep(500);
            Squeeze();
            SqueezeLlamaCppSearch();
            LlamaCpp();
            var ours = new double[repetitions];
            var theirs = new double[repetitions];
            var ratios = new double[repetitions];
            var searchOnly = new double[repetitions];
            var searchRatios = new double[repetitions];
            for (int r = 0; r < repetitions; r++)
            {
                ours[r] = Time(Squeeze);
                searchOnly[r] = Time(SqueezeLlamaCppSearch);
                theirs[r] = Time(LlamaCpp);
                ratios[r] = ours[r] / theirs[r];
                searchRatios[r] = searchOnly[r] / theirs[r];
            }
            bool sameAsLlamaCpp = llamaSearch.Zip(reference).All(p => p.First.AsSpan().SequenceEqual(p.Second));
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            foreach (var output in outputs)
                sha.AppendData(output);
            string hash = Convert.ToHexStringLower(sha.GetHashAndReset())[..16];
            double ourError = RelativeError(type, sources, outputs), theirError = RelativeError(type, sources, reference);
            Console.WriteLine($"| {type} | {Median(ours):0.0} | {Median(theirs):0.0} | {Median(ratios):0.00} | "
                + $"{ourError:0.000e0} | {theirError:0.000e0} | {ourError / theirError:0.000} | {hash} | "
                + $"{Median(searchOnly):0.0} | {Median(searchRatios):0.00} | {(sameAsLlamaCpp ? "yes" : "no")} |");
            Console.Out.Flush();
        }
    }

    // Σ(x − x̂)² ÷ Σx² over every row of every source, in double.
    private static double RelativeError(GgmlType type, List<(string Name, float[] Values, int Columns)> sources, byte[][] encoded)
    {
        double error = 0, signal = 0;
        for (int i = 0; i < sources.Count; i++)
        {
            int columns = sources[i].Columns;
            long rowBytes = GgmlTypes.RowBytes(type, columns);
            var decoded = new float[columns];
            for (int r = 0; r < sources[i].Values.Length / columns; r++)
            {
                Dequantize.Row(type, encoded[i].AsSpan((int)(r * rowBytes), (int)rowBytes), decoded);
                for (int c = 0; c < columns; c++)
                {
                    double x = sources[i].Values[r * columns + c];
                    error += (x - decoded[c]) * (x - decoded[c]);
                    signal += x * x;
                }
            }
        }
        return error / signal;
    }

    // CPU time of the calling thread (Linux clock_gettime(CLOCK_THREAD_CPUTIME_ID)): on a shared machine, the time spent
    // waiting for a core is not counted.
    private static long ThreadCpuNanoseconds()
    {
        Timespec time;
        if (ClockGetTime(3, &time) != 0)
            throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        return time.Seconds * 1_000_000_000 + time.Nanoseconds;
    }

    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, Timespec* time);

    private delegate nuint QuantizeChunk(int type, float* source, byte* destination, long start, long rows, long columns, float* importance);

    // ggml_quantize_chunk from the AVX2 build of LLamaSharp's CPU backend (the reference quantizers are plain C in every build).
    private static QuantizeChunk LlamaCppQuantizer()
    {
        string library = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "avx2", "libggml-base.so");
        if (!File.Exists(library))
            throw new FileNotFoundException($"{library}: llama.cpp's ggml library (LLamaSharp.Backend.Cpu, linux-x64) is not there");
        nint handle = NativeLibrary.Load(library);
        nint function = NativeLibrary.GetExport(handle, "ggml_quantize_chunk");
        var call = (delegate* unmanaged<int, float*, byte*, long, long, long, float*, nuint>)function;
        return (type, source, destination, start, count, columns, importance) => call(type, source, destination, start, count, columns, importance);
    }

    private static double Median(double[] values)
    {
        var sorted = values.Order().ToArray();
        return sorted[sorted.Length / 2];
    }
}
