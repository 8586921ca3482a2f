using System.Diagnostics;
using System.Globalization;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Bench;

/// <summary>
/// Memory of GPTQ on a mixture of experts, where one block holds every expert's input statistics with its Gram matrix
/// (each expert calibrated on the tokens routed to it). Prints <see cref="ResourceEstimate"/>'s parts for
/// <c>compress --type Q4_K_M --method gptq</c> at Qwen3-30B-A3B's whole shape (48 layers, its 151,936-token vocabulary;
/// from the config alone, nothing written), then, for a random checkpoint of a shape small enough to run here
/// (<see cref="ShapesSuite.ExpertShapes"/>), the same estimate beside the peak private memory (RssAnon of this process,
/// sampled every 50 ms) of running that compression.
/// </summary>
internal static class MoeMemorySuite
{
    /// <summary><c>moe-memory [--shape NAME] [--tokens N] [--ctx N] [--threads N] [--cache DIR] [--tensor-type REGEX=TYPE] [--output FILE]</c>
    /// (<c>--output</c>: the GGUF file is written there and kept, for llama.cpp; else to a temporary file, deleted):
    /// with <c>--tensor-type</c> (llama-quantize's per-tensor override, e.g. <c>_exps=F16</c>), the matching tensors
    /// get that type in the checkpoint's job: experts kept in F16 skip GPTQ's time (hours per block at Qwen3-30B-A3B's
    /// shape on two cores) while calibration still collects every expert's statistics and the rest is encoded as usual.</summary>
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        var shape = ShapesSuite.Find(Program.Value(args, "--shape") ?? "qwen3-moe-half-2l");
        int tokens = Program.Option(args, "--tokens", 2048), ctx = Program.Option(args, "--ctx", 256), threads = Program.Option(args, "--threads", 2);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- moe-memory {string.Join(' ', args)}` "
            + $"(compress --type Q4_K_M --method gptq, {tokens:N0} calibration tokens in chunks of {ctx}, {threads} threads)");
        Console.WriteLine();
        var whole = ShapesSuite.ExpertShapes[0] with { Name = "qwen3-30b-a3b", Layers = 48 };
        Console.WriteLine($"Qwen3-30B-A3B's shape (48 layers, vocabulary {whole.Vocabulary:N0}; from its config alone), {tokens:N0} tokens:");
        Console.WriteLine();
        Print(Estimate(whole, tokens));

        string dir = ShapesSuite.Ensure(shape, ShapesSuite.CacheDirectory(args), shared, 1);
        using var model = ModelLoader.Load(dir);
        TensorTypeOverride[] overrides = Program.Value(args, "--tensor-type") is { } given ? [TensorTypeOverride.Parse(given)] : [];
        var plan = QuantizationMix.Plan(model, QuantizationMix.Q4_K_M, overrides, pure: false, hasImportance: true);
        var estimate = ResourceEstimate.ForMix(model, plan, CompressionMethod.Gptq, tokens, 0);
        Console.WriteLine();
        Console.WriteLine($"{shape.Name} ({shape.Layers} layers of dim {shape.Dim}, {shape.Experts} experts of {shape.ExpertHidden}, top {shape.ExpertsUsed}; "
            + $"{model.ParameterCount:N0} parameters):");
        Console.WriteLine();
        Print(estimate);

        string text = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string? kept = Program.Value(args, "--output");
        string output = kept ?? Path.Combine(Path.GetTempPath(), $"squeeze-moe-memory-{Environment.ProcessId}.gguf");
        // Each sample is charged to the step the job last reported (stage and tensor): where the peak is.
        using var memory = new MemorySampler();
        var clock = Stopwatch.StartNew();
        CompressionReport report;
        string last = "";
        try
        {
            report = Compressor.Compress(model, text, new CompressionOptions
            {
                Mix = QuantizationMix.Q4_K_M,
                Overrides = overrides,
                Method = CompressionMethod.Gptq,
                CalibrationTokens = tokens,
                ContextLength = ctx,
                Threads = threads,
            }, output, new SynchronousProgress<CompressionProgress>(p =>
            {
                string step = $"{p.Stage}: {(p.Stage == "calibrating" ? p.Note.Split(':')[0] : p.Note)}";
                // Each new step on stderr as it starts, for a job that runs for hours.
                if (step != last)
                    Console.Error.WriteLine($"{clock.Elapsed.TotalSeconds:0} s, RssAnon {Gb(MemorySampler.RssAnon())}: {step}");
                last = step;
                memory.Step = step;
            }));
        }
        finally
        {
            memory.Stop();
            if (kept is null)
                File.Delete(output);
        }
        Console.WriteLine();
        Console.WriteLine("| measured | value |");
        Console.WriteLine("|---|---|");
        Console.WriteLine($"| peak private memory (RssAnon) during the job | {Gb(memory.Peak)} |");
        Console.WriteLine($"| private memory before it (the loaded model, the runtime) | {Gb(memory.Before)} |");
        Console.WriteLine($"| estimate before the start | {Gb(estimate.MemoryBytes)} |");
        Console.WriteLine($"| wall time | {clock.Elapsed.TotalSeconds:0} s (per block: {string.Join(", ", report.LayerSeconds!.Select(s => $"{s:0} s"))}) |");
        Console.WriteLine($"| calibration tokens | {report.CalibrationTokens:N0} |");
        foreach (var t in report.Tensors.OrderByDescending(t => t.Seconds ?? 0).Take(6))
            Console.WriteLine($"| encoding {t.Name} ({t.Format}, {t.Encoding}) | {t.Seconds ?? 0:0} s |");
        Console.WriteLine();
        Console.WriteLine("| step (the job's last report) | peak private memory while in it |");
        Console.WriteLine("|---|---|");
        // The eight highest steps, then the vocabulary's tensors (the largest to encode) wherever they rank.
        var steps = memory.Steps(int.MaxValue);
        foreach (var (at, bytes) in steps.Take(8).Concat(steps.Skip(8).Where(s => s.Step.EndsWith(" output.weight", StringComparison.Ordinal)
            || s.Step.EndsWith(" token_embd.weight", StringComparison.Ordinal))))
            Console.WriteLine($"| {at} | {Gb(bytes)} |");
    }

    // The estimate at `shape` from its config.json alone: the tensors GGUF names for it, planned as the Q4_K_M mix.
    private static ResourceEstimate Estimate(ShapesSuite.Shape shape, int tokens)
    {
        string dir = Directory.CreateTempSubdirectory("squeeze-moe-config-").FullName;
        try
        {
            string path = Path.Combine(dir, "config.json");
            ShapesSuite.WriteConfig(shape, path);
            var config = HuggingFaceReader.ReadConfig(path);
            var tensors = HuggingFaceReader.ExpectedTensors(config).Select(t => (t.Name, t.Shape, GgmlType.BF16)).ToList();
            var plan = QuantizationMix.Plan(config, tensors, QuantizationMix.Q4_K_M, [], pure: false, hasImportance: true);
            return ResourceEstimate.ForMix(config, plan, CompressionMethod.Gptq, tokens, 0);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Print(ResourceEstimate estimate)
    {
        Console.WriteLine("| part of the estimate | bytes |");
        Console.WriteLine("|---|---|");
        foreach (var (part, bytes) in estimate.Parts)
            Console.WriteLine($"| {part} | {Gb(bytes)} |");
        Console.WriteLine($"| **total** | **{Gb(estimate.MemoryBytes)}** |");
    }

    private static string Gb(long bytes) => (bytes / 1e9).ToString("0.00", CultureInfo.InvariantCulture) + " GB";
}
