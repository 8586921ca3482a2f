using System.CommandLine;
using Spectre.Console;
using Squeeze.Coding;
using Squeeze.Formats;
using Squeeze.Zip;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze zip MODEL IN -o OUT.sqz</c>: lossless compression of any file with a language model as the predictor.</summary>
internal static class ZipCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Input, string Output, int Lanes, int SegmentBytes, int Context, int? Overlap, int Lookahead, int Threads, bool Json, string? Cluster = null);

    public sealed record Report(string Model, string Input, string Output, ZipResult Result, double BitsPerByte, double ModelBitsPerByte, double Ratio, double BytesPerSecond);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, Hugging Face or native directory" };
        var input = new Argument<string>("input") { Description = "File to compress (any bytes)" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var output = new Option<string>("--output", "-o") { Description = ".sqz file to write", Required = true };
        var lanes = new Option<int>("--lanes") { Description = "Segments run side by side (one batch row each)", DefaultValueFactory = _ => new ZipOptions().Lanes };
        var segment = new Option<int>("--segment-bytes") { Description = "Largest segment in bytes (each starts from BOS)", DefaultValueFactory = _ => new ZipOptions().SegmentBytes };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Window of each segment in tokens (0: the model's context length)", DefaultValueFactory = _ => 0 };
        var overlap = new Option<int?>("--overlap") { Description = "Tokens re-fed when a full window restarts (default: a quarter of the window)" };
        var lookahead = new Option<int>("--lookahead") { Description = "Symbols over which two parses (a BOS token or a document break against the plain tokens) are compared; 0: plain tokens", DefaultValueFactory = _ => new ZipOptions().Lookahead };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var cluster = WorkerCommand.ClusterOption();
        cluster.Description += " (each block of --lanes segments is a work item; the archive is the same bytes)";
        var command = new Command("zip", "Compress a file losslessly with a language model (arithmetic coding of its next-token probabilities)")
            { model, input, tokenizer, output, lanes, segment, ctx, overlap, lookahead, threads, json, cluster };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(input)!, r.GetValue(output)!,
            r.GetValue(lanes), r.GetValue(segment), r.GetValue(ctx), r.GetValue(overlap), r.GetValue(lookahead), r.GetValue(threads), r.GetValue(json), r.GetValue(cluster)))));
        return command;
    }

    public static int Execute(Options options)
    {
        Cli.CheckOutput(options.Input, options.Output);
        if (!File.Exists(options.Input))
            throw new FileNotFoundException($"{options.Input}: no such file");
        using var model = ModelLoader.Load(options.Model, options.Tokenizer);
        var zip = new ZipOptions { Lanes = options.Lanes, SegmentBytes = options.SegmentBytes, ContextLength = options.Context, Overlap = options.Overlap, Lookahead = options.Lookahead, Threads = options.Threads };
        var result = options.Cluster is null
            ? Cli.WithProgress("compressing", progress => ModelCodec.CompressFile(model, options.Input, options.Output, zip, WithRate(progress), Cli.Cancellation))
            : WorkerCommand.WithCluster(options.Cluster, job => Cli.WithProgress("compressing on the cluster", progress => ModelCodec.CompressFile(model, options.Input, options.Output,
                zip with { Workers = new Squeeze.Cluster.ClusterZipWorkers(job, WorkerCommand.Reference(options.Model, options.Tokenizer, model), blocksAtOnce: 8, WorkerCommand.Bar(progress)) },
                null, Cli.Cancellation)));
        var report = new Report(options.Model, options.Input, options.Output, result, result.BitsPerByte, result.ModelBitsPerByte, result.Ratio, result.BytesPerSecond);
        if (options.Json)
            Cli.WriteJson(report);
        else
        {
            // two short lines: the console wraps at 240 columns when stdout is redirected
            Cli.Console.WriteLine($"{result.Tokens:N0} tokens, {result.Escapes:N0} escaped bytes, {result.Segments:N0} segments, {result.Breaks:N0} breaks, {result.BosTokens:N0} BOS, header and tables {result.OverheadBytes:N0} bytes; {result.BytesPerSecond / 1000:0.0} KB/s");
            Cli.Console.WriteLine($"{options.Output}: {result.InputBytes:N0} → {result.OutputBytes:N0} bytes, {result.BitsPerByte:0.0000} bits per byte, ratio {result.Ratio:0.00}; " +
                $"model cross-entropy {result.ModelBitsPerByte:0.0000} bits per byte (streams {result.StreamOverhead * 100:+0.00;-0.00;0.00}%)");
        }
        return 0;
    }

    /// <summary>A codec's progress shown with its rate in KB/s since the call (zip and unzip).</summary>
    internal static IProgress<CodecProgress> WithRate(IProgress<(double Done, double Total, string Note)> progress)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        return new SynchronousProgress<CodecProgress>(p => progress.Report((p.Done, p.Total, $"{p.Done / Math.Max(1e-9, clock.Elapsed.TotalSeconds) / 1000:0.0} KB/s")));
    }
}
