using Squeeze.Cluster;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cluster;

/// <summary>The work of a job on a three-silo in-process cluster gives the same figures and bytes as on one machine.</summary>
public sealed class ClusterTests : IAsyncLifetime
{
    private InProcessCluster cluster = null!;

    public async Task InitializeAsync() => cluster = await InProcessCluster.StartAsync(3);

    public async Task DisposeAsync() => await cluster.DisposeAsync();

    private static string EvaluationText => File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..6_000];

    [Fact]
    public async Task EvaluationOverChunksGivesTheOneMachineFiguresBitForBit()
    {
        using var model = InProcessCluster.Load(SharedData.Stories15M);
        var options = new EvaluationOptions { ContextLength = 64, MaxChunks = 6, Threads = 1 };
        var local = Evaluator.Evaluate(model, EvaluationText, options);
        var job = cluster.Job();
        var distributed = await ClusterEvaluator.EvaluateAsync(job, model, InProcessCluster.Reference(SharedData.Stories15M, model), EvaluationText, options);
        Same(local, distributed);
        Assert.Equal(3, job.Costs.Select(c => c.Worker).Distinct().Count());

        // A compressed KV cache against the model's own f32 cache: the KLD side of the merge.
        var q4 = options with { KvCache = KvCachePolicy.Parse("q4") };
        var localKv = Evaluator.EvaluateKvCaches(model, [q4.KvCache], EvaluationText, q4)[0];
        var distributedKv = await ClusterEvaluator.EvaluateAsync(job, model, InProcessCluster.Reference(SharedData.Stories15M, model), EvaluationText, q4);
        Same(localKv, distributedKv);
        Assert.NotNull(distributedKv.KlDivergence);
    }

    [Fact]
    public async Task AWorkerHoldingAnotherModelIsRefusedWithOneLine()
    {
        using var model = InProcessCluster.Load(SharedData.Stories260K);
        var wrong = InProcessCluster.Reference(SharedData.Stories260K, model) with { Fingerprint = new string('0', 32) };
        var e = await Assert.ThrowsAsync<ClusterException>(() => ClusterEvaluator.EvaluateAsync(cluster.Job(), model, wrong, EvaluationText,
            new EvaluationOptions { ContextLength = 32, MaxChunks = 2, Threads = 1 }));
        Assert.Contains("fingerprint", e.Message, StringComparison.Ordinal);
        Assert.Contains("00000000000000000000000000000000", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public async Task ANamedMixByGptqWritesTheOneMachineBytes()
    {
        using var model = InProcessCluster.Load(SharedData.Stories15M);
        string dir = Directory.CreateTempSubdirectory("squeeze-cluster-").FullName;
        try
        {
            var options = new CompressionOptions
            {
                Mix = QuantizationMix.Parse("Q4_K_M"), Method = CompressionMethod.Gptq, CalibrationTokens = 512, ContextLength = 128, RefinePasses = 1, Threads = 2,
            };
            string text = Compression.CompressorTests.CalibrationText;
            string localPath = Path.Combine(dir, "local.gguf"), clusterPath = Path.Combine(dir, "cluster.gguf");
            var local = Compressor.Compress(model, text, options, localPath);
            var workers = new ClusterTensorWorkers(cluster.Job(), InProcessCluster.Reference(SharedData.Stories15M, model));
            var distributed = Compressor.Compress(model, text, options with { Workers = workers }, clusterPath);
            Assert.Equal(File.ReadAllBytes(localPath), File.ReadAllBytes(clusterPath));
            Assert.Equal(local.Tensors.Select(t => (t.Name, t.Encoding, t.ErrorAfter)), distributed.Tensors.Select(t => (t.Name, t.Encoding, t.ErrorAfter)));
            Assert.Equal(3, workers.Costs.Select(c => c.Worker).Distinct().Count());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    internal static void Same(EvaluationResult expected, EvaluationResult actual)
    {
        // Everything but the speed, bit for bit.
        Assert.Equal(expected with { TokensPerSecond = 0 }, actual with { TokensPerSecond = 0 });
    }
}
