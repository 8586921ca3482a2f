using System.CommandLine;
using Spectre.Console;
using Squeeze.Evaluation;
using Squeeze.Formats;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze eval MODEL --text FILE --ctx N [--base MODEL]</c>: perplexity, bits per byte, and KL divergence against a base model.</summary>
internal static class EvalCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Text, int Context, int Chunks, string? Base, int Threads, bool Json);

    public sealed record Report(string Model, string Text, string? Base, long ModelBytes, double ModelBitsPerWeight, EvaluationResult Result);

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
        var command = new Command("eval", "Perplexity, bits per byte and KL divergence of a model on a text (llama.cpp's method)") { model, tokenizer, text, ctx, chunks, baseModel, threads, json };
        command.SetAction(r => Cli.Run(() => Execute(new Options(
            r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(text)!, r.GetValue(ctx), r.GetValue(chunks), r.GetValue(baseModel), r.GetValue(threads), r.GetValue(json)))));
        return command;
    }

    public static int Execute(Options options)
    {
        string text = Cli.ReadText(options.Text);
        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        using var b = options.Base is null ? null : ModelLoader.Load(options.Base, options.Tokenizer);
        var evaluation = new EvaluationOptions { ContextLength = options.Context, MaxChunks = options.Chunks, Threads = options.Threads };
        var result = Cli.WithProgress("evaluating", progress => Evaluator.Evaluate(m, text, evaluation, b,
            new SynchronousProgress<EvaluationProgress>(p => progress.Report((p.Chunk, p.Chunks, $"chunk {p.Chunk}/{p.Chunks} ppl {p.Perplexity:0.0000}")))));
        var report = new Report(options.Model, options.Text, options.Base, m.TensorBytes, 8.0 * m.TensorBytes / m.ParameterCount, result);
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
        table.AddRow("size", $"{report.ModelBytes:N0} bytes ({report.ModelBitsPerWeight:0.000} bpw)");
        table.AddRow("chunks x ctx", $"{r.Chunks} x {r.ContextLength} ({r.ScoredTokens:N0} scored tokens)");
        table.AddRow("perplexity", $"{r.Perplexity:0.0000} ± {r.PerplexityError:0.0000}");
        table.AddRow("bits per byte", $"{r.BitsPerByte:0.0000}");
        if (r.KlDivergence is { } kl)
        {
            table.AddRow("base perplexity", $"{kl.BasePerplexity:0.0000}");
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
}
