using System.CommandLine;
using System.Diagnostics;
using System.Text;
using Spectre.Console;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Runtime;
using Squeeze.SavedCaches;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze generate MODEL --prompt TEXT</c>: continue a prompt, printing tokens as they come; with <c>--chat</c>
/// the prompt is a user's message in the model's chat template.</summary>
internal static class GenerateCommand
{
    public sealed record Options(string Model, string? Tokenizer, string Prompt, int MaxTokens, float Temperature, float TopP, int Seed, int Context, int Threads, bool Json, string Kv = "f32",
        string? SaveCache = null, string? LoadCache = null, string CachePolicy = SavedCacheDefault, bool Chat = false, string? System = null, string? ChatTemplate = null);

    /// <summary>How <c>--save-cache</c> stores keys and values unless <c>--cache-policy</c> says otherwise.</summary>
    public const string SavedCacheDefault = "pre:0.05";

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
        var saveCache = new Option<string?>("--save-cache") { Description = "Save the prompt's KV cache to this file (all positions but the last, compressed as --cache-policy says), to --load-cache later" };
        var loadCache = new Option<string?>("--load-cache") { Description = "Load a saved KV cache instead of recomputing the prompt; --prompt, if given, must begin with the saved tokens" };
        var cachePolicy = new Option<string>("--cache-policy")
        {
            Description = "How --save-cache stores keys and values: " + SavedCacheStorage.Syntax,
            DefaultValueFactory = _ => SavedCacheDefault,
        };
        var chat = new Option<bool>("--chat") { Description = "Treat the prompt as a user's message in the model's chat template, and answer it" };
        var system = new Option<string?>("--system") { Description = "With --chat: a system message before the user's" };
        var chatTemplate = Cli.ChatTemplateOption();
        var command = new Command("generate", "Continue a prompt with a model")
        {
            model, tokenizer, prompt, maxTokens, temperature, topP, seed, context, threads, json, kv, saveCache, loadCache, cachePolicy, chat, system, chatTemplate,
        };
        command.SetAction(r => Cli.Run(() => Execute(new Options(
            r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(prompt)!, r.GetValue(maxTokens), r.GetValue(temperature),
            r.GetValue(topP), r.GetValue(seed), r.GetValue(context), r.GetValue(threads), r.GetValue(json), r.GetValue(kv)!,
            r.GetValue(saveCache), r.GetValue(loadCache), r.GetValue(cachePolicy)!, r.GetValue(chat), r.GetValue(system), r.GetValue(chatTemplate)))));
        return command;
    }

    public static int Execute(Options options)
    {
        if (options.MaxTokens < 0)
            throw new ArgumentException($"--max-tokens {options.MaxTokens} must not be negative");
        if (options.Context < 0)
            throw new ArgumentException($"--ctx {options.Context} must not be negative");
        var kvCache = Cli.KvCache(options.Kv);
        var storage = SavedCacheStorage.Parse(options.CachePolicy);
        if (options.SaveCache is not null)
            Cli.CheckOutput(options.Model, options.SaveCache);
        using var m = ModelLoader.Load(options.Model, options.Tokenizer);
        using var runtime = new Transformer(m, new RuntimeOptions { Threads = options.Threads, ContextLength = options.Context, KvCache = kvCache });
        var sampler = new Sampler(new SamplingOptions { Temperature = options.Temperature, TopP = options.TopP, Seed = options.Seed });
        var tokenizer = m.Tokenizer;
        if (!options.Chat && (options.System is not null || options.ChatTemplate is not null))
            throw new ArgumentException("--system and --chat-template need --chat");
        int[] tokens = options.Chat
            ? ChatTemplate.For(m, options.ChatTemplate).Encode(tokenizer, [.. options.System is null ? Array.Empty<ChatMessage>() : [new ChatMessage("system", options.System)], new ChatMessage("user", options.Prompt)])
            : tokenizer.Encode(options.Prompt, tokenizer.Vocabulary.AddBos);
        string prompt = options.Chat ? "" : options.Prompt;
        int cached = 0;
        if (options.LoadCache is not null)
        {
            var loaded = SavedCache.Load(runtime, options.LoadCache);
            cached = loaded.Positions;
            if (options.Prompt.Length == 0)
            {
                tokens = [.. loaded.Tokens];
                prompt = tokenizer.Decode(tokens);
            }
            else if (tokens.Length <= cached || !tokens.AsSpan(0, cached).SequenceEqual(loaded.Tokens.Take(cached).ToArray()))
            {
                throw new ArgumentException($"{options.LoadCache}: the prompt does not begin with the {loaded.Tokens.Count} tokens saved there; leave --prompt out to continue the saved one");
            }
        }
        if (tokens.Length >= runtime.Cache.ContextLength)
            throw new ArgumentException($"the prompt has {tokens.Length} tokens; the context holds {runtime.Cache.ContextLength}");
        if (options.SaveCache is not null)
        {
            var saved = SavedCache.Save(runtime, tokens, storage, options.SaveCache);
            Cli.Status.WriteLine($"saved the KV cache of {saved.Positions} positions to {options.SaveCache}: {saved.Bytes:N0} bytes ({saved.BytesPerToken:0} per token, {saved.Storage})");
        }
        int promptTokens = tokens.Length;

        var bytes = new List<byte>();
        var decoder = Encoding.UTF8.GetDecoder();
        var chars = new char[64];
        if (!options.Json)
            Console.Out.Write(prompt);
        var clock = Stopwatch.StartNew();
        double promptSeconds = 0;
        runtime.Resume(cached);
        var generated = Generator.Continue(runtime, tokens.AsSpan(cached), options.MaxTokens, sampler, token =>
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
            options.Chat ? options.Prompt : prompt,
            prompt + Encoding.UTF8.GetString(bytes.ToArray()),
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
