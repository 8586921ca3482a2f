using System.CommandLine;
using Spectre.Console;
using Squeeze.Formats;
using Squeeze.Runtime;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze bench MODEL</c>: prompt-evaluation and decode tokens/s, as llama-bench measures them.</summary>
internal static class BenchCommand
{
    public sealed record Options(string Model, string? Tokenizer, int PromptTokens, int DecodeTokens, int[] Threads, int Repetitions, bool Json, string Kv = "f32");

    public sealed record Report(string Model, long ModelBytes, string KvCache, IReadOnlyList<SpeedResult> Results);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var prompt = new Option<int>("--prompt", "-p") { Description = "Prompt tokens processed as one batch", DefaultValueFactory = _ => 256 };
        var decode = new Option<int>("--decode", "-n") { Description = "Tokens decoded one at a time", DefaultValueFactory = _ => 128 };
        var threads = new Option<int[]>("--threads", "-t") { Description = "Thread counts to measure", DefaultValueFactory = _ => [1, Environment.ProcessorCount], AllowMultipleArgumentsPerToken = true };
        var repetitions = new Option<int>("--repetitions", "-r") { Description = "Runs per measurement (the median is reported)", DefaultValueFactory = _ => 5 };
        var json = Cli.JsonOption();
        var kv = Cli.KvCacheOption();
        var command = new Command("bench", "Measure prompt-evaluation and decode speed") { model, tokenizer, prompt, decode, threads, repetitions, json, kv };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(prompt), r.GetValue(decode),
            r.GetValue(threads)!.Distinct().ToArray(), r.GetValue(repetitions), r.GetValue(json), r.GetValue(kv)!))));
        return command;
    }

    public static int Execute(Options options)
    {
        if (options.Threads.Any(t => t < 1))
            throw new ArgumentException("--threads values must be at least 1");
        var kvCache = Cli.KvCache(options.Kv);
        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        var results = Cli.WithProgress("benchmarking", progress =>
        {
            var list = new List<SpeedResult>();
            foreach (int t in options.Threads)
            {
                progress.Report((list.Count, options.Threads.Length, $"{t} threads"));
                list.Add(SpeedBenchmark.Run(m, t, options.PromptTokens, options.DecodeTokens, options.Repetitions, kvCache: kvCache));
            }
            return list;
        });
        var report = new Report(options.Model, m.TensorBytes, kvCache.ToString(), results);
        if (options.Json)
        {
            Cli.WriteJson(report);
            return 0;
        }
        var table = new Table().AddColumns("threads", $"prompt {options.PromptTokens} tok/s", $"decode {options.DecodeTokens} tok/s", "decode weight GB/s");
        foreach (var c in table.Columns.Skip(1))
            c.RightAligned();
        foreach (var r in results)
            table.AddRow(r.Threads.ToString(), r.PromptTokensPerSecond.ToString("0"), r.DecodeTokensPerSecond.ToString("0"), (m.TensorBytes * r.DecodeTokensPerSecond / 1e9).ToString("0.0"));
        Cli.Console.MarkupLine($"[bold]{Markup.Escape(options.Model)}[/] ({m.TensorBytes:N0} bytes of weights; KV cache {Markup.Escape(kvCache.ToString())}; median of {options.Repetitions} runs)");
        Cli.Console.Write(table);
        return 0;
    }
}
