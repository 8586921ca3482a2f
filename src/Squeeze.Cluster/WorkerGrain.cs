using System.Diagnostics;
using Squeeze.Models;

namespace Squeeze.Cluster;

/// <summary>A kind of work item: how a worker turns an item's payload into its result, with the models the item names
/// loaded and checked.</summary>
public interface IWorkKind
{
    /// <summary>The kind's name, what <see cref="WorkItem.Kind"/> says.</summary>
    string Name { get; }

    /// <summary>Runs one item on <paramref name="threads"/> threads; the result in parts of at most
    /// <paramref name="partBytes"/> bytes.</summary>
    Payload Run(IReadOnlyList<Model> models, Payload payload, int partBytes, int threads, CancellationToken cancellationToken);
}

/// <summary>What <c>squeeze worker</c> was started with.</summary>
/// <param name="Threads">Threads each work item runs on.</param>
public sealed record WorkerSettings(int Threads);

/// <summary>The worker grain: refuses a job of another protocol or another model, and runs items one at a time (the
/// grain is not reentrant) on the thread pool. It holds the parts staged for an item until the item runs, and a
/// result's parts until they are fetched; what a lost client left behind is let go as <see cref="IWorkerGrain.Stage"/>
/// says (or with the grain, when it is idle long enough for Orleans to deactivate it).</summary>
[WorkerPlacement]
internal sealed class WorkerGrain(ModelStore store, WorkerSettings settings, IEnumerable<IWorkKind> kinds) : Grain, IWorkerGrain
{
    /// <summary>How long another job's staged parts or unfetched result are kept untouched.</summary>
    public static readonly TimeSpan Abandoned = TimeSpan.FromMinutes(10);

    private readonly Dictionary<string, IWorkKind> kinds = kinds.ToDictionary(k => k.Name, StringComparer.Ordinal);

    // Parts by item key, with when they were last touched: an input's staged parts, a result's parts not yet fetched.
    private readonly Dictionary<string, (List<byte[]> Parts, long Touched)> staged = new(StringComparer.Ordinal), results = new(StringComparer.Ordinal);

    private string Name => this.GetPrimaryKeyString();

    public Task<string?> Hello(string protocol, IReadOnlyList<ModelRef> models) => Task.Run(() =>
    {
        using var lease = store.Lease();
        if (protocol != ClusterProtocol.Version)
            return $"worker {Name} speaks {ClusterProtocol.Version}, the job {protocol}";
        foreach (var m in models)
        {
            if (store.Get(m, Name).Refusal is { } refusal)
                return refusal;
        }
        return (string?)null;
    });

    public Task Stage(string key, int index, byte[] part)
    {
        if (index == 0)
        {
            LetGo(key);
            staged[key] = ([part], Environment.TickCount64);
        }
        else if (staged.TryGetValue(key, out var held) && held.Parts.Count == index)
        {
            held.Parts.Add(part);
            staged[key] = (held.Parts, Environment.TickCount64);
        }
        else
        {
            // Out of order: the item is left with parts missing, which its run reports.
            staged.Remove(key);
        }
        return Task.CompletedTask;
    }

    public Task<byte[]> Fetch(string key, int index)
    {
        if (!results.TryGetValue(key, out var held) || index < 1 || index > held.Parts.Count)
            throw new InvalidOperationException($"worker {Name} holds no part {index} of item {key}'s result");
        if (index == held.Parts.Count)
            results.Remove(key);
        else
            results[key] = (held.Parts, Environment.TickCount64);
        return Task.FromResult(held.Parts[index - 1]);
    }

    public async Task<WorkResult> Run(WorkItem item)
    {
        var parts = staged.Remove(item.Key, out var held) ? held.Parts : [];
        LetGo(item.Key);
        parts.Add(item.Last);
        var (answer, others) = await Task.Run(() => Execute(item, parts)).ConfigureAwait(true);
        if (others.Count > 0)
            results[item.Key] = (others, Environment.TickCount64);
        return answer;
    }

    private (WorkResult Answer, List<byte[]> Others) Execute(WorkItem item, List<byte[]> parts)
    {
        using var lease = store.Lease();
        long start = Stopwatch.GetTimestamp();
        (WorkResult, List<byte[]>) Failed(string? refusal, string? error) => (new([], 1, 0, refusal, error, Name, Stopwatch.GetElapsedTime(start).TotalSeconds), []);
        if (item.Protocol != ClusterProtocol.Version)
            return Failed($"worker {Name} speaks {ClusterProtocol.Version}, the job {item.Protocol}", null);
        if (parts.Count != item.Parts)
            return Failed(null, $"a {item.Kind} item reached worker {Name} with {parts.Count} of its {item.Parts} parts");
        var payload = Payload.Of(parts);
        parts.Clear();
        if (payload.Checksum() != item.Checksum)
            return Failed(null, $"a {item.Kind} item reached worker {Name} damaged (checksum mismatch)");
        if (!kinds.TryGetValue(item.Kind, out var kind))
            return Failed($"worker {Name} does not know work items of kind {item.Kind}", null);
        var models = new List<Model>(item.Models.Count);
        foreach (var m in item.Models)
        {
            var (model, refusal) = store.Get(m, Name);
            if (refusal is not null)
                return Failed(refusal, null);
            models.Add(model!);
        }
        try
        {
            var result = kind.Run(models, payload, item.PartBytes, settings.Threads, CancellationToken.None);
            var rest = Enumerable.Range(1, result.PartCount - 1).Select(result.Part).ToList();
            return (new WorkResult(result.Part(0), result.PartCount, result.Checksum(), null, null, Name, Stopwatch.GetElapsedTime(start).TotalSeconds), rest);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return Failed(null, $"worker {Name}: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
        }
    }

    // Lets go of the parts staged for the other items of `key`'s job, and of whatever is held untouched for Abandoned.
    // The results of the job's other items are kept: a client consuming results in item order fetches each when its
    // turn comes (ClusterJob.RunInOrderAsync).
    private void LetGo(string key)
    {
        string job = key[..(key.IndexOf('/', StringComparison.Ordinal) + 1)];
        long now = Environment.TickCount64;
        foreach (var held in new[] { staged, results })
        {
            foreach (var (k, (_, touched)) in held.ToList())
            {
                if (k != key && ((held == staged && k.StartsWith(job, StringComparison.Ordinal)) || now - touched > Abandoned.TotalMilliseconds))
                    held.Remove(k);
            }
        }
    }
}
