using System.CommandLine;
using System.Diagnostics;
using Spectre.Console;
using Squeeze.Formats;
using Squeeze.Prompts;
using Squeeze.Runtime;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze prompt compress MODEL IN.txt --ratio 3 -o OUT.txt</c>: a prompt shortened by what a small model
/// finds predictable (LLMLingua, Selective Context, extractive sentence selection, or a baseline).</summary>
internal static class PromptCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Input, string Output, double Ratio, string Method, string? Question, int Seed, int Context, int Threads, bool Json);

    public sealed record Report(string Model, string Input, string Output, string Method, double TargetRatio, int OriginalTokens, int Tokens, double Ratio, long ScoredTokens, double Seconds);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The scoring model: llama2.c .bin, GGUF, Hugging Face or native directory" };
        var input = new Argument<string>("input") { Description = "The prompt: a UTF-8 text file" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var output = new Option<string>("--output", "-o") { Description = "Text file to write the compressed prompt to", Required = true };
        var ratio = new Option<double>("--ratio", "-r") { Description = "Prompt tokens per kept token (at least 1)", DefaultValueFactory = _ => 2 };
        var method = new Option<string>("--method", "-m")
        {
            Description = "One of " + string.Join(", ", Enum.GetValues<PromptCompressionMethod>().Select(PromptCompressionOptions.Name)),
            DefaultValueFactory = _ => PromptCompressionOptions.Name(PromptCompressionMethod.LlmLingua),
        };
        var question = new Option<string?>("--question", "-q") { Description = "A question the compressed prompt must still answer (llmlingua: LongLLMLingua's question-aware scores; extractive: the query)" };
        var seed = new Option<int>("--seed") { Description = "Seed of the random baseline", DefaultValueFactory = _ => new PromptCompressionOptions().Seed };
        var context = new Option<int>("--ctx", "-c") { Description = "Context length of the scoring windows in tokens (0: the model's)", DefaultValueFactory = _ => 0 };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var compress = new Command("compress", "Shorten a prompt to a ratio of its tokens, dropping what the model can predict")
            { model, input, tokenizer, output, ratio, method, question, seed, context, threads, json };
        compress.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(input)!, r.GetValue(output)!,
            r.GetValue(ratio), r.GetValue(method)!, r.GetValue(question), r.GetValue(seed), r.GetValue(context), r.GetValue(threads), r.GetValue(json)))));
        return new Command("prompt", "Prompt compression") { compress };
    }

    public static int Execute(Options options)
    {
        var method = PromptCompressionOptions.Parse(options.Method);
        if (!(options.Ratio >= 1) || double.IsInfinity(options.Ratio))
            throw new ArgumentException($"--ratio {options.Ratio} must be a number of at least 1");
        if (options.Context < 0)
            throw new ArgumentException($"--ctx {options.Context} must not be negative");
        Cli.CheckOutput(options.Input, options.Output);
        if (!File.Exists(options.Input))
            throw new FileNotFoundException($"{options.Input}: no such file");
        string prompt = Cli.ReadText(options.Input);
        try
        {
            PromptCompressor.Validate(prompt);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{options.Input}: {e.Message.Replace(" (Parameter 'prompt')", "", StringComparison.Ordinal)}", e);
        }
        using var model = ModelLoader.Load(options.Model, options.Tokenizer);
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = options.Threads, ContextLength = options.Context });
        var compression = new PromptCompressionOptions { Ratio = options.Ratio, Method = method, Question = options.Question, Seed = options.Seed };
        var clock = Stopwatch.StartNew();
        var result = Cli.WithStages("compressing", progress => PromptCompressor.Compress(runtime, prompt, compression, progress, Cli.Cancellation));
        double seconds = clock.Elapsed.TotalSeconds;
        string temporary = options.Output + ".tmp";
        try
        {
            File.WriteAllText(temporary, result.Text, new System.Text.UTF8Encoding(false));
            File.Move(temporary, options.Output, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
        var report = new Report(options.Model, options.Input, options.Output, PromptCompressionOptions.Name(method), options.Ratio,
            result.OriginalTokens, result.Tokens, result.Ratio, result.ScoredTokens, seconds);
        if (options.Json)
            Cli.WriteJson(report);
        else
            Cli.Console.WriteLine($"{options.Output}: {result.OriginalTokens:N0} → {result.Tokens:N0} tokens, ratio {result.Ratio:0.00} ({report.Method}; {result.ScoredTokens:N0} tokens scored in {seconds:0.00} s)");
        return 0;
    }
}
