using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Bench;

/// <summary>
/// <c>decode-kernels</c>: the one-token matrix product alone, per weight type, on a matrix far larger than the caches
/// (rows of TinyLlama-1.1B's width, 2048 values, repeated to about 512 MB of weights), as GB/s of weights read and
/// as a share of a STREAM-like copy measured in the same run: how close decode's kernels come to the bandwidth limit
/// without the rest of a forward pass. The process's CPU time per product beside the wall time tells a kernel's own cost
/// apart from the machine's load (on a shared machine the wall time also counts the time other processes held the core).
/// <para><c>decode-kernels [--types Q4_0,Q8_0] [--threads 1,2] [--repetitions 9] [--megabytes 512] [--columns 2048]</c></para>
/// </summary>
internal static unsafe class DecodeKernelsSuite
{
    private static readonly GgmlType[] AllTypes =
    [
        GgmlType.Q8_0, GgmlType.Q6_K, GgmlType.Q5_K, GgmlType.Q5_0, GgmlType.Q4_K, GgmlType.Q4_0, GgmlType.Q3_K, GgmlType.Q2_K,
        GgmlType.IQ4_NL, GgmlType.F16, GgmlType.BF16,
    ];

    public static void Run(string[] args)
    {
        var types = Program.Value(args, "--types")?.Split(',').Select(Enum.Parse<GgmlType>).ToArray() ?? AllTypes;
        int[] threadCounts = Program.Value(args, "--threads")?.Split(',').Select(t => int.Parse(t, CultureInfo.InvariantCulture)).ToArray() ?? [1, 2];
        int repetitions = Program.Option(args, "--repetitions", 9);
        long megabytes = Program.Option(args, "--megabytes", 512);
        int columns = Program.Option(args, "--columns", 2048);
        var bandwidth = threadCounts.ToDictionary(n => n, SpeedSuite.CopyBandwidth);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- decode-kernels {string.Join(' ', args)}` "
            + $"(one token, rows of {columns} values, about {megabytes} MB of weights; median of {repetitions} products after a warm-up)");
        Console.WriteLine();
        Console.WriteLine($"STREAM-like copy (256 MiB, read + write counted): {string.Join(", ", bandwidth.Select(b => $"{b.Value:0.0} GB/s on {b.Key} thread(s)"))}.");
        Console.WriteLine();
        Console.WriteLine("| type | threads | rows | MB of weights | ms per product | CPU ms per product | GB/s read | of copy |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        var random = new Random(1);
        var x = new float[columns];
        for (int c = 0; c < columns; c++)
            x[c] = (float)(random.NextDouble() * 2 - 1);
        void Time(string name, int threads, int rows, long bytes, Action<ComputeContext> product)
        {
            using var context = new ComputeContext(threads);
            var seconds = new List<double>();
            var cpuSeconds = new List<double>();
            for (int r = 0; r <= repetitions; r++)
            {
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                long start = Stopwatch.GetTimestamp();
                product(context);
                if (r == 0)
                    continue;
                seconds.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
                cpuSeconds.Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
            }
            double median = seconds.Order().ElementAt(seconds.Count / 2), cpuMedian = cpuSeconds.Order().ElementAt(cpuSeconds.Count / 2);
            double gbs = bytes / median / 1e9;
            Console.WriteLine($"| {name} | {threads} | {rows:N0} | {bytes / 1e6:0} | {median * 1e3:0.00} | {cpuMedian * 1e3:0.00} | {gbs:0.0} | {gbs / bandwidth[threads]:0%} |");
            Console.Out.Flush();
        }

        foreach (var type in types)
        {
            long rowBytes = GgmlTypes.RowBytes(type, columns);
            int rows = (int)(megabytes * 1_000_000 / rowBytes);
            byte* weights = (byte*)NativeMemory.AlignedAlloc((nuint)(rows * rowBytes), 64);
            var y = new float[rows];
            try
            {
                Fill(type, columns, rows, rowBytes, weights, random);
                foreach (int threads in threadCounts)
                {
                    fixed (float* px = x)
                    fixed (float* py = y)
                    {
                        float* xp = px, yp = py;
                        Time(type.ToString(), threads, rows, rows * rowBytes, context => MatMul.Multiply(type, weights, xp, rows, columns, 1, rows, context, yp));
                    }
                }
                if (VecDot.HasRowGroups(type, VecDot.Best))
                {
                    // the same rows interleaved 16 at a time, as the runtime packs them for decode steps
                    int groupRows = rows / VecDot.RowGroupRows * VecDot.RowGroupRows;
                    long groupsBytes = MatMul.RowGroupsBytes(type, groupRows, columns);
                    byte* groups = (byte*)NativeMemory.AlignedAlloc((nuint)groupsBytes, 64);
                    try
                    {
                        MatMul.PackRowGroups(type, weights, groupRows, columns, groups);
                        foreach (int threads in threadCounts)
                        {
                            fixed (float* px = x)
                            fixed (float* py = y)
                            {
                                float* xp = px, yp = py;
                                Time($"{type} row groups", threads, groupRows, groupsBytes, context => MatMul.MultiplyRowGroups(type, groups, groupRows, columns, xp, context, yp));
                            }
                        }
                    }
                    finally
                    {
                        NativeMemory.AlignedFree(groups);
                    }
                }
            }
            finally
            {
                NativeMemory.AlignedFree(weights);
            }
        }
    }

    /// <summary>64 rows quantized from N(0, 1) values, repeated to fill the matrix (the values do not change the speed).</summary>
    private static void Fill(GgmlType type, int columns, int rows, long rowBytes, byte* weights, Random random)
    {
        const int Distinct = 64;
        var values = new float[Distinct * columns];
        // normal with a real checkpoint's spread (0.02): the k-quants' super-block scales then come out subnormal in
        // binary16 as often as in real files, which the kernels must not pay for
        for (int i = 0; i < values.Length; i++)
            values[i] = 0.02f * (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        var encoded = new byte[Distinct * rowBytes];
        Quantize.Rows(type, values, columns, [], encoded);
        for (int r = 0; r < rows; r++)
            encoded.AsSpan((int)(r % Distinct * rowBytes), (int)rowBytes).CopyTo(new Span<byte>(weights + r * rowBytes, (int)rowBytes));
    }
}
