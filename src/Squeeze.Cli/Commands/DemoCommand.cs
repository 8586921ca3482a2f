using System.CommandLine;
using Spectre.Console;
using Squeeze.Calibration;
using Squeeze.Charts;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Models;
using Squeeze.Pipeline;
using Squeeze.Quantization;

namespace Squeeze.Cli.Commands;

/// <summary>
/// <c>squeeze demo</c>: the main job on the demo model (stories15M). Makes each of several of llama.cpp's mixes twice:
/// by plain rounding (what llama-quantize does without an importance matrix) and by Squeeze's calibrated GPTQ (one
/// calibration shared by every mix); scores every file against the original on the evaluation text in one pass
/// (perplexity, KL divergence, bits per byte) and prints the size and quality table. Beside them, Squeeze's native
/// format at a bits-per-weight budget: a representation per tensor chosen by the knapsack on measured KLD, from the same
/// calibration. Draws the table's size against its mean KLD as a chart (<c>size-quality.png</c>).
/// </summary>
internal static class DemoCommand
{
    public sealed record Options(string[] Mixes, double NativeBitsPerWeight, string? OutputDirectory, int Chunks, int Threads, bool Json);

    /// <summary>One model of the table; <paramref name="Method"/> is <see cref="Original"/>, <see cref="Rounding"/>,
    /// <see cref="Gptq"/> or <see cref="Native"/>, <paramref name="Label"/> the mix or budget it was made at.</summary>
    public sealed record Row(string Name, string Method, string Label, string File, long Bytes, double BitsPerWeight, EvaluationResult Result);

    public sealed record Report(string Model, string EvalText, string CalibrationText, long CalibrationTokens, double NativeBitsPerWeight, string Chart, IReadOnlyList<Row> Rows);

    public const string Original = "original", Rounding = "rounding", Gptq = "squeeze gptq", Native = "native";

    public static Command Create()
    {
        var mixes = new Option<string[]>("--mixes") { Description = "Mixes to make and compare", DefaultValueFactory = _ => ["Q8_0", "Q4_K_M", "Q4_0", "Q2_K"], AllowMultipleArgumentsPerToken = true };
        var native = new Option<double>("--native-bpw") { Description = "Also compress to Squeeze's native format at this many bits per weight (0: skip it)", DefaultValueFactory = _ => 3.0 };
        var output = new Option<string?>("--output-dir") { Description = "Keep the compressed models and the chart (size-quality.png) here (default: a temporary directory, where only the chart is left afterwards)" };
        var chunks = new Option<int>("--chunks") { Description = "Score at most this many 256-token chunks (0: all)", DefaultValueFactory = _ => 0 };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var command = new Command("demo", "Fetch the demo model (stories15M), make several mixes by plain rounding and by calibrated GPTQ, and print the size and quality table") { mixes, native, output, chunks, threads, json };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(mixes)!, r.GetValue(native), r.GetValue(output), r.GetValue(chunks), r.GetValue(threads), r.GetValue(json)))));
        return command;
    }

    public static int Execute(Options options)
    {
        var mixes = options.Mixes.Select(QuantizationMix.Parse).ToArray();
        if (options.NativeBitsPerWeight < 0 || double.IsNaN(options.NativeBitsPerWeight))
            throw new ArgumentException($"--native-bpw {options.NativeBitsPerWeight} must not be negative");
        var files = DemoModel.Locate(Cli.Status);
        string text = Cli.ReadText(files.EvalText);
        bool temporary = options.OutputDirectory is null;
        string directory = options.OutputDirectory ?? Directory.CreateTempSubdirectory("squeeze-demo-").FullName;
        // The GGUF files of an earlier run are replaced; a native directory is never written over, so say so before the work.
        string nativePath = Path.Combine(directory, $"stories15M-native-{options.NativeBitsPerWeight:0.0##}");
        string chart = Path.Combine(directory, "size-quality.png");
        if (options.NativeBitsPerWeight > 0)
            HuggingFaceWriter.CheckDestination(nativePath);
        Directory.CreateDirectory(directory);
        try
        {
            using var original = ModelLoader.Load(files.Model, files.Tokenizer);
            string calibrationText = Cli.ReadText(files.CalibrationText);
            var stats = Cli.WithProgress("calibrating", progress => Calibrator.Run(original, calibrationText,
                new CalibrationOptions { ContextLength = 256, CollectGram = true, Threads = options.Threads },
                new SynchronousProgress<CalibrationProgress>(p => progress.Report((p.Done, p.Total, p.Note))), Cli.Cancellation));
            var made = Cli.WithProgress("quantizing", progress =>
            {
                var list = new List<(string Method, string Label, string Path)>();
                foreach (var mix in mixes)
                {
                    progress.Report((list.Count, 2 * mixes.Length, $"{mix.Name} rounding"));
                    string rounded = Path.Combine(directory, $"stories15M-{mix.Name}-rtn.gguf");
                    GgufQuantizer.Write(original, QuantizationMix.Plan(original, mix, [], pure: false), rounded, importance: null, options.Threads);
                    list.Add((Rounding, mix.Name, rounded));
                    progress.Report((list.Count, 2 * mixes.Length, $"{mix.Name} gptq"));
                    string gptq = Path.Combine(directory, $"stories15M-{mix.Name}-gptq.gguf");
                    CompressionPipeline.Run(original, new CompressionJob
                    {
                        Target = new MixTarget(mix),
                        Method = CompressionMethod.Gptq,
                        Statistics = stats,
                        Threads = options.Threads,
                        Output = gptq,
                    }, cancellationToken: Cli.Cancellation);
                    list.Add((Gptq, mix.Name, gptq));
                }
                return list;
            });
            if (options.NativeBitsPerWeight > 0)
                made.Add((Native, $"{options.NativeBitsPerWeight:0.0##} bpw", Cli.WithStages("native", progress =>
                    WriteNative(original, calibrationText, stats, options, nativePath, progress))));
            var outputs = made.Select(m => m.Path).ToList();
            var models = outputs.Select(f => ModelLoader.Load(f)).ToList();
            try
            {
                var evaluated = models.Prepend(original).ToList();
                var evaluation = new EvaluationOptions { ContextLength = 256, MaxChunks = options.Chunks, Threads = options.Threads };
                var results = Cli.WithProgress("evaluating", progress => Evaluator.EvaluateMany(evaluated, text, evaluation, original,
                    new SynchronousProgress<EvaluationProgress>(p => progress.Report((p.Chunk, p.Chunks, $"chunk {p.Chunk}/{p.Chunks}"))), Cli.Cancellation));
                var rows = new List<Row> { NewRow(Original, "F32", files.Model, original.ParameterCount, results[0]) };
                for (int i = 0; i < made.Count; i++)
                    rows.Add(NewRow(made[i].Method, made[i].Label, outputs[i], original.ParameterCount, results[i + 1]));
                DrawChart(rows, chart, first: results[0]);
                var report = new Report(files.Model, files.EvalText, files.CalibrationText, stats.TokenCount, options.NativeBitsPerWeight, chart, rows);
                if (options.Json)
                    Cli.WriteJson(report);
                else
                    Print(report);
            }
            finally
            {
                foreach (var m in models)
                    m.Dispose();
            }
        }
        finally
        {
            if (temporary)
                RemoveAllBut(directory, chart);
        }
        return 0;
    }

    /// <summary>Removes a temporary directory's models, keeping the chart (the directory goes too when there is none).</summary>
    private static void RemoveAllBut(string directory, string chart)
    {
        if (!File.Exists(chart))
        {
            Directory.Delete(directory, recursive: true);
            return;
        }
        foreach (string file in Directory.GetFiles(directory).Where(f => f != chart))
            File.Delete(file);
        foreach (string subdirectory in Directory.GetDirectories(directory))
            Directory.Delete(subdirectory, recursive: true);
    }

    /// <summary>The native model at the budget: every representation of the defaults encoded from the shared
    /// statistics, each single swap measured, the knapsack's choice written as a model directory.</summary>
    private static string WriteNative(Model original, string calibrationText, CalibrationStatistics stats, Options options, string path, IProgress<StageProgress> progress)
    {
        CompressionPipeline.Run(original, new CompressionJob
        {
            Target = new BudgetTarget(Bytes: null, options.NativeBitsPerWeight, Native: true),
            Method = CompressionMethod.Gptq,
            CalibrationText = calibrationText,
            Statistics = stats,
            Threads = options.Threads,
            Output = path,
        }, progress, Cli.Cancellation);
        return path;
    }

    /// <summary>A table row: the model's bytes on disk and bits per weight from them.</summary>
    private static Row NewRow(string method, string label, string path, long parameters, EvaluationResult result)
    {
        long bytes = Cli.FileBytes(path);
        string name = method switch
        {
            Original => $"original ({label})",
            Native => $"native {label} squeeze",
            _ => $"{label} {method}",
        };
        return new Row(name, method, label, path, bytes, 8.0 * bytes / parameters, result);
    }

    /// <summary>Size against quality: bits per weight across, mean KLD against the original up (log scale), one marker per
    /// compressed model, labelled with its mix or budget, one colour per method (the original, at KLD 0, is left out).</summary>
    private static void DrawChart(IReadOnlyList<Row> rows, string path, EvaluationResult first)
    {
        var series = new[] { Rounding, Gptq, Native }
            .Select(method => (Method: method, Rows: rows.Where(r => r.Method == method).ToList()))
            .Where(g => g.Rows.Count > 0)
            .Select(g => new ChartSeries(g.Method == Rounding ? "rounding (as llama-quantize without imatrix)" : g.Method == Gptq ? "Squeeze GPTQ, same GGUF types" : "Squeeze native format",
                [.. g.Rows.Select(r => r.BitsPerWeight)], [.. g.Rows.Select(r => r.Result.KlDivergence!.Mean)], Line: false, [.. g.Rows.Select(r => r.Label)]))
            .ToList();
        AllocationCharts.LogScale(series, path, $"stories15M: size against quality ({first.Chunks} chunks of {first.ContextLength} tokens)",
            "bits per weight (file bytes × 8 / parameters)", "mean KLD against the original (log scale)");
    }

    private static void Print(Report report)
    {
        var first = report.Rows[0].Result;
        Cli.Console.MarkupLine($"[bold]{Markup.Escape(report.Model)}[/] on {Markup.Escape(report.EvalText)}: {first.Chunks} chunks of {first.ContextLength} tokens, {first.ScoredTokens:N0} scored");
        var table = new Table().AddColumns("model", "file bytes", "bits/weight", "perplexity", "mean KLD", "99% KLD", "same top", "bits/byte");
        foreach (var c in table.Columns.Skip(1))
            c.RightAligned();
        foreach (var row in report.Rows)
        {
            var r = row.Result;
            var kl = r.KlDivergence!;
            table.AddRow(row.Name, row.Bytes.ToString("N0"), row.BitsPerWeight.ToString("0.00"), $"{r.Perplexity:0.0000}", kl.Mean.ToString("0.000000"),
                kl.Percentile99.ToString("0.0000"), $"{kl.SameTopTokenPercent:0.00} %", r.BitsPerByte.ToString("0.0000"));
        }
        Cli.Console.Write(table);
        Cli.Console.WriteLine($"chart: {report.Chart}");
        Cli.Console.WriteLine($"bits/weight: file bytes × 8 / parameters; rounding: each block rounded on its own, as llama-quantize does without an importance matrix; squeeze gptq: " +
            $"calibrated on {report.CalibrationTokens:N0} tokens of {report.CalibrationText}, same types and bytes per tensor" +
            (report.NativeBitsPerWeight > 0 ? $"; native: Squeeze's own format (docs/FORMAT.md, runs in Squeeze only) at {report.NativeBitsPerWeight:0.0##} bits per weight of the whole directory, " +
                "a representation per tensor chosen by knapsack on measured KLD from the same calibration" : ""));
    }
}
