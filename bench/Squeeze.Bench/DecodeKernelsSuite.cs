using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Squeeze.Kernels;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Weights;

namespace Squeeze.Bench;

/// <summary>
/// <c>decode-kernels</c>: the one-token matrix product alone, per weight type, on a matrix far larger than the caches
/// (rows of TinyLlama-1.1B's width, 2048 values, repeated to about 512 MB of weights), as GB/s of weights read and
/// as a share of a STREAM-like copy measured in the same run: how close decode's kernels come to the bandwidth limit
/// without the rest of a forward pass. The process's CPU time per product beside the wall time tells a kernel's own cost
/// apart from the machine's load (on a shared machine the wall time also counts the time other processes held the core).
/// The native format's uniform codes (<c>--uniform 2,3,4</c>: bits, asymmetric, groups of 256, the fused product) are
/// measured the same way; with <c>--tokens N</c> (N &gt; 1) as a prompt's product of N tokens, fused and decoded
/// (<c>UniformProduct</c> against <c>DecodedProduct</c>, where <c>UniformProduct.MinPromptColumns</c> comes from). Without
/// <c>--types</c> or <c>--uniform</c>, every GGUF type and uniform 2, 3 and 4 bits run.
/// <para><c>decode-kernels [--types Q4_0,Q8_0] [--uniform 2,3,4] [--tokens 1] [--threads 1,2] [--repetitions 9] [--megabytes 512] [--columns 2048]</c></para>
/// </summary>
internal static unsafe class DecodeKernelsSuite
{
    private const int UniformGroup = 256;

    private static readonly GgmlType[] AllTypes =
    [
        GgmlType.Q8_0, GgmlType.Q6_K, GgmlType.Q5_K, GgmlType.Q5_0, GgmlType.Q4_K, GgmlType.Q4_0, GgmlType.Q3_K, GgmlType.Q2_K,
        GgmlType.IQ4_NL, GgmlType.F16, GgmlType.BF16,
    ];

    public static void Run(string[] args)
    {
        string? typeList = Program.Value(args, "--types"), bitList = Program.Value(args, "--uniform");
        bool every = typeList is null && bitList is null;
        var types = typeList?.Split(',').Select(Enum.Parse<GgmlType>).ToArray() ?? (every ? AllTypes : []);
        int[] uniformBits = bitList?.Split(',').Select(b => int.Parse(b, CultureInfo.InvariantCulture)).ToArray() ?? (every ? [2, 3, 4] : []);
        int[] threadCounts = Program.Value(args, "--threads")?.Split(',').Select(t => int.Parse(t, CultureInfo.InvariantCulture)).ToArray() ?? [1, 2];
        int repetitions = Program.Option(args, "--repetitions", 9);
        long megabytes = Program.Option(args, "--megabytes", 512);
        int columns = Program.Option(args, "--columns", 2048);
        int tokens = Program.Option(args, "--tokens", 1);
        var bandwidth = threadCounts.ToDictionary(n => n, SpeedSuite.CopyBandwidth);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- decode-kernels {string.Join(' ', args)}` "
            + $"({(tokens == 1 ? "one token" : $"{tokens} tokens for the uniform codes, one for the GGUF types")}, rows of {columns} values, about {megabytes} MB of weights; median of {repetitions} products after a warm-up)");
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

        foreach (int bits in uniformBits)
        {
            long rowBytes = new UniformScheme(bits, UniformGroup, symmetric: false).RowBytes(columns);
            int rows = (int)(megabytes * 1_000_000 / rowBytes);
            var weight = UniformMatrix(bits, columns, rows, random);
            if (tokens == 1)
            {
                var y = new float[rows];
                foreach (int threads in threadCounts)
                    Time($"uniform {bits}-bit, groups of {UniformGroup}", threads, rows, weight.StoredBytes, context => weight.Multiply(x, 1, context, y));
                continue;
            }
            // a prompt's product: the fused kernel once per token against decoding each row once for every token
            var batch = new float[tokens * columns];
            for (int t = 0; t < tokens; t++)
                x.AsSpan().CopyTo(batch.AsSpan(t * columns));
            for (int i = 0; i < batch.Length; i++)
                batch[i] *= 1 + (float)(random.NextDouble() * 0.5 - 0.25);
            var ys = new float[tokens * rows];
            foreach (int threads in threadCounts)
            {
                Time($"uniform {bits}-bit, groups of {UniformGroup}, {tokens} tokens fused", threads, rows, weight.StoredBytes, context => UniformProduct.Multiply(weight, batch, tokens, context, ys));
                Time($"uniform {bits}-bit, groups of {UniformGroup}, {tokens} tokens decoded", threads, rows, weight.StoredBytes, context => DecodedProduct.Multiply(weight, batch, tokens, context, ys));
            }
        }
    }

    /// <summary>A uniform weight of <paramref name="rows"/> rows: 64 rows encoded from <see cref="Normal"/> values, their
    /// codes, scales and mins repeated.</summary>
    private static UniformWeight UniformMatrix(int bits, int columns, int rows, Random random)
    {
        const int Distinct = 64;
        var scheme = new UniformScheme(bits, UniformGroup, symmetric: false);
        var sample = UniformWeight.Encode("sample", Normal(Distinct * columns, random), Distinct, columns, scheme);
        int rowBytes = (int)scheme.RowBytes(columns), groups = columns / UniformGroup;
        var codes = new byte[(long)rows * rowBytes];
        var scales = new ushort[(long)rows * groups];
        var mins = new ushort[(long)rows * groups];
        for (int r = 0; r < rows; r++)
        {
            sample.Codes.Slice(r % Distinct * rowBytes, rowBytes).CopyTo(codes.AsSpan((int)((long)r * rowBytes)));
            sample.Scales.Slice(r % Distinct * groups, groups).CopyTo(scales.AsSpan(r * groups));
            sample.Mins.Slice(r % Distinct * groups, groups).CopyTo(mins.AsSpan(r * groups));
        }
        return new UniformWeight("uniform", rows, columns, scheme, codes, scales, mins);
    }

    /// <summary>Normal values with a real checkpoint's spread (0.02): the k-quants' super-block scales then come out
    /// subnormal in binary16 as often as in real files, which the kernels must not pay for.</summary>
    private static float[] Normal(int count, Random random)
    {
        var values = new float[count];
        for (int i = 0; i < values.Length; i++)
            values[i] = 0.02f * (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        return values;
    }

    /// <summary>64 rows quantized from N(0, 1) values, repeated to fill the matrix (the values do not change the speed).</summary>
    private static void Fill(GgmlType type, int columns, int rows, long rowBytes, byte* weights, Random random)
    {
        const int Distinct = 64;
        var values = Normal(Distinct * columns, random);
        var encoded = new byte[Distinct * rowBytes];
        Quantize.Rows(type, values, columns, [], encoded);
        for (int r = 0; r < rows; r++)
            encoded.AsSpan((int)(r % Distinct * rowBytes), (int)rowBytes).CopyTo(new Span<byte>(weights + r * rowBytes, (int)rowBytes));
    }
}
