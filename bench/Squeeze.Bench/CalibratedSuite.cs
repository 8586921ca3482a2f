using System.Diagnostics;
using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;
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
    // shared/golden/README.md: llama.cpp's file for the mix, with imatrix where there is one: (mix, imatrix?, bytes, PPL, mean KLD).
    private static readonly Dictionary<string, (bool Imatrix, long Bytes, double Perplexity, double Kld)> LlamaCpp = new()
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
        string directory = Directory.CreateTempSubdirectory("squeeze-calibrated-").FullName;
        try
        {
            using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
            var clock = Stopwatch.StartNew();
            var stats = Calibrator.Run(source, calibText, new CalibrationOptions { ContextLength = 256, MaxTokens = tokens, CollectGram = true, Threads = threads });
            double calibrationSeconds = clock.Elapsed.TotalSeconds;

            var rows = new List<(string Mix, string Method, string File, CompressionReport Report)>();
            foreach (string mix in mixes)
            {
                foreach (var (name, method, seq) in methods.Select((m, i) => (methodNames[i], m, false))
                    .Concat(sequential ? methods.Where(m => m is CompressionMethod.Gptq or CompressionMethod.AwqGptq).Select(m => (Name(m) + " seq", m, true)) : []))
                {
                    string path = Path.Combine(directory, $"stories15M-{mix}-{name.Replace('+', '-').Replace(' ', '-')}.gguf");
                    var report = CompressionPipeline.Run(source, new CompressionJob
                    {
                        Target = new MixTarget(QuantizationMix.Parse(mix)),
                        Method = method,
                        CalibrationText = calibText,
                        CalibrationTokens = tokens,
                        ContextLength = 256,
                        ActivationOrder = actOrder,
                        Damping = damping,
                        RefinePasses = refine,
                        Sequential = seq,
                        Statistics = seq ? null : stats,
                        Threads = threads,
                        Output = path,
                    });
                    Console.Error.WriteLine($"{mix} {name}: {report.FileBytes:N0} bytes, {report.Seconds.Total:0.0} s");
                    rows.Add((mix, name, path, report));
                }
            }

            var models = rows.Select(r => ModelLoader.Load(r.File)).ToArray();
            try
            {
                var results = Evaluator.EvaluateMany(models, evalText, new EvaluationOptions { ContextLength = 256, Threads = threads }, source);
                string extra = (tokens != 0 ? $" --tokens {tokens}" : "") + (Program.Value(args, "--mixes") is { } m ? $" --mixes {m}" : "")
                    + (Program.Value(args, "--methods") is { } me ? $" --methods {me}" : "") + (sequential ? " --sequential" : "") + (actOrder ? "" : " --no-act-order")
                    + (Program.Value(args, "--damping") is { } da ? $" --damping {da}" : "") + (refine != 4 ? $" --refine {refine}" : "");
                Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- calibrated --threads {threads}{extra}` (stories15M.bin; calibration: " +
                    $"{stats.TokenCount:N0} tokens of tinystories-calib at ctx 256; GPTQ damping {damping}, act-order {(actOrder ? "on" : "off")}, refinement passes {refine}; scored on the whole tinystories-eval, ctx 256, against the f32 model)");
                Console.WriteLine();
                Console.WriteLine("| mix | method | bytes | llama.cpp bytes | PPL | mean KLD | llama.cpp KLD | KLD / llama.cpp | same top % | compress s |");
                Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
                for (int i = 0; i < rows.Count; i++)
                {
                    var (mix, name, file, report) = rows[i];
                    var reference = LlamaCpp[mix];
                    var k = results[i].KlDivergence!;
                    string refKld = $"{reference.Kld:0.000000}{(reference.Imatrix ? "" : " (no imatrix)")}";
                    Console.WriteLine($"| {mix} | {name} | {report.FileBytes:N0} | {reference.Bytes:N0} | {results[i].Perplexity:0.0000} | {k.Mean:0.000000} | {refKld} | " +
                        $"{k.Mean / reference.Kld:0.000} | {k.SameTopTokenPercent:0.00} | {report.Seconds:0.0} |");
                }
                Console.WriteLine();
                Console.WriteLine($"Calibration ({stats.TokenCount:N0} tokens, with XᵀX, {threads} threads): {calibrationSeconds:0.0} s, shared by every non-sequential row " +
                    "(compress s excludes it; sequential rows include their own per-layer passes). llama.cpp: imatrix 57 s for 49,152 tokens; llama-quantize 0.1 to 0.6 s per file.");
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

    private static CompressionMethod Method(string name) => name switch
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
