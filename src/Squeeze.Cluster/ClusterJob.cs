using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Squeeze.Cluster;

/// <summary>Progress of a cluster job: items done of the total, per worker, and the estimated time left.</summary>
/// <param name="Done">Items finished.</param>
/// <param name="Total">Items in the job.</param>
/// <param name="PerWorker">Items each worker finished, by silo address.</param>
/// <param name="Lost">Workers that left the cluster during the job (their items run again elsewhere).</param>
/// <param name="SecondsLeft">Time left at the pace so far, or null before the first item.</param>
public sealed record ClusterProgress(int Done, int Total, IReadOnlyDictionary<string, int> PerWorker, int Lost, double? SecondsLeft)
{
    /// <summary>"12/40 items, 2 workers (7, 5), 31 s left".</summary>
    public override string ToString() => $"{Done}/{Total} items, {PerWorker.Count - Lost} workers ({string.Join(", ", PerWorker.Values)})"
        + (Lost > 0 ? $", {Lost} lost" : "") + (SecondsLeft is { } s ? $", {s:0} s left" : "");
}

/// <summary>What one item cost on the cluster: where it ran, the worker's time on it, the time the client waited for it
/// (the difference is serialization, transfer and scheduling), and the bytes that moved each way.</summary>
public sealed record ItemCost(string Worker, double WorkerSeconds, double RoundTripSeconds, long BytesSent, long BytesReceived);

/// <summary>
/// Runs a job's independent items on every worker of the cluster and gives their results in item order, whatever
/// order they finished in, so what the client merges is the same as a one-machine run's. Every worker first proves it
/// holds the job's models (<see cref="IWorkerGrain.Hello"/>): one refusal stops the job with its one line. Each worker
/// takes one item at a time from a shared queue, its input and result moving in parts of <see cref="PartBytes"/>; a
/// worker that leaves the cluster mid-item (a call that fails or times out) is dropped and its item queued again for
/// the others. An item's own error stops the job.
/// </summary>
public sealed class ClusterJob(IClusterClient client)
{
    private readonly List<ItemCost> costs = [];

    /// <summary>What every item run through this job cost, run after run, each run's in item order.</summary>
    public IReadOnlyList<ItemCost> Costs => costs;

    /// <summary>The most bytes one part of an item or a result has on the way (<see cref="ClusterConfig.PartBytes"/>).</summary>
    public int PartBytes { get; init; } = ClusterConfig.DefaultPartBytes;

    /// <summary>Runs <paramref name="count"/> items of <paramref name="kind"/> on <paramref name="models"/>, item
    /// <c>i</c>'s input what <paramref name="write"/>(i) writes; the results in item order. An item's input is written
    /// when a worker takes it (again, if its worker is lost) and let go once sent, so the client holds one input per
    /// worker at most.</summary>
    /// <exception cref="ClusterException">A worker refused the job, an item failed, or no worker is left.</exception>
    public async Task<Payload[]> RunAsync(string kind, IReadOnlyList<ModelRef> models, int count, Func<int, Action<BinaryWriter>> write,
        IProgress<ClusterProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var results = new Payload[count];
        await Run(kind, models, count, write, (i, result) => results[i] = result, bounded: false, progress, cancellationToken).ConfigureAwait(false);
        return results;
    }

    /// <summary>Runs <paramref name="count"/> items as <see cref="RunAsync"/> does, but hands each result to
    /// <paramref name="consume"/> in item order, one call at a time, and lets go of it after: a finished item's result
    /// stays on its worker (but for its first part) until every item before it is consumed, and a worker takes an item
    /// only while fewer than two per worker are taken and not yet consumed (one to run while the client consumes
    /// another), so the client holds one whole result at a time and at most two first parts per worker (a merge of
    /// large results in a fixed order, such as a calibration's groups). A result whose worker left
    /// before it was fetched is run again elsewhere. An exception from <paramref name="consume"/> stops the job.</summary>
    /// <exception cref="ClusterException">A worker refused the job, an item failed, or no worker is left.</exception>
    public Task RunInOrderAsync(string kind, IReadOnlyList<ModelRef> models, int count, Func<int, Action<BinaryWriter>> write, Action<int, Payload> consume,
        IProgress<ClusterProgress>? progress = null, CancellationToken cancellationToken = default)
        => Run(kind, models, count, write, consume, bounded: true, progress, cancellationToken);

    // Items are taken lowest index first; a bounded job takes item i only while i < consumed + 2 × workers. An item queued
    // again (its worker lost) was taken when its index was below that bound, which only grows, so it is always takeable
    // and the first item not consumed is never left waiting behind the others. An unbounded job fetches every result
    // when its item finishes; a bounded one fetches the rest of a result when its turn to be consumed comes.
    private async Task Run(string kind, IReadOnlyList<ModelRef> models, int count, Func<int, Action<BinaryWriter>> write, Action<int, Payload> consume, bool bounded,
        IProgress<ClusterProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentNullException.ThrowIfNull(write);
        ArgumentNullException.ThrowIfNull(consume);
        var workers = await Workers(models).ConfigureAwait(false);
        int total = count;
        string run = Guid.NewGuid().ToString("N");
        var finished = new Finished?[total];
        var itemCosts = new ItemCost[total];
        var perWorker = workers.ToDictionary(w => w.Name, _ => 0, StringComparer.Ordinal);
        var pending = new SortedSet<int>(Enumerable.Range(0, total));
        long window = bounded ? 2L * workers.Count : total;
        int done = 0, consumed = 0;
        var gone = new HashSet<string>(StringComparer.Ordinal);
        Exception? failure = null;
        var wake = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var clock = Stopwatch.StartNew();
        var gate = new object();
        void Report()
        {
            double? left = done == 0 ? null : clock.Elapsed.TotalSeconds / done * (total - done);
            progress?.Report(new ClusterProgress(done, total, new Dictionary<string, int>(perWorker), gone.Count, left));
        }
        // Under the gate: wakes the workers waiting for an item and the consumer waiting for a result.
        void Wake()
        {
            var woken = wake;
            wake = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            woken.TrySetResult();
        }
        void Fail(Exception e)
        {
            failure ??= e;
            Wake();
        }
        // Under the gate: a worker that left (a call to it failed or its membership lapsed) is dropped from the job.
        void Lose(string name)
        {
            if (gone.Add(name) && gone.Count == workers.Count)
                Fail(new ClusterException($"every worker left the cluster with {total - done} of {total} {kind} items not done"));
        }
        // Waits, outside the gate, until something changes.
        async Task Changed(Task wait) => await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        // The next item this worker may take, or null once the job is over (done or failed) or the worker left it.
        async Task<int?> Take(string name)
        {
            while (true)
            {
                Task wait;
                lock (gate)
                {
                    if (failure is not null || consumed == total || gone.Contains(name))
                        return null;
                    if (pending.Count > 0 && pending.Min < consumed + window)
                    {
                        int i = pending.Min;
                        pending.Remove(i);
                        return i;
                    }
                    wait = wake.Task;
                }
                await Changed(wait).ConfigureAwait(false);
            }
        }
        Report();

        async Task Serve(string name, IWorkerGrain worker)
        {
            while (await Take(name).ConfigureAwait(false) is int i)
            {
                long start = Stopwatch.GetTimestamp();
                StrongBox<Payload?> input;
                try
                {
                    // Written here, so that the client's own failure to write it stops the job; let go once sent.
                    input = new StrongBox<Payload?>(Payload.Write(PartBytes, write(i)));
                }
                catch (Exception e)
                {
                    lock (gate)
                        Fail(e);
                    return;
                }
                (WorkResult Answer, List<byte[]>? Parts, long Sent) attempt;
                try
                {
                    attempt = await Watched(name, Attempt(worker, kind, models, $"{run}/{i}", input, fetch: !bounded), cancellationToken).ConfigureAwait(false);
                }
                catch (Exception) when (!cancellationToken.IsCancellationRequested)
                {
                    // The worker left (or its silo stopped answering): its item goes to the others.
                    lock (gate)
                    {
                        pending.Add(i);
                        Lose(name);
                        Wake();
                        Report();
                    }
                    return;
                }
                var (answer, parts, sent) = attempt;
                if (answer.Refusal is not null || answer.Error is not null)
                {
                    lock (gate)
                        Fail(new ClusterException(answer.Refusal ?? answer.Error!));
                    return;
                }
                lock (gate)
                {
                    finished[i] = new Finished(name, worker, answer, parts!, sent, Stopwatch.GetElapsedTime(start).TotalSeconds);
                    perWorker[name]++;
                    done++;
                    Wake();
                    Report();
                }
            }
        }

        // Consumes the results in item order, fetching the rest of each from its worker when its turn comes.
        async Task Consume()
        {
            while (true)
            {
                Finished? next;
                Task wait;
                lock (gate)
                {
                    if (failure is not null || consumed == total)
                        return;
                    next = finished[consumed];
                    wait = wake.Task;
                }
                if (next is null)
                {
                    await Changed(wait).ConfigureAwait(false);
                    continue;
                }
                int i = consumed;
                long start = Stopwatch.GetTimestamp();
                try
                {
                    for (int p = next.Parts.Count; p < next.Answer.Parts; p++)
                        next.Parts.Add(await Watched(next.Name, next.Worker.Fetch($"{run}/{i}", p), cancellationToken).ConfigureAwait(false));
                }
                catch (Exception) when (!cancellationToken.IsCancellationRequested)
                {
                    // Its worker left with the result: the item runs again, on the others.
                    lock (gate)
                    {
                        finished[i] = null;
                        done--;
                        perWorker[next.Name]--;
                        pending.Add(i);
                        Lose(next.Name);
                        Wake();
                        Report();
                    }
                    continue;
                }
                var result = Payload.Of(next.Parts);
                lock (gate)
                    finished[i] = null;
                try
                {
                    if (result.Checksum() != next.Answer.Checksum)
                        throw new ClusterException($"a {kind} result from worker {next.Name} arrived damaged (checksum mismatch)");
                    itemCosts[i] = new ItemCost(next.Name, next.Answer.Seconds, next.Seconds + Stopwatch.GetElapsedTime(start).TotalSeconds, next.Sent, result.Length);
                    consume(i, result);
                }
                catch (Exception e)
                {
                    lock (gate)
                        Fail(e);
                    return;
                }
                lock (gate)
                {
                    consumed++;
                    Wake();
                }
            }
        }

        await Task.WhenAll(workers.Select(w => Serve(w.Name, w.Grain)).Append(Consume())).ConfigureAwait(false);
        if (failure is not null)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        costs.AddRange(itemCosts);
    }

    // A finished item waiting to be consumed: its worker, the answer, the parts of its result fetched so far, the bytes
    // sent and the seconds it took.
    private sealed record Finished(string Name, IWorkerGrain Worker, WorkResult Answer, List<byte[]> Parts, long Sent, double Seconds);

    // One item on one worker: its input staged part by part, the run, and (with `fetch`) the result's other parts
    // fetched; the answer, the result's parts (null on a refusal or an error) and the bytes sent.
    private async Task<(WorkResult Answer, List<byte[]>? Parts, long Sent)> Attempt(IWorkerGrain worker, string kind, IReadOnlyList<ModelRef> models, string key,
        StrongBox<Payload?> input, bool fetch)
    {
        var (item, sent) = await Send(worker, kind, models, key, input).ConfigureAwait(false);
        var answer = await worker.Run(item).ConfigureAwait(false);
        if (answer.Refusal is not null || answer.Error is not null)
            return (answer, null, sent);
        var parts = new List<byte[]>(answer.Parts) { answer.First };
        for (int p = 1; fetch && p < answer.Parts; p++)
            parts.Add(await worker.Fetch(key, p).ConfigureAwait(false));
        return (answer, parts, sent);
    }

    // Stages all the input's parts but the last, which goes with the run, and lets go of the input.
    private async Task<(WorkItem Item, long Bytes)> Send(IWorkerGrain worker, string kind, IReadOnlyList<ModelRef> models, string key, StrongBox<Payload?> box)
    {
        var input = box.Value!;
        box.Value = null;
        for (int p = 0; p < input.PartCount - 1; p++)
            await worker.Stage(key, p, input.Part(p)).ConfigureAwait(false);
        return (new WorkItem(ClusterProtocol.Version, kind, models, key, input.PartCount, input.Part(input.PartCount - 1), input.Checksum(), PartBytes), input.Length);
    }

    /// <summary>How often a client asks the cluster whether the workers running its items are still members: a worker
    /// declared dead has its item queued again at once, without waiting for the item's timeout.</summary>
    public TimeSpan WatchInterval { get; init; } = TimeSpan.FromSeconds(2);

    // The item's answer, or an exception as soon as the cluster's membership no longer lists its worker.
    private async Task<T> Watched<T>(string name, Task<T> call, CancellationToken cancellationToken)
    {
        while (await Task.WhenAny(call, Task.Delay(WatchInterval, cancellationToken)).ConfigureAwait(false) != call)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Dictionary<SiloAddress, SiloStatus> hosts;
            try
            {
                hosts = await client.GetGrain<IManagementGrain>(0).GetHosts(true, cancellationToken).WaitAsync(WatchInterval * 5, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested)
            {
                // The membership did not answer in time (its grain was on a silo that just stopped, or the machine is
                // loaded): that says nothing of this worker, whose call runs on; asked again next time.
                continue;
            }
            if (!hosts.Keys.Any(s => s.ToParsableString() == name))
                throw new SiloUnavailableException($"worker {name} left the cluster");
        }
        return await call.ConfigureAwait(false);
    }

    // The workers active now that accept the job, each by its silo address.
    private async Task<List<(string Name, IWorkerGrain Grain)>> Workers(IReadOnlyList<ModelRef> models)
    {
        var hosts = await client.GetGrain<IManagementGrain>(0).GetHosts(onlyActive: true).ConfigureAwait(false);
        var workers = new List<(string, IWorkerGrain)>();
        foreach (var silo in hosts.Keys.OrderBy(s => s.ToParsableString(), StringComparer.Ordinal))
        {
            string name = silo.ToParsableString();
            var grain = client.GetGrain<IWorkerGrain>(name);
            string? refusal;
            try
            {
                refusal = await grain.Hello(ClusterProtocol.Version, models).ConfigureAwait(false);
            }
            catch (Exception)
            {
                continue; // left (or stopped answering) between the listing and the greeting
            }
            if (refusal is not null)
                throw new ClusterException(refusal);
            workers.Add((name, grain));
        }
        return workers.Count > 0 ? workers : throw new ClusterException("the cluster has no worker");
    }
}
