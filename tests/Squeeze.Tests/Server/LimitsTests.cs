using System.Net;
using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Json;
using Squeeze.Server;

namespace Squeeze.Tests.Server;

/// <summary>A server with one sequence and a queue of one refuses a third request with 429; a request that runs longer
/// than the time limit ends with finish reason "length". Each test starts its own server. The end-of-sequence token
/// (2 in the Llama 2 vocabulary) is banned through logit_bias, so a request holds its sequence until it is cut off,
/// whatever the sampler draws, and neither test depends on how fast the machine is.</summary>
public sealed class LimitsTests : IDisposable
{
    private const int Tokens = 4000;
    private readonly HttpClient http = new() { Timeout = TimeSpan.FromMinutes(2) };

    public void Dispose() => http.Dispose();

    private static Task<SqueezeServer> Start(TimeSpan timeLimit)
        => SqueezeServer.StartAsync(ServerFixture.Options with { Parallel = 1, QueueLength = 1, TimeLimit = timeLimit, MaxTokens = Tokens, ContextLength = Tokens + 64, Threads = 1 });

    private static StringContent Body(int maxTokens, bool stream)
        => new($$"""{"prompt": "Once upon a time", "max_tokens": {{maxTokens}}, "temperature": 1, "seed": 1, "logit_bias": {"2": -100}, "stream": {{(stream ? "true" : "false")}}}""", Encoding.UTF8, "application/json");

    [Fact]
    public async Task A_request_beyond_the_queue_is_a_429()
    {
        await using var server = await Start(TimeSpan.FromMinutes(2));
        var completions = new Uri(server.Address, "v1/completions");
        using var first = new CancellationTokenSource();
        var running = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, completions) { Content = Body(Tokens, stream: true) }, HttpCompletionOption.ResponseHeadersRead, first.Token);
        var events = SseParser.Create(await running.Content.ReadAsStreamAsync(first.Token)).EnumerateAsync(first.Token).GetAsyncEnumerator(first.Token);
        Assert.True(await events.MoveNextAsync()); // the first request holds the one sequence
        var queued = http.PostAsync(completions, Body(5, stream: false));
        for (int i = 0; i < 600 && await Queue(server) < 1; i++)
            await Task.Delay(50);
        Assert.Equal(1, await Queue(server));
        using (var refused = await http.PostAsync(completions, Body(5, stream: false)))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            string message = JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("message").GetString()!;
            Assert.Contains("busy", message, StringComparison.Ordinal);
        }

        // the first client goes away; its sequence is freed and the queued request runs
        await first.CancelAsync();
        await events.DisposeAsync();
        running.Dispose();
        using var second = await queued;
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
    }

    [Fact]
    public async Task A_request_that_runs_too_long_ends_at_the_time_limit()
    {
        await using var server = await Start(TimeSpan.FromSeconds(1));
        using var response = await http.PostAsync(new Uri(server.Address, "v1/completions"), Body(Tokens, stream: false));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("length", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.InRange(body.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), 0, Tokens - 1);
    }

    private async Task<int> Queue(SqueezeServer server)
        => (int)ServerFixture.Metric(await http.GetStringAsync(new Uri(server.Address, "metrics")), "squeeze_queue_length");
}
