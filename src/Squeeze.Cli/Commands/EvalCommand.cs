using System.CommandLine;
using Spectre.Console;
using Squeeze.Cluster;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Runtime;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze eval MODEL --text FILE --ctx N [--base MODEL] [--kv POLICY | --kv-sweep]</c>: perplexity, bits per
/// byte, and KL divergence against a base model, or against the model's own f32 KV cache when the cache is compressed.</summary>
internal static class EvalCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Text, int Context, int Chunks, string? Base, int Threads, bool Json, string Kv = "f32", bool KvSweep = false, string? Cluster = null);

    /// <summary><paramref name="ModelBytes"/>: the model's bytes on disk (its file, or every file of its directory), from which
    /// <paramref name="ModelBitsPerWeight"/> is counted; <paramref name="TensorBytes"/>: the bytes of its weights alone.</summary>
    public sealed record Report(string Model, string Text, string? Base, long ModelBytes, double ModelBitsPerWeight, long TensorBytes, EvaluationResult Result);

    public sealed record SweepReport(string Model, string Text, long ModelBytes, IReadOnlyList<EvaluationResult> Results);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var text = new Option<string>("--text") { Description = "UTF-8 text file to score", Required = true };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Tokens per chunk", DefaultValueFactory = _ => 256 };
        var chunks = new Option<int>("--chunks") { Description = "Score at most this many chunks (0: all)", DefaultValueFactory = _ => 0 };
        var baseModel = new Option<string?>("--base") { Description = "Reference model for KL divergence (run side by side)" };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var kv = Cli.KvCacheOption();
        kv.Description += ". Without --base, a compressed cache is compared with the same model's f32 cache";
        var kvSweep = new Option<bool>("--kv-sweep") { Description = "Evaluate every standard KV-cache policy against the f32 cache: KLD, perplexity, cache bytes per token" };
        var cluster = WorkerCommand.ClusterOption();
        var command = new Command("eval", "Perplexity, bits per byte and KL divergence of a model on a text (llama.cpp's method)") { model, tokenizer, text, ctx, chunks, baseModel, threads, json, kv, kvSweep, cluster };
        command.SetAction(r => Cli.Run(() => Execute(new Options(
            r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(text)!, r.GetValue(ctx), r.GetValue(chunks), r.GetValue(baseModel), r.GetValue(threads), r.GetValue(json),
            r.GetValue(kv)!, r.GetValue(kvSweep), r.GetValue(cluster)))));
        return command;
    }

    public static int Execute(Options options)
    {
        var kvCache = Cli.KvCache(options.Kv);
        if (options.KvSweep && (options.Base is not null || kvCache.Kind != KvCacheKind.Float32))
            throw new ArgumentException("--kv-sweep compares every cache policy with the model's own f32 cache: it takes neither --base nor --kv");
        string text = Cli.ReadText(options.Text);
        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        using var b = options.Base is null ? null : ModelLoader.Load(options.Base, options.Tokenizer);
        var evaluation = new EvaluationOptions { ContextLength = options.Context, MaxChunks = options.Chunks, Threads = options.Threads, KvCache = kvCache };
        if (options.KvSweep)
            return Sweep(options, m, text, evaluation);
        if (options.KvSweep && options.Cluster is not null)
            throw new ArgumentException("--kv-sweep runs on this machine: it does not take --cluster");
        var result = options.Cluster is not null
            ? WorkerCommand.WithCluster(options.Cluster, job => Cli.WithProgress("evaluating on the cluster", progress => ClusterEvaluator.EvaluateAsync(job, m,
                WorkerCommand.Reference(options.Model, options.Tokenizer, m), text, evaluation, b, b is null ? null : WorkerCommand.Reference(options.Base!, options.Tokenizer, b),
                WorkerCommand.Bar(progress), Cli.Cancellation).GetAwaiter().GetResult()))
            : Cli.WithProgress("evaluating", progress =>
        {
            var report = new SynchronousProgress<EvaluationProgress>(p => progress.Report((p.Chunk, p.Chunks, $"chunk {p.Chunk}/{p.Chunks} ppl {p.Perplexity:0.0000}")));
            return b is null && kvCache.Kind != KvCacheKind.Float32
                ? Evaluator.EvaluateKvCaches(m, [kvCache], text, evaluation, report, Cli.Cancellation)[0]
                : Evaluator.Evaluate(m, text, evaluation, b, report, Cli.Cancellation);
        });
        long bytes = Cli.FileBytes(options.Model);
        var report = new Report(options.Model, options.Text, options.Base, bytes, 8.0 * bytes / m.ParameterCount, m.TensorBytes, result);
        if (options.Json)
            Cli.WriteJson(report);
        else
            Print(report);
        return 0;
    }

    private static void Print(Report report)
    {
        var r = report.Result;
        var table = new Table().AddColumns("measure", "value");
        table.Columns[1].RightAligned();
        table.AddRow("model", Markup.Escape(report.Model));
        table.AddRow("size", $"{report.ModelBytes:N0} bytes on disk ({report.ModelBitsPerWeight:0.000} bpw), {report.TensorBytes:N0} of weights");
        table.AddRow("chunks x ctx", $"{r.Chunks} x {r.ContextLength} ({r.ScoredTokens:N0} scored tokens)");
        table.AddRow("perplexity", $"{r.Perplexity:0.0000} ± {r.PerplexityError:0.0000}");
        table.AddRow("bits per byte", $"{r.BitsPerByte:0.0000}");
        table.AddRow("KV cache", $"{Markup.Escape(r.KvCache)}: {r.KvCacheBytesPerToken:N0} bytes per token at ctx {r.ContextLength}");
        if (r.KlDivergence is { } kl)
        {
            table.AddRow(report.Base is null && r.KvCache != "f32" ? "f32-cache perplexity" : "base perplexity", $"{kl.BasePerplexity:0.0000}");
            table.AddRow("mean KLD", $"{kl.Mean:0.000000} ± {kl.MeanError:0.000000}");
            table.AddRow("median KLD", $"{kl.Median:0.000000}");
            table.AddRow("99% KLD", $"{kl.Percentile99:0.000000}");
            table.AddRow("max KLD", $"{kl.Maximum:0.000000}");
            table.AddRow("same top token", $"{kl.SameTopTokenPercent:0.00} %");
            table.AddRow("RMS Δp", $"{kl.RmsDeltaPPercent:0.000} %");
        }
        table.AddRow("speed", $"{r.TokensPerSecond:0} tokens/s");
        Cli.Console.Write(table);
    }

    private static int Sweep(Options options, Models.Model m, string text, EvaluationOptions evaluation)
    {
        var policies = KvCachePolicy.Standard;
        var results = Cli.WithProgress("evaluating cache policies", progress => Evaluator.EvaluateKvCaches(m, policies, text, evaluation,
            new SynchronousProgress<EvaluationProgress>(p => progress.Report((p.Chunk, p.Chunks, $"chunk {p.Chunk}/{p.Chunks}"))), Cli.Cancellation));
        if (options.Json)
        {
            Cli.WriteJson(new SweepReport(options.Model, options.Text, Cli.FileBytes(options.Model), results));
            return 0;
        }
        var r0 = results[0];
        Cli.Console.MarkupLine($"[bold]{Markup.Escape(options.Model)}[/]: {r0.Chunks} x {r0.ContextLength} tokens, KL divergence against the f32 cache (ppl {r0.KlDivergence!.BasePerplexity:0.0000})");
        var table = new Table().AddColumns("KV cache", "bytes/token", "of f32", "mean KLD", "99% KLD", "same top", "perplexity", "tokens/s");
        foreach (var c in table.Columns.Skip(1))
            c.RightAligned();
        foreach (var r in results)
        {
            var kl = r.KlDivergence!;
            table.AddRow(Markup.Escape(r.KvCache), $"{r.KvCacheBytesPerToken:N0}", $"{r.KvCacheBytesPerToken / r0.KvCacheBytesPerToken:0.0%}",
                $"{kl.Mean:0.000000} ± {kl.MeanError:0.000000}", $"{kl.Percentile99:0.00000}", $"{kl.SameTopTokenPercent:0.00} %", $"{r.Perplexity:0.0000}", $"{r.TokensPerSecond:0}");
        }
        Cli.Console.Write(table);
        return 0;
    }
}
