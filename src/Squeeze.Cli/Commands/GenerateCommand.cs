using System.CommandLine;
using System.Diagnostics;
using System.Text;
using Spectre.Console;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Runtime;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze generate MODEL --prompt TEXT</c>: continue a prompt, printing tokens as they come; with <c>--chat</c>
/// the prompt is a user's message in the model's chat template.</summary>
internal static class GenerateCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Prompt, int MaxTokens, float Temperature, float TopP, int Seed, int Context, int Threads, bool Json, string Kv = "f32", bool Chat = false, string? System = null, string? ChatTemplate = null);

    public sealed record Report(string Prompt, string Text, int PromptTokens, int GeneratedTokens, double PromptTokensPerSecond, double DecodeTokensPerSecond, float Temperature, float TopP, int Seed);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Checkpoint: llama2.c .bin, GGUF, or a Hugging Face directory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var prompt = new Option<string>("--prompt", "-p") { Description = "Text to continue", DefaultValueFactory = _ => "" };
        var maxTokens = new Option<int>("--max-tokens", "-n") { Description = "Tokens to generate at most", DefaultValueFactory = _ => 256 };
        var temperature = new Option<float>("--temp") { Description = "Sampling temperature; 0 is greedy", DefaultValueFactory = _ => 0.8f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling threshold", DefaultValueFactory = _ => 0.95f };
        var seed = new Option<int>("--seed") { Description = "Seed of the sampler", DefaultValueFactory = _ => 42 };
        var context = new Option<int>("--ctx", "-c") { Description = "Context length in tokens (0: the length the model file declares)", DefaultValueFactory = _ => 0 };
        var threads = Cli.ThreadsOption();
        var json = Cli.JsonOption();
        var kv = Cli.KvCacheOption();
        var chat = new Option<bool>("--chat") { Description = "Treat the prompt as a user's message in the model's chat template, and answer it" };
        var system = new Option<string?>("--system") { Description = "With --chat: a system message before the user's" };
        var chatTemplate = Cli.ChatTemplateOption();
        var command = new Command("generate", "Continue a prompt with a model") { model, tokenizer, prompt, maxTokens, temperature, topP, seed, context, threads, json, kv, chat, system, chatTemplate };
        command.SetAction(r => Cli.Run(() => Execute(new Options(
            r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(prompt)!, r.GetValue(maxTokens), r.GetValue(temperature),
            r.GetValue(topP), r.GetValue(seed), r.GetValue(context), r.GetValue(threads), r.GetValue(json), r.GetValue(kv)!,
            r.GetValue(chat), r.GetValue(system), r.GetValue(chatTemplate)))));
        return command;
    }

    public static int Execute(Options options)
    {
        if (options.MaxTokens < 0)
            throw new ArgumentException($"--max-tokens {options.MaxTokens} must not be negative");
        if (options.Context < 0)
            throw new ArgumentException($"--ctx {options.Context} must not be negative");
        var kvCache = Cli.KvCache(options.Kv);
        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        using var runtime = new Transformer(m, new RuntimeOptions { Threads = options.Threads, ContextLength = options.Context, KvCache = kvCache });
        var sampler = new Sampler(new SamplingOptions { Temperature = options.Temperature, TopP = options.TopP, Seed = options.Seed });
        var tokenizer = m.Tokenizer;
        if (!options.Chat && (options.System is not null || options.ChatTemplate is not null))
            throw new ArgumentException("--system and --chat-template need --chat");
        int[] promptIds = options.Chat
            ? ChatTemplate.For(m, options.ChatTemplate).Encode(tokenizer, [.. options.System is null ? Array.Empty<ChatMessage>() : [new ChatMessage("system", options.System)], new ChatMessage("user", options.Prompt)])
            : tokenizer.Encode(options.Prompt, addBos: true);
        int promptTokens = promptIds.Length;

        var bytes = new List<byte>();
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = new char[64];
        if (!options.Json && !options.Chat)
            Console.Out.Write(options.Prompt);
        var clock = Stopwatch.StartNew();
        double promptSeconds = 0;
        var generated = Generator.Generate(runtime, promptIds, options.MaxTokens, sampler, token =>
        {
            if (promptSeconds == 0)
                promptSeconds = clock.Elapsed.TotalSeconds;
            byte[] piece = tokenizer.TokenBytes(token);
            bytes.AddRange(piece);
            if (!options.Json)
            {
                int n = decoder.GetChars(piece, 0, piece.Length, chars, 0, flush: false);
                Console.Out.Write(chars, 0, n);
                Console.Out.Flush();
            }
        });
        double total = clock.Elapsed.TotalSeconds;
        var report = new Report(
            options.Prompt,
            (options.Chat ? "" : options.Prompt) + Encoding.UTF8.GetString(bytes.ToArray()),
            promptTokens,
            generated.Count,
            promptTokens / Math.Max(promptSeconds, 1e-9),
            Math.Max(0, generated.Count - 1) / Math.Max(total - promptSeconds, 1e-9),
            options.Temperature,
            options.TopP,
            options.Seed);
        if (options.Json)
        {
            Cli.WriteJson(report);
        }
        else
        {
            Console.Out.WriteLine();
            Cli.Status.WriteLine($"prompt {report.PromptTokens} tokens at {report.PromptTokensPerSecond:0} tokens/s; generated {report.GeneratedTokens} tokens at {report.DecodeTokensPerSecond:0} tokens/s");
        }
        return 0;
    }
}
