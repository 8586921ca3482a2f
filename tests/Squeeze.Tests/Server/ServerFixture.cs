using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Json;
using OpenAI;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Server;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Server;

/// <summary>
/// One <c>squeeze serve</c> for the server tests: stories15M on a loopback port chosen by the system, four sequences
/// batched, a 256-token context. stories15M has no chat template, so the server runs with <c>--chat-template chatml</c>
/// (its tokenizer has no chatml tokens: the markers are read as plain text, which is all the chat tests need).
/// </summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public const int Context = 256;
    public const int MaxTokens = 64;
    public const int MaxBody = 64 * 1024;

    public static ServerOptions Options => new()
    {
        Model = SharedData.Stories15M,
        Tokenizer = SharedData.Stories15MTokenizerModel,
        Port = 0,
        Parallel = 4,
        QueueLength = 16,
        ContextLength = Context,
        Threads = 2,
        MaxTokens = MaxTokens,
        MaxBodyBytes = MaxBody,
        TimeLimit = TimeSpan.FromSeconds(60),
        ChatTemplate = "chatml",
    };

    public SqueezeServer Server { get; private set; } = null!;

    /// <summary>The OpenAI client, pointed at the server's <c>/v1/</c>.</summary>
    public OpenAIClient Client { get; private set; } = null!;

    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromMinutes(2) };

    public Uri V1 => new(Server.Address, "v1/");

    public async Task InitializeAsync()
    {
        Server = await SqueezeServer.StartAsync(Options);
        Client = new OpenAIClient(new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = V1, NetworkTimeout = TimeSpan.FromMinutes(2) });
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
    }

    /// <summary>POSTs <paramref name="json"/> to <c>/v1/completions</c> through the OpenAI client's pipeline (the
    /// package's typed completions client is internal in 2.15.0): the status and the parsed body.</summary>
    public (int Status, JsonElement Body) Completion(string json)
    {
        var message = Client.Pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(V1, "completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromString(json));
        Client.Pipeline.Send(message);
        var response = message.Response!;
        return (response.Status, JsonDocument.Parse(response.Content.ToString()).RootElement.Clone());
    }

    /// <summary>Streams a completion through the client's pipeline and returns the text of every chunk and the finish reason.</summary>
    public async Task<(List<string> Pieces, string? Finish)> StreamCompletion(string json)
    {
        var message = Client.Pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(V1, "completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromString(json));
        message.BufferResponse = false;
        await Client.Pipeline.SendAsync(message);
        Assert.Equal(200, message.Response!.Status);
        var pieces = new List<string>();
        string? finish = null;
        bool done = false;
        await foreach (var item in SseParser.Create(message.Response.ContentStream!).EnumerateAsync())
        {
            Assert.False(done, "an event after [DONE]");
            if (item.Data == "[DONE]")
            {
                done = true;
                continue;
            }
            var choice = JsonDocument.Parse(item.Data).RootElement.GetProperty("choices")[0];
            pieces.Add(choice.GetProperty("text").GetString()!);
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String)
                finish = choice.GetProperty("finish_reason").GetString();
        }
        Assert.True(done, "the stream did not end with [DONE]");
        return (pieces, finish);
    }

    /// <summary>What <c>squeeze generate</c> produces (the same <see cref="Generator"/> on the same model) for these tokens.</summary>
    public static string Generate(Model model, int[] prompt, int maxTokens, SamplingOptions sampling)
    {
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = 2, ContextLength = Context });
        var ids = Generator.Generate(runtime, prompt, maxTokens, new Sampler(sampling));
        return Encoding.UTF8.GetString([.. ids.SelectMany(model.Tokenizer.TokenBytes)]);
    }

    public static Model LoadStories() => ModelLoader.Load(SharedData.Stories15M, SharedData.Stories15MTokenizerModel);

    /// <summary>Polls <c>/metrics</c> until the server is idle (no sequence running or queued, no KV-cache bytes held);
    /// returns the last metrics text.</summary>
    public async Task<string> WaitForIdle()
    {
        string metrics = "";
        for (int i = 0; i < 100; i++)
        {
            metrics = await Http.GetStringAsync(new Uri(Server.Address, "metrics"));
            if (Metric(metrics, "squeeze_running_sequences") == 0 && Metric(metrics, "squeeze_queue_length") == 0 && Metric(metrics, "squeeze_kv_cache_bytes") == 0)
                return metrics;
            await Task.Delay(100);
        }
        throw new TimeoutException("the server did not return to idle:\n" + metrics);
    }

    /// <summary>The value of the first sample of <paramref name="name"/> in a Prometheus text.</summary>
    public static double Metric(string metrics, string name)
    {
        foreach (string line in metrics.Split('\n'))
        {
            if (line.StartsWith(name + "{", StringComparison.Ordinal))
                return double.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        }
        throw new KeyNotFoundException($"no metric {name}");
    }
}

[CollectionDefinition(Name)]
public sealed class ServerCollection : ICollectionFixture<ServerFixture>
{
    public const string Name = "squeeze serve";
}
