using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Squeeze.Formats;
using Squeeze.Runtime;
using Squeeze.Server;

namespace Squeeze.Bench;

/// <summary>
/// A load test of <c>squeeze serve</c> on loopback, bounded in count and time: for each model, one client for a quarter
/// of the time, then <c>--clients</c> clients (8) for <c>--seconds</c> (60), each sending completions of
/// <c>--max-tokens</c> (64) sampled tokens one after the other. Requests/s, generated tokens/s, p50/p99 latency, failed
/// requests; the single client's tokens/s against <see cref="SpeedBenchmark"/>'s decode of the same model (what
/// <c>squeeze bench</c> measures: the server's overhead); the managed heap and working set idle before and after the run.
/// </summary>
internal static class ServeSuite
{
    private static readonly string[] Prompts =
    [
        "Once upon a time", "The little dog ran to the park and", "Lily wanted to bake a cake, so she", "One day, a big red ball",
        "Tom and his sister found a box in the garden.", "The sun was shining and the birds", "There was a boy who loved trains.", "Mia opened the door and saw",
    ];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int clients = Program.Option(args, "--clients", 8);
        int seconds = Program.Option(args, "--seconds", 60);
        int maxTokens = Program.Option(args, "--max-tokens", 64);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        string[] models = Program.Value(args, "--model")?.Split(',') ?? [Path.Combine(shared, "models", "stories15M", "stories15M.bin")];
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- serve {string.Join(' ', args)}`");
        Console.WriteLine();
        Console.WriteLine($"{clients} clients for {seconds} s (1 client for {seconds / 4} s first), completions of {maxTokens} tokens at temperature 0.8, {threads} threads, --parallel {clients}.");
        Console.WriteLine();
        Console.WriteLine("| model | bench decode tok/s | 1 client tok/s | overhead | clients | requests | failed | requests/s | tokens/s | p50 s | p99 s | heap idle before → after MB | working set before → after MB |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (string path in models)
        {
            string? tokenizer = path.EndsWith(".bin", StringComparison.Ordinal) ? Path.Combine(Path.GetDirectoryName(path)!, "tokenizer.model") : null;
            double decode = BenchDecode(path, tokenizer, threads, maxTokens);
            var options = new ServerOptions { Model = path, Tokenizer = tokenizer, Port = 0, Parallel = clients, QueueLength = 4 * clients, Threads = threads, ContextLength = 256, MaxTokens = maxTokens };
            var server = SqueezeServer.StartAsync(options).GetAwaiter().GetResult();
            try
            {
                using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(10) };
                // warm-up: JIT tiers, mapped pages, and the buffers sized by the largest batch, which the runtime makes
                // the first time that many sequences run together (so the heap columns show growth, not first use)
                Load(http, 1, 5, maxTokens);
                Load(http, clients, 5, maxTokens);
                var (heapBefore, setBefore) = Idle(http);
                var single = Load(http, 1, Math.Max(1, seconds / 4), maxTokens);
                var many = Load(http, clients, seconds, maxTokens);
                var (heapAfter, setAfter) = Idle(http);
                Console.WriteLine($"| {Path.GetFileName(Path.TrimEndingDirectorySeparator(path))} | {decode:0.0} | {single.TokensPerSecond:0.0} | {1 - single.TokensPerSecond / decode:0%} | {clients} | {many.Requests} | {many.Failed} | {many.Requests / many.Seconds:0.00} | {many.TokensPerSecond:0.0} | {many.P50:0.00} | {many.P99:0.00} | {heapBefore / 1e6:0.0} → {heapAfter / 1e6:0.0} | {setBefore / 1e6:0} → {setAfter / 1e6:0} |");
            }
            finally
            {
                server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
    }

    /// <summary><see cref="SpeedBenchmark"/>'s decode tokens/s, in a method of its own: the model it loads is unreachable
    /// once it returns (a local of <see cref="Run"/> could stay reported live until the end of the loop's method, and its
    /// weights, if held in the heap, would be counted as the server's).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static double BenchDecode(string path, string? tokenizer, int threads, int maxTokens)
    {
        using var model = ModelLoader.Load(path, tokenizer);
        return SpeedBenchmark.Run(model, threads, promptTokens: 0, decodeTokens: maxTokens, repetitions: 3).DecodeTokensPerSecond;
    }

    private sealed record Result(int Requests, int Failed, double Seconds, double TokensPerSecond, double P50, double P99);

    /// <summary><paramref name="clients"/> clients sending requests one after the other until <paramref name="seconds"/>
    /// have passed (a request started before then runs to its end).</summary>
    private static Result Load(HttpClient http, int clients, int seconds, int maxTokens)
    {
        var latencies = new List<double>();
        int failed = 0;
        long tokens = 0;
        var clock = Stopwatch.StartNew();
        var tasks = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            for (int r = 0; clock.Elapsed.TotalSeconds < seconds; r++)
            {
                string body = JsonSerializer.Serialize(new { prompt = Prompts[(c + r) % Prompts.Length], max_tokens = maxTokens, temperature = 0.8, seed = c * 1000 + r });
                var start = Stopwatch.GetTimestamp();
                using var response = await http.PostAsync("v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
                string text = await response.Content.ReadAsStringAsync();
                double latency = Stopwatch.GetElapsedTime(start).TotalSeconds;
                lock (latencies)
                {
                    if (!response.IsSuccessStatusCode)
                    {
                        failed++;
                        continue;
                    }
                    latencies.Add(latency);
                    tokens += JsonDocument.Parse(text).RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
                }
            }
        })).ToArray();
        Task.WaitAll(tasks);
        double elapsed = clock.Elapsed.TotalSeconds;
        var sorted = latencies.Order().ToArray();
        double Percentile(double q) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
        return new Result(sorted.Length + failed, failed, elapsed, tokens / elapsed, Percentile(0.5), Percentile(0.99));
    }

    /// <summary>The managed heap after a full collection and the working set, once the server reports no sequence,
    /// queue or KV-cache bytes.</summary>
    private static (long Heap, long WorkingSet) Idle(HttpClient http)
    {
        for (int i = 0; i < 100; i++)
        {
            string metrics = http.GetStringAsync("metrics").GetAwaiter().GetResult();
            if (Value(metrics, "squeeze_running_sequences") == 0 && Value(metrics, "squeeze_queue_length") == 0 && Value(metrics, "squeeze_kv_cache_bytes") == 0)
                break;
            Thread.Sleep(100);
        }
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var process = Process.GetCurrentProcess();
        return (GC.GetTotalMemory(false), process.WorkingSet64);
    }

    private static double Value(string metrics, string name)
        => double.Parse(metrics.Split('\n').First(l => l.StartsWith(name + "{", StringComparison.Ordinal)).Split(' ')[^1], CultureInfo.InvariantCulture);
}
