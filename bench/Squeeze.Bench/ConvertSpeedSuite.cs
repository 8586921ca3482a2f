using System.Diagnostics;
using LLama;
using LLama.Native;
using Squeeze.Formats;
using Squeeze.Quantization;

namespace Squeeze.Bench;

/// <summary>
/// <c>squeeze convert</c>'s speed against llama.cpp's quantizer (llama-quantize's <c>llama_model_quantize</c>, in-process
/// through LLamaSharp 0.30.0's CPU backend, a benchmark-only dependency) on a checkpoint of a real model's shape
/// (<see cref="ShapesSuite"/>). llama.cpp reads an F16 GGUF, which Squeeze writes first from the Hugging Face directory;
/// Squeeze is timed from that directory (bf16 safetensors) and from the same F16 file. Each time is the median of the
/// repetitions, wall clock and process CPU time (the machine is shared: CPU time shows how much of the wall time was
/// spent waiting for a core).
/// </summary>
internal static class ConvertSpeedSuite
{
    private static readonly string[] DefaultTypes = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K", "IQ4_NL"];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int repetitions = Program.Option(args, "--repetitions", 3);
        int threads = Program.Option(args, "--threads", 2);
        string shapeName = Program.Value(args, "--shape") ?? "tinyllama-1.1b";
        string[] types = Program.Value(args, "--types")?.Split(',') ?? DefaultTypes;
        // --from hf or f16: time Squeeze from one source only (both by default)
        string from = Program.Value(args, "--from") ?? "both";
        // --search llama.cpp: the k-quants and IQ4_NL with llama.cpp's scale search alone (convert --search llama.cpp)
        var search = ScaleSearchNames.Parse(Program.Value(args, "--search") ?? "refined");
        var shape = ShapesSuite.Shapes.FirstOrDefault(s => s.Name == shapeName)
            ?? throw new ArgumentException($"unknown shape {shapeName}; known: {string.Join(", ", ShapesSuite.Shapes.Select(s => s.Name))}");
        string cache = ShapesSuite.CacheDirectory(args);
        string hf = ShapesSuite.Ensure(shape, cache, shared, seed: 1);
        string work = Path.Combine(cache, "convert-speed");
        Directory.CreateDirectory(work);
        string f16 = Path.Combine(work, $"{shape.Name}-F16.gguf");
        if (!File.Exists(f16))
        {
            string partial = f16 + $".{Environment.ProcessId}.tmp";
            Convert(hf, "F16", partial, threads, ScaleSearch.Refined);
            File.Move(partial, f16);
        }
        NativeLibraryConfig.All.WithLogCallback((level, message) => { });
        NativeApi.llama_empty_call(); // loads the native library through LLamaSharp's resolver (picks the AVX level)

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- convert-speed {string.Join(' ', args)}` "
            + $"({shape.Name} shape, {threads} threads, median of {repetitions}; wall s / CPU s)");
        Console.WriteLine();
        Console.WriteLine("| type | llama.cpp from F16 | Squeeze from HF bf16 | ratio wall (CPU) | Squeeze from F16 | ratio wall (CPU) | same size as llama.cpp's | tensors from F16 byte-identical to llama.cpp's |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        foreach (string type in types)
        {
            var ftype = Enum.Parse<LLamaFtype>("MOSTLY_" + type);
            string llamaOut = Path.Combine(work, $"llama-{type}.gguf");
            string oursHf = Path.Combine(work, $"squeeze-hf-{type}.gguf");
            string oursF16 = Path.Combine(work, $"squeeze-f16-{type}.gguf");
            var llama = Median(repetitions, () =>
            {
                if (!LLamaQuantizer.Quantize(f16, llamaOut, ftype, threads, allowRequantize: true, quantizeOutputTensor: true)) // llama-quantize's defaults
                    throw new InvalidOperationException($"llama.cpp could not quantize {f16} to {type}");
            });
            long llamaBytes = new FileInfo(llamaOut).Length;
            var sizes = new List<string>();
            string Cells(string input, string output)
            {
                var time = Median(repetitions, () => Convert(input, type, output, threads, search));
                long bytes = new FileInfo(output).Length;
                sizes.Add(bytes == llamaBytes ? "" : $"{bytes:N0} from {Path.GetFileName(input)}");
                return $"{time.Wall:0.0} / {time.Cpu:0.0} | {time.Wall / llama.Wall:0.00} ({time.Cpu / llama.Cpu:0.00})";
            }
            string fromHf = from is "hf" or "both" ? Cells(hf, oursHf) : "– | –";
            string fromF16 = from is "f16" or "both" ? Cells(f16, oursF16) : "– | –";
            string same = sizes.All(s => s.Length == 0) ? "yes" : $"no: llama.cpp {llamaBytes:N0}, {string.Join(", ", sizes.Where(s => s.Length > 0))}";
            string identical = from is "f16" or "both" ? IdenticalTensors(llamaOut, oursF16) : "–";
            Console.WriteLine($"| {type} | {llama.Wall:0.0} / {llama.Cpu:0.0} | {fromHf} | {fromF16} | {same} | {identical} |");
            foreach (string file in new[] { llamaOut, oursHf, oursF16 })
                File.Delete(file);
            Console.Out.Flush();
        }
    }

    // What `squeeze convert IN -o OUT --type MIX --threads N --search S` does.
    private static void Convert(string input, string mix, string output, int threads, ScaleSearch search)
    {
        using var model = ModelLoader.Load(input);
        var plan = QuantizationMix.Plan(model, QuantizationMix.Parse(mix), [], pure: false);
        GgufQuantizer.Write(model, plan, output, importance: null, threads, search: search);
    }

    // How many of llama.cpp's tensors Squeeze's file holds with the same type and bytes, of how many.
    private static unsafe string IdenticalTensors(string llamaPath, string oursPath)
    {
        using var llama = Squeeze.Formats.Gguf.GgufFile.Open(llamaPath);
        using var ours = Squeeze.Formats.Gguf.GgufFile.Open(oursPath);
        int same = 0;
        foreach (var t in llama.Tensors)
        {
            if (ours.TryGetTensor(t.Name, out var o) && o.Type == t.Type && o.ByteLength == t.ByteLength
                && new ReadOnlySpan<byte>(t.Data, checked((int)t.ByteLength)).SequenceEqual(new ReadOnlySpan<byte>(o.Data, checked((int)o.ByteLength))))
                same++;
        }
        return $"{same} of {llama.Tensors.Count}";
    }

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
