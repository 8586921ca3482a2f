using System.CommandLine;
using Squeeze.Server;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze serve MODEL</c>: the model behind an OpenAI-compatible HTTP server until Ctrl+C or SIGTERM.</summary>
internal static class ServeCommand
{
    public sealed record Options(
        string Model, string? Tokenizer, string? Base, string? BaseTokenizer, string Host, int Port, int Parallel, int Queue, string Kv, int Context,
        int Threads, int MaxPrompt, int MaxTokens, double TimeLimit, long MaxBody, string? ChatTemplate);

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Model to serve: GGUF, native directory, Hugging Face directory or llama2.c .bin" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file for a llama2.c checkpoint" };
        var baseModel = new Option<string?>("--base") { Description = "The original model, shown beside MODEL on the comparison page at /" };
        var baseTokenizer = new Option<string?>("--base-tokenizer") { Description = "Tokenizer file for a llama2.c --base" };
        var host = new Option<string>("--host") { Description = "Address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port to listen on (0: any free port, printed at start)", DefaultValueFactory = _ => 8080 };
        var parallel = new Option<int>("--parallel", "-np") { Description = "Sequences decoded together in one forward pass (each with its KV cache)", DefaultValueFactory = _ => 4 };
        var queue = new Option<int>("--queue") { Description = "Requests that may wait for a free sequence; more are refused with 429", DefaultValueFactory = _ => 64 };
        var kv = Cli.KvCacheOption();
        var context = new Option<int>("--ctx", "-c") { Description = "Context length of each sequence in tokens (0: the model's)", DefaultValueFactory = _ => 0 };
        var threads = Cli.ThreadsOption();
        var maxPrompt = new Option<int>("--max-prompt") { Description = "Most prompt tokens a request may send (0: the context less one)", DefaultValueFactory = _ => 0 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens a request may generate, and the default of max_tokens", DefaultValueFactory = _ => 1024 };
        var timeLimit = new Option<double>("--time-limit") { Description = "Seconds a request may take, queued and generating, before it ends with finish reason \"length\"", DefaultValueFactory = _ => 300 };
        var maxBody = new Option<long>("--max-body") { Description = "Largest request body in bytes (413 beyond)", DefaultValueFactory = _ => 1 << 20 };
        var chatTemplate = Cli.ChatTemplateOption();
        var command = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /health, /metrics), with a comparison page at / against --base")
        {
            model, tokenizer, baseModel, baseTokenizer, host, port, parallel, queue, kv, context, threads, maxPrompt, maxTokens, timeLimit, maxBody, chatTemplate,
        };
        command.SetAction(r => Cli.Run(() => Execute(new Options(
            r.GetValue(model)!, r.GetValue(tokenizer), r.GetValue(baseModel), r.GetValue(baseTokenizer), r.GetValue(host)!, r.GetValue(port),
            r.GetValue(parallel), r.GetValue(queue), r.GetValue(kv)!, r.GetValue(context), r.GetValue(threads), r.GetValue(maxPrompt),
            r.GetValue(maxTokens), r.GetValue(timeLimit), r.GetValue(maxBody), r.GetValue(chatTemplate)))));
        return command;
    }

    public static int Execute(Options options)
    {
        if (!(options.TimeLimit > 0))
            throw new ArgumentException($"--time-limit {options.TimeLimit} must be above 0");
        var serverOptions = new ServerOptions
        {
            Model = options.Model,
            Tokenizer = options.Tokenizer,
            Base = options.Base,
            BaseTokenizer = options.BaseTokenizer,
            Host = options.Host,
            Port = options.Port,
            Parallel = options.Parallel,
            QueueLength = options.Queue,
            KvCache = Cli.KvCache(options.Kv),
            ContextLength = options.Context,
            Threads = options.Threads,
            MaxPromptTokens = options.MaxPrompt,
            MaxTokens = options.MaxTokens,
            TimeLimit = TimeSpan.FromSeconds(options.TimeLimit),
            MaxBodyBytes = options.MaxBody,
            ChatTemplate = options.ChatTemplate,
        };
        var server = SqueezeServer.StartAsync(serverOptions, Cli.Cancellation).GetAwaiter().GetResult();
        try
        {
            // stdout, one line: what a script waiting for the server reads (the port when --port 0)
            Console.Out.WriteLine($"squeeze serve: listening on {server.Address}");
            Console.Out.Flush();
            server.WaitForShutdownAsync(Cli.Cancellation).GetAwaiter().GetResult();
        }
        finally
        {
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        return 0;
    }
}
