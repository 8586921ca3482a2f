using System.Net;
using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Json;

namespace Squeeze.Tests.Server;

/// <summary>
/// What a server on a network meets: malformed JSON, unknown fields, oversized bodies, prompts over the context,
/// negative or absurd sampling parameters, a client that goes away mid-stream. Each is a 4xx with a one-line OpenAI
/// error body, the server keeps serving, and its sequences and KV caches return to idle.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class HostileInputTests(ServerFixture server)
{
    private const string Fine = """{"prompt": "Once upon a time", "max_tokens": 3, "temperature": 0}""";

    public static TheoryData<string, string, string> BadBodies() => new()
    {
        { "completions", "{\"prompt\": \"Once upon", "not valid JSON" },
        { "completions", "[1, 2, 3]", "must be a JSON object" },
        { "completions", "", "not valid JSON" },
        { "completions", "{\"prompt\": \"hi\", \"max_tokens\": 3, \"temprature\": 0.5}", "unknown field 'temprature'" },
        { "completions", "{\"prompt\": \"hi\", \"prompt\": \"again\"}", "given twice" },
        { "completions", "{\"max_tokens\": 3}", "'prompt' is required" },
        { "completions", "{\"prompt\": 42}", "'prompt' must be" },
        { "completions", "{\"prompt\": [\"a\", \"b\"]}", "one prompt" },
        { "completions", "{\"prompt\": [1, 99999999]}", "outside" },
        { "completions", "{\"prompt\": \"hi\", \"max_tokens\": -5}", "'max_tokens' -5 is outside" },
        { "completions", "{\"prompt\": \"hi\", \"max_tokens\": 0}", "'max_tokens' 0 is outside" },
        { "completions", "{\"prompt\": \"hi\", \"max_tokens\": 1e12}", "'max_tokens' must be an integer" },
        { "completions", "{\"prompt\": \"hi\", \"max_tokens\": 1000000}", "above this server's limit" },
        { "completions", "{\"prompt\": \"hi\", \"temperature\": -1}", "'temperature' -1 is outside 0..2" },
        { "completions", "{\"prompt\": \"hi\", \"temperature\": 1e308}", "'temperature'" },
        { "completions", "{\"prompt\": \"hi\", \"temperature\": \"hot\"}", "'temperature' must be a number" },
        { "completions", "{\"prompt\": \"hi\", \"top_p\": 0}", "'top_p' must be above 0" },
        { "completions", "{\"prompt\": \"hi\", \"top_p\": 1.5}", "'top_p' 1.5 is outside" },
        { "completions", "{\"prompt\": \"hi\", \"seed\": 1.5}", "'seed' must be an integer" },
        { "completions", "{\"prompt\": \"hi\", \"seed\": 99999999999}", "'seed'" },
        { "completions", "{\"prompt\": \"hi\", \"presence_penalty\": 7}", "'presence_penalty' 7 is outside" },
        { "completions", "{\"prompt\": \"hi\", \"frequency_penalty\": -3}", "'frequency_penalty' -3 is outside" },
        { "completions", "{\"prompt\": \"hi\", \"logit_bias\": {\"abc\": 1}}", "not a token id" },
        { "completions", "{\"prompt\": \"hi\", \"logit_bias\": {\"5\": 500}}", "'logit_bias' 500 is outside" },
        { "completions", "{\"prompt\": \"hi\", \"n\": 3}", "'n' must be 1" },
        { "completions", "{\"prompt\": \"hi\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", "at most 4" },
        { "completions", "{\"prompt\": \"hi\", \"stop\": \"\"}", "1 to 256 characters" },
        { "completions", "{\"prompt\": \"hi\", \"stream\": \"yes\"}", "'stream' must be true or false" },
        { "completions", "{\"prompt\": \"hi\", \"logprobs\": 5}", "'logprobs' is not supported" },
        { "completions", "{\"prompt\": \"hi\", \"echo\": true}", "'echo' is not supported" },
        { "chat/completions", "{\"messages\": []}", "non-empty array" },
        { "chat/completions", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"hi\"}]}", "role 'wizard'" },
        { "chat/completions", "{\"messages\": [{\"role\": \"user\"}]}", "content is required" },
        { "chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\", \"mood\": 1}]}", "unknown field 'messages[0].mood'" },
        { "chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "only text" },
        { "chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"tools\": [{}]}", "'tools' is not supported" },
        { "chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"response_format\": {\"type\": \"json_object\"}}", "response_format" },
        { "chat/completions", "{\"prompt\": \"hi\"}", "unknown field 'prompt'" },
    };

    [Theory]
    [MemberData(nameof(BadBodies))]
    public async Task A_bad_body_is_a_400_in_one_line_and_the_server_keeps_serving(string endpoint, string body, string expected)
    {
        var (status, message) = await Post(endpoint, body);
        Assert.Equal(400, status);
        Assert.Contains(expected, message, StringComparison.Ordinal);
        await AssertStillServing();
    }

    [Fact]
    public async Task An_oversized_body_is_a_413()
    {
        string big = "{\"prompt\": \"" + new string('a', ServerFixture.MaxBody + 10) + "\"}";
        var (status, message) = await Post("completions", big);
        Assert.Equal(413, status);
        Assert.Contains("this server", message, StringComparison.Ordinal);
        // the same without a Content-Length (chunked): refused while reading
        using var content = new PushContent(Encoding.UTF8.GetBytes(big));
        using var response = await server.Http.PostAsync(new Uri(server.V1, "completions"), content);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        await AssertStillServing();
    }

    [Fact]
    public async Task A_prompt_over_the_context_is_a_400()
    {
        string prompt = string.Join(' ', Enumerable.Repeat("Once upon a time there was a cat.", 40));
        var (status, message) = await Post("completions", JsonSerializer.Serialize(new { prompt, max_tokens = 4 }));
        Assert.Equal(400, status);
        Assert.Contains($"the context holds {ServerFixture.Context}", message, StringComparison.Ordinal);
        await AssertStillServing();
    }

    [Fact]
    public async Task Unknown_paths_and_methods_are_4xx_in_one_line()
    {
        using var missing = await server.Http.GetAsync(new Uri(server.Server.Address, "v2/nothing"));
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Contains("no endpoint", OneLineMessage(await missing.Content.ReadAsStringAsync()), StringComparison.Ordinal);
        using var wrongMethod = await server.Http.GetAsync(new Uri(server.V1, "completions"));
        Assert.True((int)wrongMethod.StatusCode is 404 or 405);
        await AssertStillServing();
    }

    [Fact]
    public async Task A_client_that_goes_away_mid_stream_frees_its_sequence()
    {
        for (int round = 0; round < 3; round++)
        {
            using var cts = new CancellationTokenSource();
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(server.V1, "completions"))
            {
                Content = new StringContent($$"""{"prompt": "Once upon a time", "max_tokens": {{ServerFixture.MaxTokens}}, "temperature": 1, "stream": true}""", Encoding.UTF8, "application/json"),
            };
            using (var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token))
            {
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                var stream = await response.Content.ReadAsStreamAsync(cts.Token);
                await using var events = SseParser.Create(stream).EnumerateAsync(cts.Token).GetAsyncEnumerator(cts.Token);
                Assert.True(await events.MoveNextAsync());
                Assert.Contains("\"text\"", events.Current.Data, StringComparison.Ordinal);
                await cts.CancelAsync();
            }
        }
        string metrics = await server.WaitForIdle();
        Assert.Equal(0, ServerFixture.Metric(metrics, "squeeze_kv_cache_bytes"));
        // a non-streamed request whose client gives up
        using (var quick = new CancellationTokenSource(TimeSpan.FromMilliseconds(150)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => server.Http.PostAsync(new Uri(server.V1, "completions"),
                new StringContent($$"""{"prompt": "Once upon a time", "max_tokens": {{ServerFixture.MaxTokens}}}""", Encoding.UTF8, "application/json"), quick.Token));
        }
        await server.WaitForIdle();
        await AssertStillServing();
    }

    private async Task<(int Status, string Message)> Post(string endpoint, string body)
    {
        using var content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        using var response = await server.Http.PostAsync(new Uri(server.V1, endpoint), content);
        return ((int)response.StatusCode, OneLineMessage(await response.Content.ReadAsStringAsync()));
    }

    /// <summary>The message of an OpenAI error body, checked to be one line.</summary>
    private static string OneLineMessage(string json)
    {
        var error = JsonDocument.Parse(json).RootElement.GetProperty("error");
        string message = error.GetProperty("message").GetString()!;
        Assert.DoesNotContain('\n', message);
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("type").GetString()));
        return message;
    }

    private async Task AssertStillServing()
    {
        var (status, body) = server.Completion(Fine);
        Assert.Equal(200, status);
        Assert.Equal(3, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        await server.WaitForIdle();
    }

    /// <summary>A body sent without a Content-Length (chunked).</summary>
    private sealed class PushContent(byte[] bytes) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => stream.WriteAsync(bytes).AsTask();

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
