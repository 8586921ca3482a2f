using System.Diagnostics;
using Squeeze.Models;

namespace Squeeze.Cluster;

/// <summary>A kind of work item: how a worker turns an item's payload into its result's bytes, with the models the
/// item names loaded and checked.</summary>
public interface IWorkKind
{
    /// <summary>The kind's name, what <see cref="WorkItem.Kind"/> says.</summary>
    string Name { get; }

    /// <summary>Runs one item on <paramref name="threads"/> threads.</summary>
    byte[] Run(IReadOnlyList<Model> models, byte[] payload, int threads, CancellationToken cancellationToken);
}

/// <summary>What <c>squeeze worker</c> was started with.</summary>
/// <param name="Threads">Threads each work item runs on.</param>
public sealed record WorkerSettings(int Threads);

/// <summary>The worker grain: refuses a job of another protocol or another model, and runs items one at a time (the
/// grain is not reentrant) on the thread pool.</summary>
[WorkerPlacement]
internal sealed class WorkerGrain(ModelStore store, WorkerSettings settings, IEnumerable<IWorkKind> kinds) : Grain, IWorkerGrain
{
    private readonly Dictionary<string, IWorkKind> kinds = kinds.ToDictionary(k => k.Name, StringComparer.Ordinal);

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

    public Task<WorkResult> Run(WorkItem item) => Task.Run(() =>
    {
        using var lease = store.Lease();
        long start = Stopwatch.GetTimestamp();
        WorkResult Failed(string? refusal, string? error) => new([], 0, refusal, error, Name, Stopwatch.GetElapsedTime(start).TotalSeconds);
        if (item.Protocol != ClusterProtocol.Version)
            return Failed($"worker {Name} speaks {ClusterProtocol.Version}, the job {item.Protocol}", null);
        if (ClusterProtocol.Checksum(item.Payload) != item.Checksum)
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
            var payload = kind.Run(models, item.Payload, settings.Threads, CancellationToken.None);
            return new WorkResult(payload, ClusterProtocol.Checksum(payload), null, null, Name, Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return Failed(null, $"worker {Name}: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
        }
    });
}
