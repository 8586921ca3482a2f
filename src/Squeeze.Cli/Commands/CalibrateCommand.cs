using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using Squeeze.Calibration;
using Squeeze.Formats;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze calibrate MODEL --text FILE [--tokens N] [--ctx N] [--gram] [--layers L,..] [--cluster CONFIG] -o STATS</c>: collects the
/// activation statistics (importance matrix, max |x|, optionally XᵀX) of every linear layer's input.</summary>
internal static class CalibrateCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Text, long Tokens, int Context, bool Gram, string? Layers, string Output, int Threads, bool Json, string? Cluster = null);

    public sealed record Report(string Model, string Text, string Output, long Tokens, int ContextLength, int Chunks, int Entries, bool Gram,
        long FileBytes, double Seconds, long PeakMemoryBytes, string ModelIdentity);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var text = new Option<string>("--text") { Description = "UTF-8 calibration text", Required = true };
        var tokens = new Option<long>("--tokens") { Description = "Use at most this many tokens (0: the whole text)", DefaultValueFactory = _ => 0 };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Tokens per chunk (0: 256 or the model's context, whichever is smaller)", DefaultValueFactory = _ => 0 };
        var gram = new Option<bool>("--gram") { Description = "Also collect XᵀX of every input (for GPTQ and AWQ)" };
        var layers = new Option<string?>("--layers") { Description = "Only these layers, e.g. 0,1,5-7 (-1: the classifier); default all" };
        var output = new Option<string>("--output", "-o") { Description = "Statistics file to write", Required = true };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var cluster = WorkerCommand.ClusterOption();
        cluster.Description += " (each group of " + CalibrationShards.ChunksPerGroup + " chunks of each block is a work item; the file is the same bytes)";
        var command = new Command("calibrate", "Collect activation statistics (importance matrix, outliers, XᵀX) on a calibration text")
        {
            model, tokenizer, text, tokens, ctx, gram, layers, output, threads, json, cluster,
        };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(text)!, r.GetValue(tokens),
            r.GetValue(ctx), r.GetValue(gram), r.GetValue(layers), r.GetValue(output)!, r.GetValue(threads), r.GetValue(json), r.GetValue(cluster)))));
        return command;
    }

    public static int Execute(Options options)
    {
        if (options.Tokens < 0)
            throw new ArgumentException($"--tokens {options.Tokens} must not be negative");
        if (options.Context < 0)
            throw new ArgumentException($"--ctx {options.Context} must not be negative");
        var stopwatch = Stopwatch.StartNew();
        string text = Cli.ReadText(options.Text);
        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        var calibration = new CalibrationOptions
        {
            ContextLength = options.Context,
            MaxTokens = options.Tokens,
            CollectGram = options.Gram,
            Layers = options.Layers is null ? null : ParseLayers(options.Layers),
            Threads = Math.Max(1, options.Threads),
        };
        // Block by block into the file: one block's statistics in memory at a time (and a group's sum beside one shard's, here
        // or on each worker of a cluster).
        (CalibrationStatistics, int) Collect(CalibrationOptions calibration, string description) => Cli.WithProgress(description, progress => CalibrationFile.Collect(
            options.Output, m, text, calibration, new SynchronousProgress<CalibrationProgress>(p => progress.Report((p.Done, p.Total, p.Note))), Cli.Cancellation));
        var (stats, entries) = options.Cluster is null
            ? Collect(calibration, "calibrating")
            : WorkerCommand.WithCluster(options.Cluster, job => Collect(calibration with
            {
                Workers = new Squeeze.Cluster.ClusterCalibrationWorkers(job, WorkerCommand.Reference(options.Model, options.Tokenizer, m)),
            }, "calibrating on the cluster"));
        stopwatch.Stop();
        using var process = Process.GetCurrentProcess();
        var report = new Report(options.Model, options.Text, options.Output, stats.TokenCount, stats.ContextLength, (int)(stats.TokenCount / stats.ContextLength),
            entries, options.Gram, new FileInfo(options.Output).Length, stopwatch.Elapsed.TotalSeconds, process.PeakWorkingSet64, stats.Model.ToString());
        if (options.Json)
            Cli.WriteJson(report);
        else
            Print(report);
        return 0;
    }

    /// <summary>Parses "0,1,5-7" (and -1 for the classifier) into a set of layer indices.</summary>
    public static IReadOnlySet<int> ParseLayers(string spec)
    {
        var set = new SortedSet<int>();
        foreach (string part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = part.IndexOf('-', 1);
            if (dash > 0 && int.TryParse(part[..dash], out int from) && int.TryParse(part[(dash + 1)..], out int to) && from <= to && from >= -1)
            {
                for (int l = from; l <= to; l++)
                    set.Add(l);
            }
            else if (int.TryParse(part, out int layer) && layer >= -1)
            {
                set.Add(layer);
            }
            else
            {
                throw new ArgumentException($"--layers: '{part}' is not a layer or a range like 2-5");
            }
        }
        if (set.Count == 0)
            throw new ArgumentException("--layers names no layer");
        return set;
    }

    private static void Print(Report report)
    {
        var table = new Table().AddColumns("measure", "value");
        table.Columns[1].RightAligned();
        table.AddRow("model", Markup.Escape(report.ModelIdentity));
        table.AddRow("tokens", $"{report.Tokens:N0} ({report.Chunks} chunks x {report.ContextLength})");
        table.AddRow("entries", $"{report.Entries}{(report.Gram ? " with XᵀX" : "")}");
        table.AddRow("written", $"{Markup.Escape(report.Output)} ({Cli.Bytes(report.FileBytes)})");
        table.AddRow("time", $"{report.Seconds:0.00} s");
        table.AddRow("peak memory", Cli.Bytes(report.PeakMemoryBytes));
        Cli.Console.Write(table);
    }
}
