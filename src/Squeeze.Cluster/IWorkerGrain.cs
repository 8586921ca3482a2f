namespace Squeeze.Cluster;

/// <summary>
/// The grain one <c>squeeze worker</c> hosts for the jobs of the cluster: its key is the worker's silo address, and
/// <see cref="WorkerPlacementAttribute"/> keeps it on that silo, so a client runs one item at a time on each worker.
/// </summary>
public interface IWorkerGrain : IGrainWithStringKey
{
    /// <summary>Checks that this worker speaks <paramref name="protocol"/> and holds <paramref name="models"/> (loading
    /// them, comparing fingerprints): null when it does, else the one-line reason it refuses the job.</summary>
    Task<string?> Hello(string protocol, IReadOnlyList<ModelRef> models);

    /// <summary>Runs one work item.</summary>
    Task<WorkResult> Run(WorkItem item);
}
