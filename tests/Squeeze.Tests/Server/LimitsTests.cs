using System.Net;
using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Json;
using Squeeze.Server;

namespace Squeeze.Tests.Server;

/// <summary>A server with one sequence, a queue of one and a two-second time limit: a third request at once is refused
/// with 429, a request that runs too long ends with finish reason "length".</summary>
public sealed class LimitsTests : IAsyncLifetime, IDisposable
{
    private SqueezeServer server = null!;
    private readonly HttpClient http = new() { Timeout = TimeSpan.FromMinutes(2) };

    public async Task InitializeAsync()
        => server = await SqueezeServer.StartAsync(ServerFixture.Options with { Parallel = 1, QueueLength = 1, TimeLimit = TimeSpan.FromSeconds(2), MaxTokens = 1000, ContextLength = 1024, Threads = 1 });

    public async Task DisposeAsync() => await server.DisposeAsync();

    public void Dispose() => http.Dispose();

    private Uri Completions => new(server.Address, "v1/completions");

    private static StringContent Body(int maxTokens, bool stream)
        => new($$"""{"prompt": "Once upon a time", "max_tokens": {{maxTokens}}, "temperature": 1, "seed": 1, "stream": {{(stream ? "true" : "false")}}}""", Encoding.UTF8, "application/json");

    [Fact]
    public async Task A_request_beyond_the_queue_is_a_429_and_a_slow_one_ends_at_the_time_limit()
    {
        using var first = new CancellationTokenSource();
        using var running = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, Completions) { Content = Body(1000, stream: true) }, HttpCompletionOption.ResponseHeadersRead, first.Token);
        var events = SseParser.Create(await running.Content.ReadAsStreamAsync(first.Token)).EnumerateAsync(first.Token).GetAsyncEnumerator(first.Token);
        Assert.True(await events.MoveNextAsync()); // the first request holds the one sequence
        var queued = http.PostAsync(Completions, Body(5, stream: false));
        for (int i = 0; i < 100 && Queue() < 1; i++)
            await Task.Delay(20);
        Assert.Equal(1, Queue());
        using (var refused = await http.PostAsync(Completions, Body(5, stream: false)))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            string message = JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("message").GetString()!;
            Assert.Contains("busy", message, StringComparison.Ordinal);
        }

        // the first request runs into the two-second limit long before 1000 tokens
        string? finish = null;
        int pieces = 1;
        while (await events.MoveNextAsync())
        {
            if (events.Current.Data == "[DONE]")
                break;
            pieces++;
            var reason = JsonDocument.Parse(events.Current.Data).RootElement.GetProperty("choices")[0].GetProperty("finish_reason");
            if (reason.ValueKind == JsonValueKind.String)
                finish = reason.GetString();
        }
        await events.DisposeAsync();
        Assert.Equal("length", finish);
        Assert.True(pieces < 1000, $"{pieces} pieces");
        using var second = await queued;
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
    }

    private int Queue()
        => (int)ServerFixture.Metric(http.GetStringAsync(new Uri(server.Address, "metrics")).GetAwaiter().GetResult(), "squeeze_queue_length");
}
