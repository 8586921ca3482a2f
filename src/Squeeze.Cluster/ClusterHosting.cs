using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Orleans.Hosting;

namespace Squeeze.Cluster;

/// <summary>How a worker's silo and a client's connection are built from a <see cref="ClusterConfig"/>.</summary>
public static class ClusterHosting
{
    /// <summary>Adds what a worker hosts to a silo (the worker grain, its placement, the model store and the kinds of
    /// work items): what <c>squeeze worker</c> and the tests' in-process silos call.</summary>
    public static ISiloBuilder AddSqueezeWorker(this ISiloBuilder silo, int threads)
    {
        ArgumentNullException.ThrowIfNull(silo);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        silo.Services.AddSingleton(new WorkerSettings(threads));
        silo.Services.AddSingleton<ModelStore>();
        silo.Services.AddSingleton<IWorkKind, EvaluationKind>();
        silo.Services.AddSingleton<IWorkKind, TensorEncodingKind>();
        silo.Services.AddSingleton<IWorkKind, ZipKind>();
        silo.Services.AddSingleton<IWorkKind, CalibrationKind>();
        silo.Services.AddSingleton<IWorkKind, UnzipKind>();
        silo.Services.AddPlacementDirector<WorkerPlacement, WorkerPlacementDirector>();
        return silo;
    }

    /// <summary>A worker's host: a silo in the cluster <paramref name="config"/> describes, on <paramref name="siloPort"/>
    /// and <paramref name="gatewayPort"/> (the configuration's when null), advertising <paramref name="address"/>
    /// (loopback for localhost membership, else the machine's first address, when null).</summary>
    public static IHost Worker(ClusterConfig config, int threads, int? siloPort = null, int? gatewayPort = null, IPAddress? address = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.UseOrleans(silo =>
        {
            int port = siloPort ?? config.SiloPort, gateway = gatewayPort ?? config.GatewayPort;
            if (config.Membership == MembershipKind.Localhost)
            {
                silo.UseLocalhostClustering(port, gateway, config.Primary, config.ServiceId, config.ClusterId);
            }
            else
            {
                silo.UseAdoNetClustering(o =>
                {
                    o.Invariant = "Npgsql";
                    o.ConnectionString = config.ConnectionString;
                });
                silo.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = (config.ClusterId, config.ServiceId));
                silo.ConfigureEndpoints(address ?? Dns.GetHostAddresses(Dns.GetHostName()).First(a => a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork),
                    port, gateway, listenOnAnyHostAddress: true);
            }
            silo.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = config.ItemTimeout);
            silo.AddSqueezeWorker(threads);
        });
        return builder.Build();
    }

    /// <summary>A started client of the cluster <paramref name="config"/> describes; disposing the host disconnects it.</summary>
    public static async Task<(IHost Host, IClusterClient Client)> ConnectAsync(ClusterConfig config, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(config);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client =>
        {
            if (config.Membership == MembershipKind.Localhost)
            {
                client.UseStaticClustering([.. config.Gateways]);
            }
            else
            {
                client.UseAdoNetClustering(o =>
                {
                    o.Invariant = "Npgsql";
                    o.ConnectionString = config.ConnectionString;
                });
            }
            client.Configure<ClusterOptions>(o => (o.ClusterId, o.ServiceId) = (config.ClusterId, config.ServiceId));
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = config.ItemTimeout);
        });
        var host = builder.Build();
        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            host.Dispose();
            throw new ClusterException($"cannot connect to the cluster ({config.Membership}): {e.Message.ReplaceLineEndings(" ")}");
        }
        return (host, host.Services.GetRequiredService<IClusterClient>());
    }
}

/// <summary>A cluster job that cannot go on: a worker refused it, an item failed, or no worker is left. One line.</summary>
public sealed class ClusterException : InvalidOperationException
{
    /// <summary>A job's failure.</summary>
    public ClusterException(string message)
        : base(message)
    {
    }

    /// <summary>A job's failure.</summary>
    public ClusterException()
    {
    }

    /// <summary>A job's failure.</summary>
    public ClusterException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
