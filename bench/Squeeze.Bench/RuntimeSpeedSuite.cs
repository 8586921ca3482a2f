using System.Globalization;
using LLama;
using LLama.Native;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>
/// <c>runtime-speed</c>: prompt and decode tokens/s of Squeeze and of llama.cpp (LLamaSharp's CPU backend, in this
/// process) on the same GGUF files, measured side by side in one run, in alternating rounds, with decode's share of the machine's
/// copy bandwidth for both. The files are llama.cpp's own: each type quantized by llama.cpp's quantizer with
/// <c>--pure</c> (every matrix that type) from an F16 GGUF of a random checkpoint of a real model's shape
/// (<see cref="ShapesSuite"/>), or of stories15M from llama.cpp's f32 file.
/// <para><c>runtime-speed [--shape tinyllama-1.1b|llama-3.2-1b|stories15M] [--types Q4_0,Q4_K,Q8_0] [--threads 1,2]
/// [--prompt 512] [--decode 128] [--repetitions 5] [--kv f16] [--depth 0] [--native DIR]</c>. <c>--native DIR</c> adds
/// a row of a native model of the same shape in Squeeze against llama.cpp's Q4_0 file of the shape. <c>--depth N</c> measures both phases
/// with N tokens already in the cache (llama-bench's <c>-d</c>); <c>--kv f32|f16|q8|q4</c> is both tools' cache type
/// (q8 and q4 are q8_0 and q4_0 in llama.cpp).</para>
/// </summary>
internal static class RuntimeSpeedSuite
{
    /// <summary>The types of the issue "Runtime at real size", every one Squeeze writes.</summary>
    private static readonly string[] AllTypes = ["Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q4_K", "Q4_0", "Q3_K", "Q2_K", "IQ4_NL", "F16", "BF16"];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        string shapeName = Program.Value(args, "--shape") ?? "tinyllama-1.1b";
        string[] types = Program.Value(args, "--types")?.Split(',') ?? AllTypes;
        int[] threadCounts = Program.Value(args, "--threads")?.Split(',').Select(t => int.Parse(t, CultureInfo.InvariantCulture)).ToArray() ?? [1, 2];
        int promptTokens = Program.Option(args, "--prompt", 512);
        int decodeTokens = Program.Option(args, "--decode", 128);
        int repetitions = Program.Option(args, "--repetitions", 5);
        int depth = Program.Option(args, "--depth", 0);
        string kv = Program.Value(args, "--kv") ?? "f16";
        var policy = KvCachePolicy.Parse(kv);
        string cache = ShapesSuite.CacheDirectory(args);
        string source = Source(shapeName, shared, cache);
        var bandwidth = threadCounts.ToDictionary(n => n, SpeedSuite.CopyBandwidth);

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- runtime-speed {string.Join(' ', args)}` "
            + $"({shapeName}; prompt {promptTokens}, decode {decodeTokens}, depth {depth}, {kv} cache in both, on the same file; {repetitions} rounds, "
            + "each Squeeze then llama.cpp, a warm-up and one measured run each; tokens/s are medians over the rounds, ratios the medians of the rounds' ratios)");
        Console.WriteLine();
        Console.WriteLine($"STREAM-like copy (256 MiB, read + write counted): {string.Join(", ", bandwidth.Select(b => $"{b.Value:0.0} GB/s on {b.Key} thread(s)"))}.");
        Console.WriteLine();
        Console.WriteLine("| type | threads | prompt tok/s Squeeze | llama.cpp | ratio | decode tok/s Squeeze | llama.cpp | ratio | MB read/token (Squeeze) | decode of copy, Squeeze | llama.cpp |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (string type in types)
        {
            string file = Quantized(source, type, Path.Combine(cache, "runtime-speed"), shapeName);
            using var model = ModelLoader.Load(file);
            double bytesPerToken = SpeedSuite.WeightBytesPerToken(model);
            foreach (int threads in threadCounts)
                Row(type, model, bytesPerToken, file, bytesPerToken, threads);
        }
        if (Program.Value(args, "--native") is { } directory)
        {
            // A native model of the same shape against llama.cpp's Q4_0 file of it.
            string file = Quantized(source, "Q4_0", Path.Combine(cache, "runtime-speed"), shapeName);
            using var q4 = ModelLoader.Load(file);
            using var native = ModelLoader.Load(directory);
            double bits = 8.0 * new DirectoryInfo(directory).EnumerateFiles().Sum(f => f.Length) / native.ParameterCount;
            foreach (int threads in threadCounts)
                Row($"native {Path.GetFileName(directory.TrimEnd('/'))} ({bits:0.00} bpw), llama.cpp Q4_0", native, SpeedSuite.WeightBytesPerToken(native), file, SpeedSuite.WeightBytesPerToken(q4), threads);
        }

        // Rounds alternate the tools, each a warm-up and one measured run, so a neighbour's load that comes and goes falls
        // on both; the ratios are the medians of the rounds' own ratios.
        void Row(string label, Model model, double bytesPerToken, string llamaFile, double llamaBytesPerToken, int threads)
        {
            var ours = new List<SpeedResult>();
            var theirs = new List<SpeedResult>();
            for (int round = 0; round < repetitions; round++)
            {
                ours.Add(SpeedBenchmark.Run(model, threads, promptTokens, decodeTokens, repetitions: 1, kvCache: policy, depth: depth));
                theirs.Add(LlamaCppSpeed.Run(llamaFile, threads, promptTokens, decodeTokens, repetitions: 1, kv, depth));
            }
            double median(IEnumerable<double> values) => SpeedBenchmark.Median(values.ToList());
            double oursPrompt = median(ours.Select(r => r.PromptTokensPerSecond)), theirsPrompt = median(theirs.Select(r => r.PromptTokensPerSecond));
            double oursDecode = median(ours.Select(r => r.DecodeTokensPerSecond)), theirsDecode = median(theirs.Select(r => r.DecodeTokensPerSecond));
            double promptRatio = median(ours.Zip(theirs, (a, b) => a.PromptTokensPerSecond / b.PromptTokensPerSecond));
            double decodeRatio = median(ours.Zip(theirs, (a, b) => a.DecodeTokensPerSecond / b.DecodeTokensPerSecond));
            double share(double bytes, double tokensPerSecond) => bytes * tokensPerSecond / 1e9 / bandwidth[threads];
            Console.WriteLine($"| {label} | {threads} | {oursPrompt:0.0} | {theirsPrompt:0.0} | {promptRatio:0.00} "
                + $"| {oursDecode:0.0} | {theirsDecode:0.0} | {decodeRatio:0.00} "
                + $"| {bytesPerToken / 1e6:0.0} | {share(bytesPerToken, oursDecode):0%} | {share(llamaBytesPerToken, theirsDecode):0%} |");
            Console.Out.Flush();
        }
    }

    /// <summary>The F16 (or, for stories15M, llama.cpp's f32) GGUF every type is quantized from.</summary>
    private static string Source(string shapeName, string shared, string cache)
    {
        if (shapeName == "stories15M")
            return Path.Combine(shared, "golden", "stories15M-f32.gguf");
        var shape = ShapesSuite.Shapes.FirstOrDefault(s => s.Name == shapeName)
            ?? throw new ArgumentException($"unknown shape {shapeName}; known: stories15M, {string.Join(", ", ShapesSuite.Shapes.Select(s => s.Name))}");
        string hf = ShapesSuite.Ensure(shape, cache, shared, seed: 1);
        string f16 = Path.Combine(cache, "convert-speed", $"{shape.Name}-F16.gguf");
        if (!File.Exists(f16))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(f16)!);
            using var model = ModelLoader.Load(hf);
            string partial = f16 + $".{Environment.ProcessId}.tmp";
            GgufQuantizer.Write(model, QuantizationMix.Plan(model, QuantizationMix.Parse("F16"), [], pure: true), partial);
            File.Move(partial, f16);
        }
        return f16;
    }

    /// <summary><paramref name="source"/> quantized by llama.cpp to <paramref name="type"/>, every matrix that type
    /// (<c>llama-quantize --pure</c>), cached in <paramref name="directory"/>.</summary>
    private static string Quantized(string source, string type, string directory, string shapeName)
    {
        string path = Path.Combine(directory, $"{shapeName}-{type}.gguf");
        if (File.Exists(path))
            return path;
        Directory.CreateDirectory(directory);
        LlamaCppSpeed.EnsureLoaded();
        // a k-quant named without its mix letter (Q4_K) is its _S mix made pure: every matrix that one type
        string ftypeName = type is "Q5_K" or "Q4_K" or "Q3_K" ? type + "_S" : type;
        var parameters = LLamaModelQuantizeParams.Default();
        parameters.ftype = Enum.Parse<LLamaFtype>("MOSTLY_" + ftypeName);
        parameters.nthread = Environment.ProcessorCount;
        parameters.pure = true;
        parameters.allow_requantize = true;
        parameters.quantize_output_tensor = true;
        string partial = path + $".{Environment.ProcessId}.tmp";
        if (NativeApi.llama_model_quantize(source, partial, ref parameters) != 0)
            throw new InvalidOperationException($"llama.cpp could not quantize {source} to {type}");
        File.Move(partial, path);
        return path;
    }
}
