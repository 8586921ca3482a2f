using Squeeze.Allocation;
using Squeeze.Calibration;
using Squeeze.Cluster;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Pipeline;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;
using Squeeze.Zip;

namespace Squeeze.Tests.Cluster;

/// <summary>One three-silo in-process cluster for the tests that leave it as it is.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public InProcessCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync() => Cluster = await InProcessCluster.StartAsync(3);

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

/// <summary>The work of a job on a three-silo in-process cluster gives the same figures and bytes as on one machine.</summary>
public sealed class ClusterTests(ClusterFixture fixture, Formats.Architectures.Qwen3MoeCheckpoint qwen3Moe)
    : IClassFixture<ClusterFixture>, IClassFixture<Formats.Architectures.Qwen3MoeCheckpoint>
{
    private readonly InProcessCluster cluster = fixture.Cluster;

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
        // Scores against a base came back in several parts.
        Assert.Contains(job.Costs, c => c.BytesReceived > InProcessCluster.PartBytes);
    }

    [Fact]
    public async Task AWorkerLetsGoOfWhatAnAbandonedItemStagedAndChecksTheWholeInput()
    {
        var worker = cluster.Cluster.Client.GetGrain<IWorkerGrain>(cluster.Cluster.Primary!.SiloAddress.ToParsableString());
        string run = Guid.NewGuid().ToString("N");
        WorkItem Item(int index, ulong checksum) => new(ClusterProtocol.Version, ZipKind.KindName, [], $"{run}/{index}", 2, [7], checksum, InProcessCluster.PartBytes);
        await worker.Stage($"{run}/0", 0, [1, 2, 3]);
        // Its client gave up on item 0 and sent the worker item 1: item 0's part is let go.
        await worker.Stage($"{run}/1", 0, [4, 5, 6]);
        Assert.Equal($"a {ZipKind.KindName} item reached worker {worker.GetPrimaryKeyString()} with 1 of its 2 parts", (await worker.Run(Item(0, 0))).Error);
        // Running item 0 let go of item 1's part too; staged again, the item is whole, but not what the client hashed.
        await worker.Stage($"{run}/1", 0, [4, 5, 6]);
        Assert.Contains("damaged (checksum mismatch)", (await worker.Run(Item(1, 0))).Error, StringComparison.Ordinal);
        // Nothing is kept of a failed item.
        await Assert.ThrowsAsync<InvalidOperationException>(() => worker.Fetch($"{run}/1", 1));
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

    // stories260K keeps the suite fast; the encodings are the same code at any size.
    private static CompressionOptions MixOptions => new()
    {
        Mix = QuantizationMix.Parse("Q4_K_M"), Method = CompressionMethod.Gptq, CalibrationTokens = 256, ContextLength = 128, RefinePasses = 1, Threads = 2,
    };

    [Fact]
    public void ANamedMixByAwqAndGptqWritesTheOneMachineBytes()
    {
        using var model = InProcessCluster.Load(SharedData.Stories260K);
        var job = cluster.Job();
        var workers = new ClusterTensorWorkers(job, InProcessCluster.Reference(SharedData.Stories260K, model));
        // AWQ's scaled weights and norms travel with their items; GPTQ runs on them.
        var (local, distributed) = CompressBoth(model, MixOptions with { Method = CompressionMethod.AwqGptq }, workers);
        Assert.NotEmpty(local.AwqAlphas);
        Assert.Equal(local.Tensors.Select(t => (t.Name, t.Encoding, t.ErrorAfter)), distributed.Tensors.Select(t => (t.Name, t.Encoding, t.ErrorAfter)));
        Assert.Contains(distributed.Tensors, t => t.Encoding == "gptq");
        Assert.Equal(model.Tensors.Count, job.Costs.Count);
        Assert.Equal(3, job.Costs.Select(c => c.Worker).Distinct().Count());
        // Every weight's input (its Gram matrix) and encoded bytes travelled in many parts.
        Assert.Contains(job.Costs, c => c.BytesSent > 16 * InProcessCluster.PartBytes && c.BytesReceived > 4 * InProcessCluster.PartBytes);
    }

    [Fact]
    public void AMixtureOfExpertsNamedMixByGptqWritesTheOneMachineBytes()
    {
        // Each routed expert is calibrated on its own tokens: those statistics travel with the expert stack's item.
        using var model = InProcessCluster.Load(qwen3Moe.HuggingFace);
        var job = cluster.Job();
        var workers = new ClusterTensorWorkers(job, InProcessCluster.Reference(qwen3Moe.HuggingFace, model));
        var (local, distributed) = CompressBoth(model, MixOptions with { Mix = QuantizationMix.Q8_0 }, workers);
        Assert.Equal(local.Tensors.Select(t => (t.Name, t.Encoding, t.ErrorAfter)), distributed.Tensors.Select(t => (t.Name, t.Encoding, t.ErrorAfter)));
        Assert.Contains(distributed.Tensors, t => t.Name.Contains("_exps", StringComparison.Ordinal) && t.Encoding.Contains("gptq", StringComparison.Ordinal));
    }

    [Fact]
    public void ASizeBudgetWithEveryCandidateEncodedOnTheClusterWritesTheOneMachineBytes()
    {
        using var model = InProcessCluster.Load(SharedData.Stories260K);
        string dir = Directory.CreateTempSubdirectory("squeeze-cluster-").FullName;
        try
        {
            CompressionJob Job(string name) => new()
            {
                Target = new BudgetTarget(Bytes: null, BitsPerWeight: 9.0, Swaps: SwapMeasurement.Sampled),
                Method = CompressionMethod.Gptq,
                CalibrationText = Compression.CompressorTests.CalibrationText,
                CalibrationTokens = 256,
                ContextLength = 128,
                Threads = 2,
                Output = Path.Combine(dir, name),
            };
            var job = cluster.Job();
            var workers = new ClusterTensorWorkers(job, InProcessCluster.Reference(SharedData.Stories260K, model));
            var local = CompressionPipeline.Run(model, Job("local.gguf"));
            var distributed = CompressionPipeline.Run(model, Job("cluster.gguf") with { Workers = workers });
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir, "local.gguf")), File.ReadAllBytes(Path.Combine(dir, "cluster.gguf")));
            Assert.Equal(local.Tensors.Select(t => t.Format), distributed.Tensors.Select(t => t.Format));
            // Every (tensor, type) candidate of every block was an item.
            Assert.True(job.Costs.Count > model.Tensors.Count(t => t.Shape.Length == 2));
            Assert.Equal(3, job.Costs.Select(c => c.Worker).Distinct().Count());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // 80 chunks of 16 tokens: ten shards of 8 chunks in three groups (of 4, 4 and 2 shards) of every block.
    private static CalibrationOptions GroupedCalibration => new() { ContextLength = 16, MaxTokens = 16 * 80, CollectGram = true, Threads = 2 };

    // Chunks in each group of GroupedCalibration.
    private static readonly int[] GroupChunks = [32, 32, 16];

    [Fact]
    public void CalibrationOverGroupsOfShardsWritesTheOneMachineStatisticsFile()
    {
        // stories260K, and the mixture of experts, whose routed experts' statistics are added shard by shard and group by
        // group too.
        foreach (string path in new[] { SharedData.Stories260K, qwen3Moe.HuggingFace })
        {
            using var model = InProcessCluster.Load(path);
            var job = cluster.Job();
            var (local, distributed) = CalibrateBoth(model, new ClusterCalibrationWorkers(job, InProcessCluster.Reference(path, model)));
            Assert.Equal(local, distributed);
            // Every group of every block, and of the classifier's input, was an item, and every worker took some.
            int runs = model.Config.LayerCount + 1;
            Assert.Equal(GroupChunks.Length * runs, job.Costs.Count);
            Assert.Equal(3, job.Costs.Select(c => c.Worker).Distinct().Count());
            // The residual stream went out and the statistics with their Gram matrices came back in many parts.
            Assert.All(job.Costs, c => Assert.True(c.BytesSent > 8 * InProcessCluster.PartBytes && c.BytesReceived > 8 * InProcessCluster.PartBytes));
            if (model.Config.ExpertCount > 0)
                continue;
            // A group's statistics come back as one sum, the same bytes whatever its shards (4, 4 or 2) and beside the
            // group's chunks after the block (none for the classifier's input): per block the statistics come back three
            // times, where an item per shard would bring them back ten times.
            long chunkBytes = sizeof(int) + (long)GroupedCalibration.ContextLength * model.Config.Dim * sizeof(float);
            for (int run = 0; run < runs; run++)
            {
                bool classifier = run == model.Config.LayerCount;
                var statistics = job.Costs.Skip(run * GroupChunks.Length).Take(GroupChunks.Length)
                    .Select((c, g) => c.BytesReceived - (classifier ? 0 : GroupChunks[g] * chunkBytes)).Distinct().ToArray();
                long one = Assert.Single(statistics);
                Assert.True(one > 8 * InProcessCluster.PartBytes);
            }
            Assert.Equal(10, CalibrationShards.Count(GroupChunks.Sum()));
            Assert.Equal(GroupChunks.Length, CalibrationShards.Groups(GroupChunks.Sum()));
        }
    }

    [Fact]
    public void ANamedMixCalibratedAndEncodedOnTheClusterWritesTheOneMachineBytes()
    {
        using var model = InProcessCluster.Load(SharedData.Stories260K);
        var job = cluster.Job();
        var reference = InProcessCluster.Reference(SharedData.Stories260K, model);
        var options = MixOptions with { CalibrationTokens = GroupedCalibration.MaxTokens, ContextLength = GroupedCalibration.ContextLength };
        CompressBoth(model, options, new ClusterTensorWorkers(job, reference), new ClusterCalibrationWorkers(job, reference));
        // Three groups of each block and of the classifier's input, and one item per tensor.
        Assert.Equal(GroupChunks.Length * (model.Config.LayerCount + 1) + model.Tensors.Count, job.Costs.Count);
    }

    [Fact]
    public async Task CalibrationOnOneWorkerWritesTheOneMachineStatisticsFile()
    {
        await using var own = await InProcessCluster.StartAsync(1);
        using var model = InProcessCluster.Load(SharedData.Stories260K);
        var job = own.Job();
        var (local, distributed) = CalibrateBoth(model, new ClusterCalibrationWorkers(job, InProcessCluster.Reference(SharedData.Stories260K, model)));
        Assert.Equal(local, distributed);
        Assert.Equal(GroupChunks.Length * (model.Config.LayerCount + 1), job.Costs.Count);
    }

    [Fact]
    public async Task CalibrationThroughAWorkerStoppedMidJobWritesTheOneMachineStatisticsFile()
    {
        await using var own = await InProcessCluster.StartAsync(3);
        var stopper = new FirstItemStopper(own);
        // stories260K, block 0 alone, ten groups of 32 chunks in one run: more items than the workers may take ahead of the
        // merge (two each), each result hundreds of parts, so that the stopped worker is in the middle of its next item
        // or still holds a finished result.
        using var model = InProcessCluster.Load(SharedData.Stories260K);
        var options = GroupedCalibration with { MaxTokens = 16 * 320, Layers = new HashSet<int> { 0 } };
        var job = own.Job();
        var (local, distributed) = CalibrateBoth(model, new ClusterCalibrationWorkers(job, InProcessCluster.Reference(SharedData.Stories260K, model), stopper.Progress), options);
        Assert.Equal(local, distributed);
        // It finished an item (or the kill would not have started) and was lost: in its next item, or with a finished
        // result not yet fetched, which ran again elsewhere (on a loaded machine a busy silo may miss its probes and be
        // declared dead too: survived the same way).
        await stopper.Stopping!;
        Assert.InRange(stopper.Lost, 1, 2);
        Assert.Equal(10, job.Costs.Count);
    }

    // A statistics file written on this machine (when `local`) and one through `workers`, as bytes.
    private static (byte[]? Local, byte[] Distributed) CalibrateBoth(Squeeze.Models.Model model, ICalibrationWorkers workers, CalibrationOptions? options = null, bool local = true)
    {
        options ??= GroupedCalibration;
        string dir = Directory.CreateTempSubdirectory("squeeze-cluster-").FullName;
        try
        {
            string text = Compression.CompressorTests.CalibrationText;
            string localPath = Path.Combine(dir, "local.stats"), clusterPath = Path.Combine(dir, "cluster.stats");
            if (local)
                CalibrationFile.Collect(localPath, model, text, options);
            CalibrationFile.Collect(clusterPath, model, text, options with { Workers = workers });
            return (local ? File.ReadAllBytes(localPath) : null, File.ReadAllBytes(clusterPath));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ZipAndUnzipOverBlocksGiveTheOneMachineArchiveAndTheInputBack()
    {
        using var model = InProcessCluster.Load(SharedData.Stories260K);
        byte[] input = System.Text.Encoding.UTF8.GetBytes(EvaluationText[..4_000]);
        // Four segments of 256 bytes per block: four blocks, a batch of three and one.
        var options = new ZipOptions { Lanes = 4, SegmentBytes = 256, ContextLength = 64, Threads = 1 };
        using var local = new MemoryStream();
        var expected = ModelCodec.Compress(model, new MemoryStream(input), local, options);
        var job = cluster.Job();
        var workers = new ClusterZipWorkers(job, InProcessCluster.Reference(SharedData.Stories260K, model), blocksAtOnce: 3);
        using var distributed = new MemoryStream();
        var actual = ModelCodec.Compress(model, new MemoryStream(input), distributed, options with { Workers = workers });
        Assert.Equal(local.ToArray(), distributed.ToArray());
        Assert.Equal(expected with { Seconds = 0 }, actual with { Seconds = 0 });
        Assert.Equal(4, job.Costs.Count);
        Assert.All(job.Costs, c => Assert.True(c.BytesSent > InProcessCluster.PartBytes));
        // And back, block by block on the cluster.
        using var restored = new MemoryStream();
        ModelCodec.Decompress(model, new MemoryStream(distributed.ToArray()), restored, "cluster.sqz", threads: 1, workers: workers);
        Assert.Equal(input, restored.ToArray());
        Assert.Equal(8, job.Costs.Count);
    }

    [Fact]
    public async Task AWorkerStoppedMidJobHasItsItemsRunElsewhereWithTheSameResults()
    {
        await using var own = await InProcessCluster.StartAsync(3);
        // Stopped as soon as it has finished one item: the item it is given next and the rest of its share run on the
        // other two.
        var stopper = new FirstItemStopper(own);

        // Evaluation chunks of stories15M: enough of them that the stopped worker is asked for more.
        using var model = InProcessCluster.Load(SharedData.Stories15M);
        var options = new EvaluationOptions { ContextLength = 32, MaxChunks = 24, Threads = 1 };
        string text = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"))[..8_000];
        var job = own.Job();
        var distributed = await ClusterEvaluator.EvaluateAsync(job, model, InProcessCluster.Reference(SharedData.Stories15M, model), text, options, progress: stopper.Progress);
        Same(Evaluator.Evaluate(model, text, options), distributed);
        await stopper.Stopping!;
        // At least the stopped one (on a loaded machine a busy silo may miss its probes and be declared dead too: that is
        // survived the same way).
        Assert.InRange(stopper.Lost, 1, 2);
        Assert.Contains(job.Costs, c => c.Worker == stopper.Name);

        // The next job, a compression, runs on the two left and writes the one-machine bytes.
        using var small = InProcessCluster.Load(SharedData.Stories260K);
        var next = own.Job();
        CompressBoth(small, MixOptions, new ClusterTensorWorkers(next, InProcessCluster.Reference(SharedData.Stories260K, small)));
        Assert.DoesNotContain(next.Costs, c => c.Worker == stopper.Name);
    }

    // The same job on one machine and through `workers` (and `calibrationWorkers`): the files must be the same bytes.
    private static (CompressionReport Local, CompressionReport Distributed) CompressBoth(Squeeze.Models.Model model, CompressionOptions options, ITensorWorkers workers,
        ICalibrationWorkers? calibrationWorkers = null)
    {
        string dir = Directory.CreateTempSubdirectory("squeeze-cluster-").FullName;
        try
        {
            string text = Compression.CompressorTests.CalibrationText;
            string localPath = Path.Combine(dir, "local.gguf"), clusterPath = Path.Combine(dir, "cluster.gguf");
            var local = Compressor.Compress(model, text, options, localPath);
            var distributed = Compressor.Compress(model, text, options with { Workers = workers, CalibrationWorkers = calibrationWorkers ?? CalibrationWorkers.InProcess }, clusterPath);
            Assert.Equal(File.ReadAllBytes(localPath), File.ReadAllBytes(clusterPath));
            return (local, distributed);
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

    /// <summary>Stops the cluster's first secondary silo as soon as a job reports that it finished one item, and keeps the
    /// most workers the job counted lost.</summary>
    private sealed class FirstItemStopper
    {
        public FirstItemStopper(InProcessCluster own)
        {
            var victim = own.Cluster.SecondarySilos[0];
            Name = victim.SiloAddress.ToParsableString();
            Progress = new SynchronousProgress<ClusterProgress>(p =>
            {
                if (Stopping is null && p.PerWorker.GetValueOrDefault(Name) >= 1)
                    Stopping = own.Cluster.KillSiloAsync(victim);
                Lost = Math.Max(Lost, p.Lost);
            });
        }

        /// <summary>The silo's address, as the job's progress and costs name its worker.</summary>
        public string Name { get; }

        /// <summary>The job's progress: stops the silo after its first item.</summary>
        public SynchronousProgress<ClusterProgress> Progress { get; }

        /// <summary>The stop, once started.</summary>
        public Task? Stopping { get; private set; }

        /// <summary>The most workers the job counted lost.</summary>
        public int Lost { get; private set; }
    }
}
