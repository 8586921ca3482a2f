using Microsoft.Extensions.Configuration;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.TestingHost;
using Squeeze.Cluster;
using Squeeze.Formats;
using Squeeze.Models;

namespace Squeeze.Tests.Cluster;

/// <summary>An in-process Orleans cluster of <c>squeeze worker</c> silos (TestingHost), one thread per item, with
/// membership tuned to notice a stopped silo within seconds.</summary>
public sealed class InProcessCluster : IAsyncDisposable
{
    private InProcessCluster(TestCluster cluster) => Cluster = cluster;

    public TestCluster Cluster { get; }

    /// <summary>A job whose items and results travel in parts of <see cref="PartBytes"/>: every weight's item of
    /// stories260K and stories15M takes many.</summary>
    public ClusterJob Job() => new(Cluster.Client) { WatchInterval = TimeSpan.FromMilliseconds(500), PartBytes = PartBytes };

    /// <summary>The tests' part size, 1,000 bytes: 33 parts for a Gram matrix of stories260K, values cut across parts.</summary>
    public const int PartBytes = 1_000;

    public static async Task<InProcessCluster> StartAsync(int silos)
    {
        var builder = new TestClusterBuilder((short)silos);
        builder.AddSiloBuilderConfigurator<Worker>();
        builder.AddClientBuilderConfigurator<Client>();
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return new InProcessCluster(cluster);
    }

    /// <summary>The reference a job sends for the model at <paramref name="path"/> (its fingerprint, read here).</summary>
    public static ModelRef Reference(string path, Model model) => new(path, null, Convert.ToHexStringLower(ModelFingerprint.Of(model)));

    public static Model Load(string path) => ModelLoader.Load(path);

    public async ValueTask DisposeAsync()
    {
        await Cluster.StopAllSilosAsync();
        await Cluster.DisposeAsync();
    }

    private sealed class Worker : ISiloConfigurator
    {
        public void Configure(ISiloBuilder siloBuilder)
        {
            siloBuilder.AddSqueezeWorker(threads: 1);
            siloBuilder.Configure<ClusterMembershipOptions>(o =>
            {
                o.ProbeTimeout = TimeSpan.FromSeconds(2);
                o.NumMissedProbesLimit = 2;
                o.NumVotesForDeathDeclaration = 1;
                o.TableRefreshTimeout = TimeSpan.FromSeconds(1);
            });
        }
    }

    private sealed class Client : IClientBuilderConfigurator
    {
        public void Configure(IConfiguration configuration, IClientBuilder clientBuilder) =>
            clientBuilder.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(30));
    }
}
