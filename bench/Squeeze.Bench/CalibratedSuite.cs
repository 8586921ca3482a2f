using System.Diagnostics;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Pipeline;
using Squeeze.Quantization;

namespace Squeeze.Bench;

/// <summary>
/// stories15M compressed by <see cref="Compressor"/> with every method (rtn, imatrix, gptq, awq+gptq) at llama.cpp's
/// mixes Q4_0, Q4_K_M, Q3_K_M and Q2_K, calibrated on tinystories-calib, scored on the whole tinystories-eval (ctx 256)
/// against the f32 model in one pass, beside llama.cpp's imatrix files (golden README). Options: <c>--tokens N</c>
/// (calibration tokens, default 0: the whole text), <c>--mixes A,B</c>, <c>--methods a,b</c>, <c>--sequential</c> (adds
/// sequential GPTQ rows), <c>--no-act-order</c>, <c>--damping X</c>, <c>--refine N</c> (refinement after GPTQ, default 4), <c>--threads N</c>.
/// </summary>
internal static class CalibratedSuite
{
    /// <summary>One file to make: llama.cpp's mix, the method's name in the table, the method, sequential calibration.</summary>
    internal sealed record Arm(string Mix, string Name, CompressionMethod Method, bool Sequential);

    /// <summary>Settings every arm shares: calibration tokens (0: the whole text), GPTQ's act-order, damping and refinement passes, threads.</summary>
    internal sealed record Settings(int Tokens, bool ActivationOrder, double Damping, int Refine, int Threads);

    /// <summary>What an arm made and how it scored.</summary>
    internal sealed record Row(Arm Arm, CompressionReport Report, EvaluationResult Result);

    // shared/golden/README.md: llama.cpp's file for the mix, with imatrix where there is one: (mix, imatrix?, bytes, PPL, mean KLD).
    internal static readonly Dictionary<string, (bool Imatrix, long Bytes, double Perplexity, double Kld)> LlamaCpp = new()
    {
        ["Q8_0"] = (false, 16_879_328, 6.5016, 0.001439),
        ["Q6_K"] = (true, 16_558_144, 6.5059, 0.003043),
        ["Q5_K_M"] = (true, 15_040_960, 6.5498, 0.012280),
        ["Q5_0"] = (true, 14_640_064, 6.6400, 0.024291),
        ["Q4_K_S"] = (true, 14_494_912, 6.6483, 0.028527),
        ["Q3_K_S"] = (true, 13_717_312, 7.0959, 0.113255),
        ["Q4_0"] = (true, 13_893_568, 6.8543, 0.091786),
        ["Q4_K_M"] = (true, 14_650_432, 6.6272, 0.026935),
        ["Q3_K_M"] = (false, 14_028_128, 6.7364, 0.062579),
        ["Q2_K"] = (true, 13_717_312, 7.0959, 0.113255),
    };

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int tokens = Program.Option(args, "--tokens", 0);
        string[] mixes = Program.Value(args, "--mixes")?.Split(',') ?? ["Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K"];
        string[] methodNames = Program.Value(args, "--methods")?.Split(',') ?? ["rtn", "imatrix", "gptq", "awq+gptq"];
        bool sequential = args.Contains("--sequential");
        bool actOrder = !args.Contains("--no-act-order");
        int refine = Program.Option(args, "--refine", 4);
        double damping = Program.Value(args, "--damping") is { } d ? double.Parse(d, System.Globalization.CultureInfo.InvariantCulture) : 0.01;
        var methods = methodNames.Select(Method).ToArray();
        string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        var arms = mixes.SelectMany(mix => methods.Select((m, i) => new Arm(mix, methodNames[i], m, false))
            .Concat(sequential ? methods.Where(m => m is CompressionMethod.Gptq or CompressionMethod.AwqGptq).Select(m => new Arm(mix, Name(m) + " seq", m, true)) : [])).ToList();
        using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        var clock = Stopwatch.StartNew();
        var stats = Calibrate(source, calibText, tokens, threads);
        double calibrationSeconds = clock.Elapsed.TotalSeconds;
        var rows = Measure(source, stats, calibText, evalText, arms, new Settings(tokens, actOrder, damping, refine, threads));

        string extra = (tokens != 0 ? $" --tokens {tokens}" : "") + (Program.Value(args, "--mixes") is { } mx ? $" --mixes {mx}" : "")
            + (Program.Value(args, "--methods") is { } me ? $" --methods {me}" : "") + (sequential ? " --sequential" : "") + (actOrder ? "" : " --no-act-order")
            + (Program.Value(args, "--damping") is { } da ? $" --damping {da}" : "") + (refine != 4 ? $" --refine {refine}" : "");
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- calibrated --threads {threads}{extra}` (stories15M.bin; calibration: " +
            $"{stats.TokenCount:N0} tokens of tinystories-calib at ctx 256; GPTQ damping {damping}, act-order {(actOrder ? "on" : "off")}, refinement passes {refine}; scored on the whole tinystories-eval, ctx 256, against the f32 model)");
        Console.WriteLine();
        Console.WriteLine("| mix | method | bytes | llama.cpp bytes | PPL | mean KLD | llama.cpp KLD | KLD / llama.cpp | same top % | compress s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var (arm, report, result) in rows)
        {
            var reference = LlamaCpp[arm.Mix];
            var k = result.KlDivergence!;
            string refKld = $"{reference.Kld:0.000000}{(reference.Imatrix ? "" : " (no imatrix)")}";
            Console.WriteLine($"| {arm.Mix} | {arm.Name} | {report.FileBytes:N0} | {reference.Bytes:N0} | {result.Perplexity:0.0000} | {k.Mean:0.000000} | {refKld} | " +
                $"{k.Mean / reference.Kld:0.000} | {k.SameTopTokenPercent:0.00} | {report.Seconds.Total:0.0} |");
        }
        Console.WriteLine();
        Console.WriteLine($"Calibration ({stats.TokenCount:N0} tokens, with XᵀX, {threads} threads): {calibrationSeconds:0.0} s, shared by every non-sequential row " +
            "(compress s excludes it; sequential rows include their own per-layer passes). llama.cpp: imatrix 57 s for 49,152 tokens; llama-quantize 0.1 to 0.6 s per file.");
    }

    /// <summary>The calibration every non-sequential row shares: importance and XᵀX over <paramref name="tokens"/> tokens
    /// (0: the whole text) at ctx 256.</summary>
    internal static CalibrationStatistics Calibrate(Model source, string calibText, int tokens, int threads)
        => Calibrator.Run(source, calibText, new CalibrationOptions { ContextLength = 256, MaxTokens = tokens, CollectGram = true, Threads = threads });

    /// <summary>Each arm compressed from <paramref name="source"/> into a temporary file, then all scored in one pass on
    /// the whole evaluation text (ctx 256) against <paramref name="source"/>.</summary>
    internal static IReadOnlyList<Row> Measure(Model source, CalibrationStatistics stats, string calibText, string evalText, IReadOnlyList<Arm> arms, Settings settings)
    {
        string directory = Directory.CreateTempSubdirectory("squeeze-calibrated-").FullName;
        try
        {
            var reports = new List<CompressionReport>();
            foreach (var arm in arms)
            {
                string path = Path.Combine(directory, $"stories15M-{arm.Mix}-{arm.Name.Replace('+', '-').Replace(' ', '-')}.gguf");
                var report = CompressionPipeline.Run(source, new CompressionJob
                {
                    Target = new MixTarget(QuantizationMix.Parse(arm.Mix)),
                    Method = arm.Method,
                    CalibrationText = calibText,
                    CalibrationTokens = settings.Tokens,
                    ContextLength = 256,
                    ActivationOrder = settings.ActivationOrder,
                    Damping = settings.Damping,
                    RefinePasses = settings.Refine,
                    Sequential = arm.Sequential,
                    Statistics = arm.Sequential ? null : stats,
                    Threads = settings.Threads,
                    Output = path,
                });
                Console.Error.WriteLine($"{arm.Mix} {arm.Name}: {report.FileBytes:N0} bytes, {report.Seconds.Total:0.0} s");
                reports.Add(report);
            }

            var models = reports.Select(r => ModelLoader.Load(r.Output!)).ToArray();
            try
            {
                var results = Evaluator.EvaluateMany(models, evalText, new EvaluationOptions { ContextLength = 256, Threads = settings.Threads }, source);
                return arms.Select((arm, i) => new Row(arm, reports[i], results[i])).ToList();
            }
            finally
            {
                foreach (var model in models)
                    model.Dispose();
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    internal static CompressionMethod Method(string name) => name switch
    {
        "rtn" => CompressionMethod.Rtn,
        "imatrix" => CompressionMethod.Imatrix,
        "gptq" => CompressionMethod.Gptq,
        "awq+gptq" => CompressionMethod.AwqGptq,
        _ => throw new ArgumentException($"unknown method {name}: rtn, imatrix, gptq, awq+gptq"),
    };

    private static string Name(CompressionMethod method) => method switch
    {
        CompressionMethod.Rtn => "rtn",
        CompressionMethod.Imatrix => "imatrix",
        CompressionMethod.Gptq => "gptq",
        _ => "awq+gptq",
    };

}
