using Orleans.Placement;
using Orleans.Runtime.Placement;

namespace Squeeze.Cluster;

/// <summary>Places a <see cref="IWorkerGrain"/> on the silo its key names; a key naming a silo that has left the
/// cluster cannot be placed, so a client learns that its worker is gone instead of its items moving to another.</summary>
[Serializable, GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class WorkerPlacement : PlacementStrategy
{
    /// <summary>The one instance.</summary>
    public static WorkerPlacement Instance { get; } = new();
}

/// <summary>Marks a grain class as placed by <see cref="WorkerPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class WorkerPlacementAttribute : PlacementAttribute
{
    /// <summary>The attribute.</summary>
    public WorkerPlacementAttribute()
        : base(WorkerPlacement.Instance)
    {
    }
}

/// <summary>What <see cref="WorkerPlacement"/> does.</summary>
internal sealed class WorkerPlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        string key = target.GrainIdentity.Key.ToString();
        var silo = context.GetCompatibleSilos(target).FirstOrDefault(s => s.ToParsableString() == key);
        return silo is not null ? Task.FromResult(silo) : throw new SiloUnavailableException($"worker {key} is not in the cluster");
    }
}
