using System.CommandLine;
using Spectre.Console;
using Squeeze.Formats;
using Squeeze.Quantization;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze convert IN -o OUT.gguf --type MIX</c>: any readable checkpoint to a GGUF file with llama.cpp's named mixes.</summary>
internal static class ConvertCommand
{
    public sealed record Options(string Input, string? Tokenizer, string Output, string Type, bool Pure, string[] TensorTypes, string Search, int Threads, bool Json);

    public static Command Create()
    {
        var input = new Argument<string>("input") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var output = new Option<string>("--output", "-o") { Description = "GGUF file to write", Required = true };
        var type = new Option<string>("--type") { Description = "Named mix as llama.cpp names it: F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q5_1, Q5_0, Q4_K_M, Q4_K_S, Q4_1, Q4_0, IQ4_NL, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K", DefaultValueFactory = _ => "Q8_0" };
        var pure = new Option<bool>("--pure") { Description = "Every 2-D tensor in the mix's base type (no per-tensor rules)" };
        var tensorTypes = new Option<string[]>("--tensor-type") { Description = "Per-tensor override REGEX=TYPE (repeatable; first match wins)", DefaultValueFactory = _ => [] };
        var search = new Option<string>("--search")
        {
            Description = "How the k-quants and IQ4_NL choose their scales: refined (llama.cpp's search, then refinement that lowers each "
                + "block's error) or llama.cpp (its search alone: llama-quantize's bytes, at its speed)",
            DefaultValueFactory = _ => "refined",
        };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var command = new Command("convert", "Write a model as a GGUF file in one of llama.cpp's quantization mixes") { input, tokenizer, output, type, pure, tensorTypes, search, threads, json };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(input)!, r.GetValue(tokenizer), r.GetValue(output)!, r.GetValue(type)!,
            r.GetValue(pure), r.GetValue(tensorTypes)!, r.GetValue(search)!, r.GetValue(threads), r.GetValue(json)))));
        return command;
    }

    public static int Execute(Options options)
    {
        Cli.CheckOutput(options.Input, options.Output);
        var search = ScaleSearchNames.Parse(options.Search);
        var mix = QuantizationMix.Parse(options.Type);
        var overrides = options.TensorTypes.Select(TensorTypeOverride.Parse).ToList();
        using var model = ModelLoader.Load(options.Input, options.Tokenizer);
        Cli.NoteLeftOut(model);
        var plan = QuantizationMix.Plan(model, mix, overrides, options.Pure);
        foreach (var t in plan.Tensors.Where(t => t.Reason.Contains("fallback", StringComparison.Ordinal)))
            Cli.Status.MarkupLine($"[yellow]{Markup.Escape(t.ToString())}[/]");
        var report = Cli.WithProgress("converting", progress => GgufQuantizer.Write(model, plan, options.Output, importance: null, options.Threads,
            new SynchronousProgress<(int Done, int Total, string Tensor)>(p => progress.Report((p.Done, p.Total, p.Tensor))), search));
        if (options.Json)
            Cli.WriteJson(report);
        else
            PrintReport(report);
        return 0;
    }

    /// <summary>The closing table: per tensor type, bytes, bits per weight and relative error; then the totals.</summary>
    internal static void PrintReport(ConversionReport report)
    {
        var table = new Table().AddColumns("tensor", "type", "bytes", "bpw", "rel. RMS error", "note");
        table.Columns[2].RightAligned();
        table.Columns[3].RightAligned();
        table.Columns[4].RightAligned();
        foreach (var t in report.Tensors)
            table.AddRow(Markup.Escape(t.Name), t.Type.ToString(), t.Bytes.ToString("N0"), t.BitsPerWeight.ToString("0.00"), t.RelativeRmsError.ToString("0.0000"), Markup.Escape(t.Reason));
        Cli.Console.Write(table);
        string search = report.Search == ScaleSearch.LlamaCpp ? " (llama.cpp's scale search)" : "";
        Cli.Console.WriteLine($"{report.Output}: {report.Mix}{search}, {report.FileBytes:N0} bytes ({Cli.Bytes(report.FileBytes)}), {report.BitsPerWeight:0.000} bits per weight over {report.Parameters:N0} parameters, {report.Seconds:0.0} s");
    }
}
