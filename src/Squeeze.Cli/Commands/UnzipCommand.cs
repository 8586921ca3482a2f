using System.CommandLine;
using Spectre.Console;
using Squeeze.Coding;
using Squeeze.Formats;
using Squeeze.Zip;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze unzip MODEL IN.sqz -o OUT</c>: restores the original bytes of a .sqz file with the model it was made with.</summary>
internal static class UnzipCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Input, string Output, int Threads, bool Json, string? Cluster = null);

    public sealed record Report(string Model, string Input, string Output, UnzipResult Result, double BytesPerSecond);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The model the file was compressed with (checked by fingerprint)" };
        var input = new Argument<string>("input") { Description = ".sqz file" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var output = new Option<string>("--output", "-o") { Description = "File to write the original bytes to", Required = true };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var cluster = WorkerCommand.ClusterOption();
        cluster.Description += " (each block is a work item)";
        var command = new Command("unzip", "Decompress a .sqz file written by squeeze zip") { model, input, tokenizer, output, threads, json, cluster };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(input)!, r.GetValue(output)!,
            r.GetValue(threads), r.GetValue(json), r.GetValue(cluster)))));
        return command;
    }

    public static int Execute(Options options)
    {
        Cli.CheckOutput(options.Input, options.Output);
        if (!File.Exists(options.Input))
            throw new FileNotFoundException($"{options.Input}: no such file");
        using var model = ModelLoader.Load(options.Model, options.Tokenizer);
        var result = options.Cluster is null
            ? Cli.WithProgress("decompressing", progress => ModelCodec.DecompressFile(model, options.Input, options.Output, options.Threads,
                ZipCommand.WithRate(progress), cancellationToken: Cli.Cancellation))
            : WorkerCommand.WithCluster(options.Cluster, job => Cli.WithProgress("decompressing on the cluster", progress => ModelCodec.DecompressFile(model, options.Input,
                options.Output, options.Threads, null, new Squeeze.Cluster.ClusterZipWorkers(job, WorkerCommand.Reference(options.Model, options.Tokenizer, model), blocksAtOnce: 8,
                    WorkerCommand.Bar(progress)), Cli.Cancellation)));
        var report = new Report(options.Model, options.Input, options.Output, result, result.BytesPerSecond);
        if (options.Json)
            Cli.WriteJson(report);
        else
            Cli.Console.WriteLine($"{options.Output}: {result.InputBytes:N0} → {result.OutputBytes:N0} bytes, checksum verified; {result.BytesPerSecond / 1000:0.0} KB/s");
        return 0;
    }
}
