using System.Diagnostics;
using Microsoft.Extensions.Hosting;
using Squeeze.Allocation;
using Squeeze.Calibration;
using Squeeze.Cluster;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Pipeline;
using Squeeze.Quantization;

namespace Squeeze.Bench;

/// <summary>
/// The cluster on one machine: <c>squeeze worker</c>s as separate processes on localhost (this harness started again as
/// <c>cluster --worker</c>, localhost membership), each running its items on one thread, against the same job on one
/// machine (in this process, one thread). Jobs: <c>eval</c> (chunks of the evaluation text), <c>mix</c> (a named mix,
/// <c>--type</c>, by GPTQ: every tensor of every block an item, its Gram matrix travelling in parts) and <c>bpw</c> (a
/// GGUF <c>--target-bpw</c> budget: every candidate of every block an item; calibration, measurement and the search stay
/// on the client) and <c>calibrate</c> (<c>squeeze calibrate --gram</c>: every group of four shards of eight chunks of
/// every block an item, the chunks' residual stream out, the sum of the group's statistics with their Gram matrices and
/// the block's output back; the same statistics file bytes). Per worker count: wall time, speed-up over one worker,
/// items, the workers' seconds per item, the client's round trip per item and their difference (serialization, transfer,
/// scheduling), the bytes each item sent and brought back, for calibrate the bytes brought back per block (and the
/// classifier's input), and whether the result is the one-machine result (figures bit for bit, file bytes).
/// Options: <c>--model</c> (stories15M), <c>--tokenizer</c>, <c>--job eval,bpw</c>, <c>--workers 1,2</c>, <c>--ctx</c>
/// (128), <c>--chunks</c> (32), <c>--type</c> (Q4_K_M), <c>--bpw</c> (5.0), <c>--tokens</c> (1024 calibration tokens),
/// <c>--part-bytes</c> (the configuration's default, 32 MiB).
/// </summary>
internal static class ClusterSuite
{
    public static void Run(string[] args)
    {
        if (args.Contains("--worker"))
        {
            Worker(args);
            return;
        }
        string shared = Program.Shared(args);
        string modelPath = Program.Value(args, "--model") ?? Path.Combine(shared, "models", "stories15M", "stories15M.bin");
        string? tokenizer = Program.Value(args, "--tokenizer");
        string[] jobs = (Program.Value(args, "--job") ?? "eval,bpw").Split(',');
        int[] workerCounts = [.. (Program.Value(args, "--workers") ?? "1,2").Split(',').Select(int.Parse)];
        int ctx = Program.Option(args, "--ctx", 128), chunks = Program.Option(args, "--chunks", 32), tokens = Program.Option(args, "--tokens", 1024);
        double bpw = double.Parse(Program.Value(args, "--bpw") ?? "5.0", System.Globalization.CultureInfo.InvariantCulture);
        string type = Program.Value(args, "--type") ?? "Q4_K_M";
        int partBytes = Program.Option(args, "--part-bytes", ClusterConfig.DefaultPartBytes);
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        using var model = ModelLoader.Load(modelPath, tokenizer);
        var reference = new ModelRef(Path.GetFullPath(modelPath), tokenizer is null ? null : Path.GetFullPath(tokenizer), Convert.ToHexStringLower(ModelFingerprint.Of(model)));
        string dir = Directory.CreateTempSubdirectory("squeeze-cluster-bench-").FullName;

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- cluster {string.Join(' ', args)}`");
        Console.WriteLine();
        Console.WriteLine($"{Path.GetFileName(modelPath)}; eval: {chunks} chunks of {ctx} tokens; mix: {type} by GPTQ; bpw: GGUF --target-bpw {bpw} by GPTQ, swaps predicted from a sample; "
            + $"calibrate: statistics with Gram matrices in shards of {CalibrationShards.ChunksPerShard} chunks of 256 tokens, {CalibrationShards.ShardsPerGroup} shards a group and item; all on {tokens} calibration tokens. Workers on localhost, one thread each, parts of {partBytes:N0} bytes; one machine: this process, one thread. Load average at the start: {ZipSuite.LoadAverage()}.");
        Console.WriteLine();
        Console.WriteLine("| job | run | wall s | speed-up | items | worker s/item | round trip s/item | overhead ms/item | KB sent/item | KB back/item | MB back/block | same result |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        try
        {
            foreach (string job in jobs)
            {
                var evaluation = new EvaluationOptions { ContextLength = ctx, MaxChunks = chunks, Threads = 1 };
                CompressionJob Budget(string name) => new()
                {
                    Target = new BudgetTarget(null, bpw, Swaps: SwapMeasurement.Sampled), Method = CompressionMethod.Gptq, CalibrationText = calibText,
                    CalibrationTokens = tokens, ContextLength = 256, Threads = 1, Output = Path.Combine(dir, name),
                };
                var mix = new CompressionOptions
                {
                    Mix = QuantizationMix.Parse(type), Method = CompressionMethod.Gptq, CalibrationTokens = tokens, ContextLength = 256, Threads = 1,
                };
                var calibration = new CalibrationOptions { ContextLength = 256, MaxTokens = tokens, CollectGram = true, Threads = 1 };
                var clock = Stopwatch.StartNew();
                object? local = job switch
                {
                    "eval" => Evaluator.Evaluate(model, evalText, evaluation) with { TokensPerSecond = 0 },
                    "mix" => Compressor.Compress(model, calibText, mix, Path.Combine(dir, "local.gguf")).FileBytes,
                    "bpw" => CompressionPipeline.Run(model, Budget("local.gguf")).FileBytes,
                    "calibrate" => CalibrationFile.Collect(Path.Combine(dir, "local.stats"), model, calibText, calibration).Entries,
                    _ => throw new ArgumentException($"unknown job {job}: eval, mix, bpw or calibrate"),
                };
                double localSeconds = clock.Elapsed.TotalSeconds;
                Console.WriteLine($"| {job} | one machine × 1 thread | {localSeconds:0.0} | | | | | | | | | |");
                double? first = null;
                foreach (int count in workerCounts)
                {
                    var (seconds, costs, same) = OnCluster(count, partBytes, dir, reference,
                        warmUp => ClusterEvaluator.EvaluateAsync(warmUp, model, reference, evalText, evaluation with { MaxChunks = 4 * count }), async clusterJob =>
                    {
                        if (job == "eval")
                        {
                            var result = await ClusterEvaluator.EvaluateAsync(clusterJob, model, reference, evalText, evaluation);
                            return (result with { TokensPerSecond = 0 }).Equals(local);
                        }
                        if (job == "calibrate")
                        {
                            CalibrationFile.Collect(Path.Combine(dir, "cluster.stats"), model, calibText, calibration with { Workers = new ClusterCalibrationWorkers(clusterJob, reference) });
                            return File.ReadAllBytes(Path.Combine(dir, "local.stats")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, "cluster.stats")));
                        }
                        if (job == "mix")
                            Compressor.Compress(model, calibText, mix with { Workers = new ClusterTensorWorkers(clusterJob, reference) }, Path.Combine(dir, "cluster.gguf"));
                        else
                            CompressionPipeline.Run(model, Budget("cluster.gguf") with { Workers = new ClusterTensorWorkers(clusterJob, reference) });
                        return File.ReadAllBytes(Path.Combine(dir, "local.gguf")).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, "cluster.gguf")));
                    });
                    first ??= seconds;
                    int n = costs.Count;
                    // Calibration runs every block and then the classifier's input, each its own run of items.
                    string perBlock = job == "calibrate" ? $"{costs.Sum(c => c.BytesReceived) / (double)(model.Config.LayerCount + 1) / 1e6:0.0}" : "";
                    Console.WriteLine($"| {job} | {count} worker{(count > 1 ? "s" : "")} × 1 thread | {seconds:0.0} | {first.Value / seconds:0.00}× | {n} | {costs.Average(c => c.WorkerSeconds):0.000} | "
                        + $"{costs.Average(c => c.RoundTripSeconds):0.000} | {costs.Average(c => c.RoundTripSeconds - c.WorkerSeconds) * 1000:0.0} | {costs.Average(c => c.BytesSent) / 1024:0.0} | "
                        + $"{costs.Average(c => c.BytesReceived) / 1024:0.0} | {perBlock} | {(same ? "yes" : "NO")} |");
                }
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // Starts `count` worker processes, runs the job as a client, stops them; the job's wall time and item costs.
    private static (double Seconds, IReadOnlyList<ItemCost> Costs, bool Same) OnCluster(int count, int partBytes, string dir, ModelRef model, Func<ClusterJob, Task> warmUp, Func<ClusterJob, Task<bool>> job)
    {
        const int siloBase = 22111, gatewayBase = 32000;
        string config = Path.Combine(dir, $"cluster-{count}.json");
        File.WriteAllText(config, $$"""
            { "membership": "localhost", "primary": "127.0.0.1:{{siloBase}}", "gateways": [{{string.Join(", ", Enumerable.Range(0, count).Select(i => $"\"127.0.0.1:{gatewayBase + i}\""))}}], "clusterId": "bench-{{count}}", "partBytes": {{partBytes}} }
            """);
        var processes = new List<Process>();
        try
        {
            for (int i = 0; i < count; i++)
            {
                processes.Add(StartWorker(config, siloBase + i, gatewayBase + i));
                if (i == 0)
                    Thread.Sleep(3000); // the primary first
            }
            var parsed = ClusterConfig.Read(config);
            var (host, client) = ClusterHosting.ConnectAsync(parsed).GetAwaiter().GetResult();
            try
            {
                var management = client.GetGrain<IManagementGrain>(0);
                var waited = Stopwatch.StartNew();
                while (management.GetHosts(onlyActive: true).GetAwaiter().GetResult().Count < count)
                {
                    if (waited.Elapsed > TimeSpan.FromSeconds(60))
                        throw new TimeoutException($"{count} workers did not join within 60 s");
                    Thread.Sleep(250);
                }
                // Warm-up: every worker loads and fingerprints the model and runs a few chunks (its JIT) before the clock starts.
                var warming = new ClusterJob(client) { PartBytes = parsed.PartBytes };
                warming.RunAsync("eval-chunk", [model], 0, _ => _ => { }).GetAwaiter().GetResult();
                warmUp(warming).GetAwaiter().GetResult();
                var measured = new ClusterJob(client) { PartBytes = parsed.PartBytes };
                var clock = Stopwatch.StartNew();
                bool same = job(measured).GetAwaiter().GetResult();
                return (clock.Elapsed.TotalSeconds, measured.Costs, same);
            }
            finally
            {
                host.StopAsync().GetAwaiter().GetResult();
                host.Dispose();
            }
        }
        finally
        {
            foreach (var p in processes)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                p.Dispose();
            }
        }
    }


    private static Process StartWorker(string config, int siloPort, int gatewayPort)
    {
        string self = Environment.ProcessPath!;
        var start = new ProcessStartInfo(self) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet")
            start.ArgumentList.Add(typeof(ClusterSuite).Assembly.Location);
        foreach (string a in new[] { "cluster", "--worker", "--config", config, "--port", $"{siloPort}", "--gateway-port", $"{gatewayPort}" })
            start.ArgumentList.Add(a);
        return Process.Start(start)!;
    }

    // `cluster --worker --config FILE --port P --gateway-port G`: a worker with one thread per item until killed.
    private static void Worker(string[] args)
    {
        var config = ClusterConfig.Read(Program.Value(args, "--config")!);
        using var host = ClusterHosting.Worker(config, threads: 1, Program.Option(args, "--port", config.SiloPort), Program.Option(args, "--gateway-port", config.GatewayPort));
        host.Run();
    }
}
