using System.CommandLine;
using System.Net;
using Microsoft.Extensions.Hosting;
using Squeeze.Cluster;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze worker --cluster CONFIG</c>: an Orleans silo that runs the cluster's work items until Ctrl+C or SIGTERM.</summary>
internal static class WorkerCommand
{
    public sealed record Options(string Cluster, int? Port, int? GatewayPort, string? Host, int Threads);

    public static Command Create()
    {
        var cluster = ClusterOption();
        cluster.Required = true;
        var port = new Option<int?>("--port") { Description = "Silo port (default: the configuration's siloPort, 11111)" };
        var gatewayPort = new Option<int?>("--gateway-port") { Description = "Gateway port clients connect to (default: the configuration's gatewayPort, 30000)" };
        var host = new Option<string?>("--host") { Description = "Address this worker advertises to the others (adonet membership; default: the machine's first IPv4 address)" };
        var threads = Cli.ThreadsOption();
        threads.Description = "Threads each work item runs on";
        var command = new Command("worker", "Join a cluster as a worker (an Orleans silo) and run the work items of squeeze eval, compress … --cluster until Ctrl+C")
        {
            cluster, port, gatewayPort, host, threads,
        };
        command.SetAction(r => Cli.Run(() => Execute(new Options(r.GetValue(cluster)!, r.GetValue(port), r.GetValue(gatewayPort), r.GetValue(host), r.GetValue(threads)))));
        return command;
    }

    /// <summary><c>--cluster CONFIG</c>: the JSON file naming the cluster's membership (see <see cref="ClusterConfig"/>).</summary>
    public static Option<string?> ClusterOption() => new("--cluster")
    {
        Description = "Run the work on the cluster this JSON file describes (membership: localhost or adonet; see README), with the same result as on this machine",
    };

    public static int Execute(Options options)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.Threads);
        var config = ClusterConfig.Read(options.Cluster);
        IPAddress? address = null;
        if (options.Host is not null && !IPAddress.TryParse(options.Host, out address))
            throw new ArgumentException($"--host {options.Host} is not an IP address");
        using var host = ClusterHosting.Worker(config, options.Threads, options.Port, options.GatewayPort, address);
        try
        {
            host.StartAsync(Cli.Cancellation).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new ClusterException($"worker could not join the cluster ({config.Membership}): {e.Message.ReplaceLineEndings(" ")}");
        }
        Console.Error.WriteLine($"squeeze worker: silo port {options.Port ?? config.SiloPort}, gateway port {options.GatewayPort ?? config.GatewayPort}, cluster {config.ClusterId} ({config.Membership}), {options.Threads} threads per item; Ctrl+C stops");
        try
        {
            Task.Delay(Timeout.Infinite, Cli.Cancellation).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
        }
        host.StopAsync(CancellationToken.None).GetAwaiter().GetResult();
        return 0;
    }

    /// <summary>Runs <paramref name="work"/> with a client of the cluster <paramref name="configPath"/> describes.</summary>
    public static T WithCluster<T>(string configPath, Func<ClusterJob, T> work)
    {
        var config = ClusterConfig.Read(configPath);
        var (host, client) = ClusterHosting.ConnectAsync(config, Cli.Cancellation).GetAwaiter().GetResult();
        try
        {
            var job = new ClusterJob(client) { PartBytes = config.PartBytes };
            var result = work(job);
            Summary(job.Costs);
            return result;
        }
        finally
        {
            host.StopAsync(CancellationToken.None).GetAwaiter().GetResult();
            host.Dispose();
        }
    }

    /// <summary><paramref name="job"/> with its calibration's shards and its tensors' encodings run as work items on the
    /// cluster, on the model <paramref name="model"/> names.</summary>
    public static Pipeline.CompressionJob OnCluster(Pipeline.CompressionJob job, ClusterJob cluster, ModelRef model)
        => job with { Workers = new ClusterTensorWorkers(cluster, model), CalibrationWorkers = new ClusterCalibrationWorkers(cluster, model) };

    /// <summary>The reference a job sends for a model the client has loaded: its full path, tokenizer and fingerprint.</summary>
    public static ModelRef Reference(string path, string? tokenizer, Models.Model model)
        => new(Path.GetFullPath(path), tokenizer is null ? null : Path.GetFullPath(tokenizer), Convert.ToHexStringLower(Models.ModelFingerprint.Of(model)));

    /// <summary>One line on stderr after a cluster job: its items per worker and what the cluster cost per item.</summary>
    public static void Summary(IReadOnlyList<ItemCost> costs)
    {
        if (costs.Count == 0)
            return;
        var perWorker = costs.GroupBy(c => c.Worker).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key} {g.Count()}");
        Console.Error.WriteLine($"cluster: {costs.Count} items ({string.Join(", ", perWorker)}); per item {costs.Average(c => c.WorkerSeconds):0.000} s on a worker, "
            + $"{costs.Average(c => c.RoundTripSeconds - c.WorkerSeconds) * 1000:0.0} ms of transfer and scheduling, {costs.Average(c => c.BytesSent) / 1024:0.0} KB out, {costs.Average(c => c.BytesReceived) / 1024:0.0} KB back");
    }

    /// <summary>A cluster's progress as a progress bar's step.</summary>
    public static IProgress<ClusterProgress> Bar(IProgress<(double Done, double Total, string Note)> bar)
        => new SynchronousProgress<ClusterProgress>(p => bar.Report((p.Done, p.Total, p.ToString())));
}
