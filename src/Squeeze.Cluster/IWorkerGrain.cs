namespace Squeeze.Cluster;

/// <summary>
/// The grain one <c>squeeze worker</c> hosts for the jobs of the cluster: its key is the worker's silo address, and
/// <see cref="WorkerPlacementAttribute"/> keeps it on that silo, so a client runs one item at a time on each worker.
/// An item travels in parts (<see cref="Payload"/>): the client stages all but the last, then runs the item with the
/// last, then fetches the result's parts after the first, each call well under Orleans' message size.
/// </summary>
public interface IWorkerGrain : IGrainWithStringKey
{
    /// <summary>Checks that this worker speaks <paramref name="protocol"/> and holds <paramref name="models"/> (loading
    /// them, comparing fingerprints): null when it does, else the one-line reason it refuses the job.</summary>
    Task<string?> Hello(string protocol, IReadOnlyList<ModelRef> models);

    /// <summary>Keeps part <paramref name="index"/> of item <paramref name="key"/>'s input until the item runs. Part 0
    /// starts the item over, and lets go of the parts staged for its job's other items (a client sends a worker one item
    /// at a time, so those were abandoned) and of anything held untouched for ten minutes; the results of the job's
    /// other items stay until fetched (a client consuming results in item order fetches each when its turn comes).</summary>
    Task Stage(string key, int index, byte[] part);

    /// <summary>Runs one work item, its input the parts staged under its key and its last part.</summary>
    Task<WorkResult> Run(WorkItem item);

    /// <summary>Part <paramref name="index"/> (1 or more) of item <paramref name="key"/>'s result; the worker lets go of
    /// the result once its last part is fetched (or after ten minutes untouched).</summary>
    Task<byte[]> Fetch(string key, int index);
}
