using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Models;

namespace Squeeze.Server;

/// <summary>
/// <c>squeeze serve</c>: a model behind an OpenAI-compatible HTTP server on ASP.NET Core. <c>/v1/completions</c> and
/// <c>/v1/chat/completions</c> (the model's chat template, <see cref="ChatTemplate"/>), answered whole or streamed as
/// server-sent events; <c>/v1/models</c>, <c>/health</c>, <c>/metrics</c> (Prometheus text). Concurrent requests run
/// batched in one forward pass per step (<see cref="ModelWorker"/>). With a base model, <c>/</c> serves a page that
/// streams both models' answers side by side, each token coloured by the divergence between the two models there.
/// </summary>
public sealed partial class SqueezeServer : IAsyncDisposable
{
    private static readonly string[] CountedPaths = ["/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/compare", "/"];

    // Error messages quote names with ' : written as they are, not as \u0027.
    private static readonly JsonWriterOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly WebApplication app;
    private readonly ServerOptions options;
    private readonly List<ModelWorker> workers;
    private readonly Dictionary<ModelWorker, (ChatTemplate? Template, string? Problem)> templates = [];
    private readonly ConcurrentDictionary<(string Path, int Status), long> answered = new();

    private SqueezeServer(WebApplication app, ServerOptions options, List<ModelWorker> workers)
    {
        this.app = app;
        this.options = options;
        this.workers = workers;
        foreach (var worker in workers)
        {
            try
            {
                templates[worker] = (ChatTemplate.For(worker.Model, options.ChatTemplate), null);
            }
            catch (Exception e) when ((e is Tensors.ModelFormatException or ArgumentException) && options.ChatTemplate is null)
            {
                // a model without a usable template still serves completions; its chat requests get this message
                templates[worker] = (null, e.Message);
            }
        }
    }

    /// <summary>The address the server listens on (with the port chosen when <see cref="ServerOptions.Port"/> is 0).</summary>
    public Uri Address { get; private set; } = null!;

    /// <summary>The model served (the first worker) and the base model, when there is one.</summary>
    private ModelWorker Main => workers[0];

    private ModelWorker? Base => workers.Count > 1 ? workers[1] : null;

    /// <summary>Loads the model(s) of <paramref name="options"/>, prepares them to run and starts listening.</summary>
    /// <exception cref="ArgumentException">An option is out of range.</exception>
    public static async Task<SqueezeServer> StartAsync(ServerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Parallel < 1)
            throw new ArgumentException($"--parallel {options.Parallel} must be at least 1");
        if (options.QueueLength < 1)
            throw new ArgumentException($"--queue {options.QueueLength} must be at least 1");
        if (options.ContextLength < 0 || options.MaxTokens < 1 || options.MaxPromptTokens < 0 || options.MaxBodyBytes < 1 || options.PrefillChunk < 1)
            throw new ArgumentException("--ctx, --max-prompt must not be negative; --max-tokens, --max-body must be positive");
        if (options.Port is < 0 or > 65535)
            throw new ArgumentException($"--port {options.Port} is not a port number");

        var workers = new List<ModelWorker>();
        try
        {
            workers.Add(Load(options.Model, options.Tokenizer, options, null));
            if (options.Base is not null)
                workers.Add(Load(options.Base, options.BaseTokenizer, options, workers[0].Name));

            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = "Squeeze.Server" });
            builder.Logging.ClearProviders();
            // On Ctrl+C, requests still streaming get a few seconds to end before they are cut (their sequences then end too).
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
            builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
            builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = 2 * options.MaxBodyBytes);
            var app = builder.Build();
            var server = new SqueezeServer(app, options, workers);
            server.Map();
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
            server.Address = new Uri(app.Urls.First());
            return server;
        }
        catch
        {
            foreach (var worker in workers)
            {
                worker.Dispose();
                worker.Model.Dispose();
            }
            throw;
        }
    }

    private static ModelWorker Load(string path, string? tokenizer, ServerOptions options, string? otherName)
    {
        var model = ModelLoader.Load(path, tokenizer);
        try
        {
            _ = model.Tokenizer;
            string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(path));
            if (name == otherName)
                name = "base-" + name;
            return new ModelWorker(name, model, options);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Completes when the server stops (<paramref name="cancellationToken"/> cancelled: Ctrl+C, SIGTERM).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken) => app.WaitForShutdownAsync(cancellationToken);

    /// <summary>Stops listening, ends every sequence and frees the models.</summary>
    public async ValueTask DisposeAsync()
    {
        await app.StopAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
        foreach (var worker in workers)
        {
            worker.Dispose();
            worker.Model.Dispose();
        }
    }

    private void Map()
    {
        app.Use(async (http, next) =>
        {
            await next(http).ConfigureAwait(false);
            string path = http.Request.Path.Value ?? "";
            answered.AddOrUpdate((CountedPaths.Contains(path) ? path : "other", http.Response.StatusCode), 1, (_, n) => n + 1);
        });
        app.MapGet("/health", (HttpContext http) => WriteJson(http, 200, w => w.WriteString("status", "ok")));
        app.MapGet("/v1/models", Models);
        app.MapGet("/metrics", Metrics);
        app.MapPost("/v1/completions", (HttpContext http) => Generate(http, chat: false));
        app.MapPost("/v1/chat/completions", (HttpContext http) => Generate(http, chat: true));
        app.MapGet("/", Page);
        app.MapPost("/compare", Compare);
        app.MapFallback((HttpContext http) => Error(http, http.Request.Path.Value is string p && (p.StartsWith("/v1/", StringComparison.Ordinal) || p == "/compare") ? 405 : 404,
            $"no endpoint {http.Request.Method} {Clip(http.Request.Path.Value ?? "")}"));
    }

    private Task Models(HttpContext http) => WriteJson(http, 200, w =>
    {
        w.WriteString("object", "list");
        w.WriteStartArray("data");
        foreach (var worker in workers)
        {
            w.WriteStartObject();
            w.WriteString("id", worker.Name);
            w.WriteString("object", "model");
            w.WriteNumber("created", File.GetLastWriteTimeUtc(worker.Model.Source) is var t && t.Year > 1601 ? new DateTimeOffset(t).ToUnixTimeSeconds() : 0);
            w.WriteString("owned_by", "squeeze");
            w.WriteString("role", worker == Main ? "model" : "base");
            w.WriteNumber("parameters", worker.Model.ParameterCount);
            w.WriteNumber("size_bytes", worker.Model.TensorBytes);
            w.WriteNumber("bits_per_weight", Math.Round(8.0 * worker.Model.TensorBytes / worker.Model.ParameterCount, 3));
            w.WriteNumber("context_length", worker.ContextLength);
            if (templates[worker].Template is { } template)
                w.WriteString("chat_template", template.Family);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    });

    private Task Metrics(HttpContext http)
    {
        var s = new StringBuilder();
        void Metric(string name, string type, string help)
            => s.Append("# HELP ").Append(name).Append(' ').Append(help).Append("\n# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
        void Value(string name, string labels, double value)
            => s.Append(name).Append('{').Append(labels).Append("} ").Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        Metric("squeeze_requests_total", "counter", "HTTP requests answered, by path and status.");
        foreach (var ((path, status), count) in answered.OrderBy(e => e.Key.Path, StringComparer.Ordinal).ThenBy(e => e.Key.Status))
            Value("squeeze_requests_total", $"path=\"{path}\",status=\"{status}\"", count);
        (string Name, string Type, string Help, Func<ModelWorker, double> Get)[] perModel =
        [
            ("squeeze_sequences_total", "counter", "Sequences queued (requests, and the comparison page's scoring runs).", w => w.Requests),
            ("squeeze_generated_tokens_total", "counter", "Tokens sampled.", w => w.GeneratedTokens),
            ("squeeze_processed_tokens_total", "counter", "Tokens run through the model (prompts and answers).", w => w.ProcessedTokens),
            ("squeeze_forward_seconds_total", "counter", "Seconds spent in forward passes.", w => w.ForwardSeconds),
            ("squeeze_tokens_per_second", "gauge", "Tokens sampled per second over the last ten seconds.", w => w.TokensPerSecond),
            ("squeeze_queue_length", "gauge", "Requests waiting for a free sequence.", w => w.QueueLength),
            ("squeeze_running_sequences", "gauge", "Sequences decoding now.", w => w.Running),
            ("squeeze_kv_cache_bytes", "gauge", "Bytes the running sequences' KV caches hold.", w => w.KvBytes),
            ("squeeze_kv_cache_capacity_bytes", "gauge", "Bytes the KV caches hold when all are full.", w => w.CacheCapacityBytes),
        ];
        foreach (var (name, type, help, get) in perModel)
        {
            Metric(name, type, help);
            foreach (var worker in workers)
                Value(name, $"model=\"{worker.Name}\"", get(worker));
        }
        Metric("squeeze_managed_heap_bytes", "gauge", "Bytes of the managed heap in use.");
        Value("squeeze_managed_heap_bytes", "", GC.GetTotalMemory(false));
        Metric("squeeze_working_set_bytes", "gauge", "The process's working set.");
        Value("squeeze_working_set_bytes", "", Environment.WorkingSet);
        http.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        return http.Response.WriteAsync(s.ToString());
    }

    private async Task Page(HttpContext http)
    {
        await using var stream = typeof(SqueezeServer).Assembly.GetManifestResourceStream("Squeeze.Server.index.html")
            ?? throw new InvalidOperationException("the page is missing from the assembly");
        http.Response.ContentType = "text/html; charset=utf-8";
        await stream.CopyToAsync(http.Response.Body, http.RequestAborted).ConfigureAwait(false);
    }

    private async Task Generate(HttpContext http, bool chat)
    {
        OpenAiRequest request;
        ModelWorker worker;
        int[] prompt;
        int maxTokens;
        try
        {
            byte[] body = await ReadBody(http).ConfigureAwait(false);
            request = OpenAiRequest.Parse(body, chat, Main.Model.Config.VocabSize);
            worker = Base is { } b && request.Model == b.Name ? b : Main;
            prompt = Prompt(worker, request);
            maxTokens = request.MaxTokens ?? options.MaxTokens;
            if (maxTokens > options.MaxTokens)
                throw new RequestException(400, $"'max_tokens' {maxTokens} is above this server's limit of {options.MaxTokens}");
        }
        catch (RequestException e)
        {
            await Error(http, e.Status, e.Message).ConfigureAwait(false);
            return;
        }

        using var sequence = new GenerationSequence(worker, prompt, request.Sampling, maxTokens, options.TimeLimit, http.RequestAborted);
        if (!worker.TrySubmit(sequence))
        {
            await Error(http, 429, $"the server is busy: {worker.QueueLength} requests are waiting; try again later").ConfigureAwait(false);
            return;
        }
        var text = new TextAssembler(worker.Model.Tokenizer, request.Stop);
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        try
        {
            if (request.Stream)
                await Stream(http, chat, request, worker, sequence, text, id, created).ConfigureAwait(false);
            else
                await Whole(http, chat, worker, sequence, text, id, created).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // the client went away: the sequence is cancelled below
        }
        finally
        {
            sequence.Cancel();
            worker.Wake();
            await sequence.Finished.ConfigureAwait(false);
        }
    }

    private int[] Prompt(ModelWorker worker, OpenAiRequest request)
    {
        var tokenizer = worker.Model.Tokenizer;
        int[] prompt;
        if (request.Messages is { } messages)
        {
            var (template, problem) = templates[worker];
            if (template is null)
                throw new RequestException(400, problem!);
            prompt = template.Encode(tokenizer, messages);
        }
        else
        {
            prompt = request.PromptTokens ?? tokenizer.Encode(request.Prompt!, tokenizer.Vocabulary.AddBos);
        }
        if (prompt.Length == 0)
            throw new RequestException(400, "the prompt has no tokens");
        if (request.PromptTokens is { } ids && ids.Any(t => t >= worker.Model.Config.VocabSize))
            throw new RequestException(400, $"'prompt' has token ids beyond the vocabulary of {worker.Model.Config.VocabSize}");
        if (prompt.Length >= worker.ContextLength)
            throw new RequestException(400, $"the prompt has {prompt.Length} tokens; the context holds {worker.ContextLength} (with room for one generated token)");
        if (options.MaxPromptTokens > 0 && prompt.Length > options.MaxPromptTokens)
            throw new RequestException(400, $"the prompt has {prompt.Length} tokens; this server takes at most {options.MaxPromptTokens}");
        return prompt;
    }

    private static string Finish(FinishReason reason, TextAssembler text)
        => text.Stopped || reason == FinishReason.Stop ? "stop" : "length";

    private static async Task Whole(HttpContext http, bool chat, ModelWorker worker, GenerationSequence sequence, TextAssembler text, string id, long created)
    {
        await foreach (int token in sequence.Tokens.ReadAllAsync(http.RequestAborted).ConfigureAwait(false))
        {
            text.Add(token);
            if (text.Stopped)
                sequence.Cancel();
        }
        var reason = await sequence.Finished.ConfigureAwait(false);
        if (reason == FinishReason.Error)
        {
            await Error(http, 500, "the model failed while generating").ConfigureAwait(false);
            return;
        }
        if (reason == FinishReason.Cancelled && !text.Stopped)
            return; // the client went away, or the server is stopping
        text.Flush();
        await WriteJson(http, 200, w =>
        {
            w.WriteString("id", id);
            w.WriteString("object", chat ? "chat.completion" : "text_completion");
            w.WriteNumber("created", created);
            w.WriteString("model", worker.Name);
            w.WriteStartArray("choices");
            w.WriteStartObject();
            w.WriteNumber("index", 0);
            if (chat)
            {
                w.WriteStartObject("message");
                w.WriteString("role", "assistant");
                w.WriteString("content", text.Text);
                w.WriteNull("refusal");
                w.WriteEndObject();
            }
            else
            {
                w.WriteString("text", text.Text);
            }
            w.WriteNull("logprobs");
            w.WriteString("finish_reason", Finish(reason, text));
            w.WriteEndObject();
            w.WriteEndArray();
            Usage(w, sequence);
        }).ConfigureAwait(false);
    }

    private static async Task Stream(HttpContext http, bool chat, OpenAiRequest request, ModelWorker worker, GenerationSequence sequence, TextAssembler text, string id, long created)
    {
        http.Response.StatusCode = 200;
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        var abort = http.RequestAborted;
        async Task Chunk(string? content, string? finish, bool role = false, bool usage = false)
        {
            var buffer = new MemoryStream();
            using (var w = new Utf8JsonWriter(buffer, JsonOptions))
            {
                w.WriteStartObject();
                w.WriteString("id", id);
                w.WriteString("object", chat ? "chat.completion.chunk" : "text_completion");
                w.WriteNumber("created", created);
                w.WriteString("model", worker.Name);
                w.WriteStartArray("choices");
                if (!usage)
                {
                    w.WriteStartObject();
                    w.WriteNumber("index", 0);
                    if (chat)
                    {
                        w.WriteStartObject("delta");
                        if (role)
                            w.WriteString("role", "assistant");
                        if (content is not null)
                            w.WriteString("content", content);
                        w.WriteEndObject();
                    }
                    else
                    {
                        w.WriteString("text", content ?? "");
                    }
                    w.WriteNull("logprobs");
                    if (finish is null)
                        w.WriteNull("finish_reason");
                    else
                        w.WriteString("finish_reason", finish);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                if (usage)
                    Usage(w, sequence);
                w.WriteEndObject();
            }
            await Event(http, buffer.ToArray(), abort).ConfigureAwait(false);
        }
        if (chat)
            await Chunk("", null, role: true).ConfigureAwait(false);
        else
            await http.Response.Body.FlushAsync(abort).ConfigureAwait(false);
        await foreach (int token in sequence.Tokens.ReadAllAsync(abort).ConfigureAwait(false))
        {
            string piece = text.Add(token);
            if (piece.Length > 0)
                await Chunk(piece, null).ConfigureAwait(false);
            if (text.Stopped)
                sequence.Cancel();
        }
        var reason = await sequence.Finished.ConfigureAwait(false);
        if (reason == FinishReason.Cancelled && !text.Stopped)
            return;
        if (reason == FinishReason.Error)
        {
            await Event(http, JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, object> { ["error"] = new Dictionary<string, string> { ["message"] = "the model failed while generating", ["type"] = "server_error" } }), abort).ConfigureAwait(false);
            return;
        }
        string rest = text.Flush();
        if (rest.Length > 0)
            await Chunk(rest, null).ConfigureAwait(false);
        await Chunk(chat ? null : "", Finish(reason, text)).ConfigureAwait(false);
        if (request.IncludeUsage)
            await Chunk(null, null, usage: true).ConfigureAwait(false);
        await http.Response.WriteAsync("data: [DONE]\n\n", abort).ConfigureAwait(false);
        await http.Response.Body.FlushAsync(abort).ConfigureAwait(false);
    }

    private static async Task Event(HttpContext http, byte[] json, CancellationToken abort)
    {
        await http.Response.Body.WriteAsync("data: "u8.ToArray(), abort).ConfigureAwait(false);
        await http.Response.Body.WriteAsync(json, abort).ConfigureAwait(false);
        await http.Response.Body.WriteAsync("\n\n"u8.ToArray(), abort).ConfigureAwait(false);
        await http.Response.Body.FlushAsync(abort).ConfigureAwait(false);
    }

    private static void Usage(Utf8JsonWriter w, GenerationSequence sequence)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", sequence.Prompt.Length);
        w.WriteNumber("completion_tokens", sequence.Generated);
        w.WriteNumber("total_tokens", sequence.Prompt.Length + sequence.Generated);
        w.WriteEndObject();
    }

    private async Task<byte[]> ReadBody(HttpContext http)
    {
        // Read up to the limit before refusing, so that a client sending a body a little too large has sent it when the
        // 413 comes (refused on its Content-Length alone, it would find the connection closed while still writing);
        // Kestrel refuses bodies over twice the limit on their Content-Length.
        var body = new MemoryStream();
        var buffer = new byte[16384];
        try
        {
            int n;
            while ((n = await http.Request.Body.ReadAsync(buffer, http.RequestAborted).ConfigureAwait(false)) > 0)
            {
                if (body.Length + n > options.MaxBodyBytes)
                    throw new RequestException(413, $"the body is over {options.MaxBodyBytes} bytes, this server's limit");
                body.Write(buffer, 0, n);
            }
        }
        catch (BadHttpRequestException e)
        {
            throw new RequestException(e.StatusCode, e.StatusCode == 413 ? $"the body is over {options.MaxBodyBytes} bytes, this server's limit" : OneLine(e.Message));
        }
        return body.ToArray();
    }

    private static Task Error(HttpContext http, int status, string message) => WriteJson(http, status, w =>
    {
        w.WriteStartObject("error");
        w.WriteString("message", OneLine(message));
        w.WriteString("type", status switch { 429 => "rate_limit_error", >= 500 => "server_error", 404 => "not_found_error", _ => "invalid_request_error" });
        w.WriteNull("param");
        w.WriteNull("code");
        w.WriteEndObject();
    });

    private static async Task WriteJson(HttpContext http, int status, Action<Utf8JsonWriter> body)
    {
        if (http.Response.HasStarted)
            return;
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, JsonOptions))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json";
        try
        {
            await http.Response.Body.WriteAsync(buffer.ToArray(), http.RequestAborted).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // the client went away
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    private static string Clip(string text) => OneLine(text.Length <= 60 ? text : text[..60] + "…");
}
