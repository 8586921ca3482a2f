using System.Collections.Concurrent;
using Squeeze.Formats;
using Squeeze.Models;

namespace Squeeze.Cluster;

/// <summary>The models one worker has loaded, by path: each is read (memory-mapped) once, its fingerprint computed
/// once, and kept until the worker stops; a stopping worker releases them after the items running on them end.</summary>
internal sealed class ModelStore : IDisposable
{
    private int running;

    /// <summary>Marks an item running on the store's models until the lease is disposed.</summary>
    public IDisposable Lease()
    {
        Interlocked.Increment(ref running);
        return new Release(this);
    }

    private sealed class Release(ModelStore store) : IDisposable
    {
        public void Dispose() => Interlocked.Decrement(ref store.running);
    }

    private readonly ConcurrentDictionary<(string Path, string? Tokenizer), Lazy<(Model Model, string Fingerprint)>> models = new();

    /// <summary>The model <paramref name="reference"/> names, or why this worker cannot take work on it (one line).</summary>
    public (Model? Model, string? Refusal) Get(ModelRef reference, string worker)
    {
        (Model Model, string Fingerprint) loaded;
        try
        {
            loaded = models.GetOrAdd((reference.Path, reference.Tokenizer), key => new Lazy<(Model, string)>(() =>
            {
                var model = ModelLoader.Load(key.Path, key.Tokenizer);
                return (model, Convert.ToHexStringLower(ModelFingerprint.Of(model)));
            })).Value;
        }
        catch (Exception e) when (e is Tensors.ModelFormatException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            models.TryRemove((reference.Path, reference.Tokenizer), out _);
            return (null, $"worker {worker} cannot read the model: {e.Message}");
        }
        return loaded.Fingerprint == reference.Fingerprint
            ? (loaded.Model, null)
            : (null, $"worker {worker} holds another model at {reference.Path}: fingerprint {loaded.Fingerprint}, the job's is {reference.Fingerprint}");
    }

    public void Dispose()
    {
        SpinWait.SpinUntil(() => Volatile.Read(ref running) == 0);
        foreach (var entry in models.Values.Where(l => l.IsValueCreated))
            entry.Value.Model.Dispose();
        models.Clear();
    }
}
