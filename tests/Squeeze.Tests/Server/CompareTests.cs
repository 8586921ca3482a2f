using System.Net.ServerSentEvents;
using System.Text;
using System.Text.Json;
using PuppeteerSharp;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Server;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Tests.Server;

/// <summary>stories15M in Q4_0 served with the original as <c>--base</c>, made once for the class.</summary>
public sealed class CompareFixture : IAsyncLifetime, IDisposable
{
    private readonly TempDirectory directory = new();

    public string Compressed { get; private set; } = null!;

    public SqueezeServer Server { get; private set; } = null!;

    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromMinutes(2) };

    public async Task InitializeAsync()
    {
        Compressed = directory.File("stories15M-Q4_0.gguf");
        using (var model = ServerFixture.LoadStories())
            GgufQuantizer.Write(model, QuantizationMix.Plan(model, QuantizationMix.Q4_0, [], pure: false), Compressed, importance: null, threads: 2);
        Server = await SqueezeServer.StartAsync(ServerFixture.Options with { Model = Compressed, Tokenizer = null, Base = SharedData.Stories15M, BaseTokenizer = SharedData.Stories15MTokenizerModel });
    }

    public async Task DisposeAsync() => await Server.DisposeAsync();

    public void Dispose()
    {
        Http.Dispose();
        directory.Dispose();
    }
}

/// <summary>
/// The comparison page's stream: both models' answers as they would be alone, and each token's KL(original ‖ compressed)
/// equal to the divergence computed by running both models over the whole answer.
/// </summary>
public sealed class CompareTests(CompareFixture fixture) : IClassFixture<CompareFixture>
{
    private const string Prompt = "Once upon a time";
    private const int Tokens = 16;

    [Fact]
    public async Task The_page_is_served_and_lists_both_models()
    {
        string page = await fixture.Http.GetStringAsync(fixture.Server.Address);
        Assert.Contains("<form id=\"form\">", page, StringComparison.Ordinal);
        Assert.Contains("/compare", page, StringComparison.Ordinal);
        var models = JsonDocument.Parse(await fixture.Http.GetStringAsync(new Uri(fixture.Server.Address, "v1/models"))).RootElement.GetProperty("data");
        Assert.Equal(["model", "base"], models.EnumerateArray().Select(m => m.GetProperty("role").GetString()));
        Assert.InRange(models[0].GetProperty("bits_per_weight").GetDouble(), 4.5, 8); // Q4_0, with the embedding and classifier kept at higher precision
        Assert.Equal(32, models[1].GetProperty("bits_per_weight").GetDouble());
    }

    [Fact]
    public async Task Both_answers_stream_with_each_tokens_divergence()
    {
        var events = new List<JsonElement>();
        using (var content = new StringContent($$"""{"prompt": "{{Prompt}}", "max_tokens": {{Tokens}}, "temperature": 0}""", Encoding.UTF8, "application/json"))
        using (var response = await fixture.Http.PostAsync(new Uri(fixture.Server.Address, "compare"), content))
        {
            Assert.Equal(200, (int)response.StatusCode);
            await foreach (var item in SseParser.Create(await response.Content.ReadAsStreamAsync()).EnumerateAsync())
            {
                if (item.Data != "[DONE]")
                    events.Add(JsonDocument.Parse(item.Data).RootElement.Clone());
            }
        }

        using var compressed = ModelLoader.Load(fixture.Compressed);
        using var original = ServerFixture.LoadStories();
        int[] prompt = original.Tokenizer.Encode(Prompt, addBos: true);
        foreach (var (side, generator, judge) in new[] { ("model", compressed, original), ("base", original, compressed) })
        {
            var mine = events.Where(e => e.GetProperty("side").GetString() == side).ToList();
            string text = string.Concat(mine.Where(e => e.TryGetProperty("text", out _)).Select(e => e.GetProperty("text").GetString()));
            using var runtime = new Transformer(generator, new RuntimeOptions { Threads = 2, ContextLength = ServerFixture.Context });
            var answer = Generator.Generate(runtime, prompt, Tokens, new Sampler(new SamplingOptions { Temperature = 0 })).ToArray();
            Assert.Equal(Encoding.UTF8.GetString([.. answer.SelectMany(generator.Tokenizer.TokenBytes)]), text);

            var kl = mine.Where(e => e.TryGetProperty("kl", out _)).ToDictionary(e => e.GetProperty("index").GetInt32(), e => e.GetProperty("kl").GetDouble());
            Assert.Equal(Enumerable.Range(0, Tokens), kl.Keys.Order());
            double[] expected = Divergences(original, compressed, [.. prompt, .. answer], Tokens);
            for (int i = 0; i < Tokens; i++)
                Assert.True(Math.Abs(kl[i] - expected[i]) <= 1e-4 + 1e-3 * expected[i], $"{side} token {i}: KL {kl[i]} against {expected[i]}");
            Assert.Contains(expected, d => d > 1e-4); // Q4_0 differs from the original somewhere

            var done = Assert.Single(mine, e => e.TryGetProperty("done", out _));
            Assert.Equal(Tokens, done.GetProperty("tokens").GetInt32());
            Assert.Equal("length", done.GetProperty("finish_reason").GetString());
            Assert.True(done.GetProperty("tokens_per_second").GetDouble() > 0);
        }
    }

    /// <summary>The page in headless chromium: a prompt typed and run, both answers shown, each token with its KL; a
    /// screenshot of the page is kept beside the test binaries (<c>compare-page.png</c>).</summary>
    [BrowserFact]
    public async Task The_page_in_a_browser_shows_both_answers_with_each_tokens_divergence()
    {
        await using var browser = await Puppeteer.LaunchAsync(new LaunchOptions
        {
            Headless = true,
            ExecutablePath = BrowserFactAttribute.Chromium,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        });
        await using var page = await browser.NewPageAsync();
        await page.SetViewportAsync(new ViewPortOptions { Width = 1200, Height = 700 });
        await page.GoToAsync(fixture.Server.Address.ToString(), WaitUntilNavigation.Networkidle0);
        await page.WaitForSelectorAsync("#side-base");
        await page.EvaluateExpressionAsync("document.getElementById('prompt').value = ''");
        await page.TypeAsync("#prompt", Prompt);
        await page.EvaluateExpressionAsync($"document.getElementById('max_tokens').value = '{Tokens}'");
        await page.ClickAsync("#run");
        await page.WaitForFunctionAsync("() => document.body.dataset.done === 'true'", new WaitForFunctionOptions { Timeout = 60000 });
        string screenshot = Path.Combine(AppContext.BaseDirectory, "compare-page.png");
        await page.ScreenshotAsync(screenshot, new ScreenshotOptions { FullPage = true });
        Assert.True(new FileInfo(screenshot).Length > 10000);

        using var compressed = ModelLoader.Load(fixture.Compressed);
        using var original = ServerFixture.LoadStories();
        int[] prompt = original.Tokenizer.Encode(Prompt, addBos: true);
        foreach (var (side, model) in new[] { ("model", compressed), ("base", original) })
        {
            using var runtime = new Transformer(model, new RuntimeOptions { Threads = 2, ContextLength = ServerFixture.Context });
            var answer = Generator.Generate(runtime, prompt, Tokens, new Sampler(new SamplingOptions { Temperature = 0 }));
            string expected = Encoding.UTF8.GetString([.. answer.SelectMany(model.Tokenizer.TokenBytes)]);
            Assert.Equal(expected, await page.EvaluateExpressionAsync<string>($"document.querySelector('#side-{side} .answer').textContent"));
            Assert.Equal(Tokens, await page.EvaluateExpressionAsync<int>($"document.querySelectorAll('#side-{side} .answer span[title^=\"KL \"]').length"));
            string stats = await page.EvaluateExpressionAsync<string>($"document.querySelector('#side-{side} .run').textContent");
            Assert.StartsWith($"{Tokens} tokens at ", stats, StringComparison.Ordinal);
            Assert.Contains("mean KL", stats, StringComparison.Ordinal);
        }
        Assert.Contains("bits per weight", await page.EvaluateExpressionAsync<string>("document.querySelector('#side-model .stats').textContent"), StringComparison.Ordinal);
    }

    /// <summary>KL(P_original ‖ P_compressed) at the positions predicting the last <paramref name="count"/> tokens of
    /// <paramref name="tokens"/>, both models run over the whole sequence at once.</summary>
    private static double[] Divergences(Model original, Model compressed, int[] tokens, int count)
    {
        float[] LogProbabilities(Model model)
        {
            using var runtime = new Transformer(model, new RuntimeOptions { Threads = 2, ContextLength = ServerFixture.Context });
            float[] logits = runtime.Forward(tokens.AsSpan(0, tokens.Length - 1), count).ToArray();
            int vocab = model.Config.VocabSize;
            for (int i = 0; i < count; i++)
            {
                var row = logits.AsSpan(i * vocab, vocab);
                TensorPrimitives.Subtract(row, TensorPrimitives.Max(row), row);
                double sum = 0;
                foreach (float v in row)
                    sum += Math.Exp(v);
                TensorPrimitives.Subtract(row, (float)Math.Log(sum), row);
            }
            return logits;
        }
        float[] p = LogProbabilities(original), q = LogProbabilities(compressed);
        int n = original.Config.VocabSize;
        return [.. Enumerable.Range(0, count).Select(i => Enumerable.Range(i * n, n).Sum(j => Math.Exp(p[j]) * (p[j] - q[j])))];
    }
}
