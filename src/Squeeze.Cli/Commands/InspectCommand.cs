using System.CommandLine;
using Spectre.Console;
using Squeeze.Formats;
using Squeeze.Models;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze inspect FILE</c>: architecture, tokenizer and every tensor with its type, shape, bytes and bits per weight.</summary>
internal static class InspectCommand
{
    public sealed record Options(string Model, string? Tokenizer, bool Json);

    public sealed record TensorRow(string Name, string Type, long[] Shape, long Bytes, double BitsPerWeight);

    public sealed record Report(string Source, ModelConfig Config, string Tokenizer, int VocabularySize, long Parameters, long TensorBytes, double BitsPerWeight, IReadOnlyList<TensorRow> Tensors,
        string? LeftOut);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint (default: found beside it)" };
        var json = Cli.JsonOption();
        var command = new Command("inspect", "Show a model's architecture, tokenizer and tensors") { model, tokenizer, json };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(json)))));
        return command;
    }

    public static int Execute(Options options)
    {
        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        var report = new Report(
            m.Source,
            m.Config,
            m.Vocabulary.Kind.ToString(),
            m.Vocabulary.Count,
            m.ParameterCount,
            m.TensorBytes,
            8.0 * m.TensorBytes / m.ParameterCount,
            [.. m.Tensors.Select(t => new TensorRow(t.Name, t.Type.ToString(), t.Shape, t.ByteLength, t.BitsPerWeight)),
                .. m.Weights.Select(w => new TensorRow(w.Name, w.Scheme, [w.Rows, w.Columns], w.StoredBytes, w.BitsPerWeight))],
            m.LeftOut);
        if (options.Json)
        {
            Cli.WriteJson(report);
            return 0;
        }

        var c = m.Config;
        var console = Cli.Console;
        console.MarkupLine($"[bold]{Markup.Escape(m.Source)}[/]");
        console.WriteLine($"architecture {c.Architecture}: dim {c.Dim}, hidden {c.HiddenDim}, layers {c.LayerCount}, heads {c.HeadCount} (kv {c.KvHeadCount}, head dim {c.HeadDim}), context {c.ContextLength}");
        console.WriteLine($"rope {c.RopeStyle} θ={c.RopeTheta}, rms eps {c.RmsNormEps}, {(c.TiedEmbeddings ? "tied" : "separate")} classifier{(c.AttentionBias ? ", attention biases" : "")}{(c.QkNorm ? ", q/k norms" : "")}");
        console.WriteLine($"tokenizer {report.Tokenizer}, {report.VocabularySize} tokens");
        if (report.LeftOut is { } leftOut)
            console.MarkupLine($"[yellow]{Markup.Escape(leftOut)}[/]");
        var table = new Table().AddColumns("tensor", "type or scheme", "shape", "bytes", "bpw");
        table.Columns[3].RightAligned();
        table.Columns[4].RightAligned();
        foreach (var t in report.Tensors)
            table.AddRow(Markup.Escape(t.Name), t.Type, string.Join(" x ", t.Shape), t.Bytes.ToString("N0"), t.BitsPerWeight.ToString("0.00"));
        console.Write(table);
        console.WriteLine($"{report.Parameters:N0} parameters, {report.TensorBytes:N0} bytes of tensors ({Cli.Bytes(report.TensorBytes)}), {report.BitsPerWeight:0.000} bits per weight");
        return 0;
    }
}
