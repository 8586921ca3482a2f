using System.Reflection;

namespace Squeeze.Cluster;

/// <summary>A model a job needs, as every worker must hold it: the path it is read from on each machine (a shared
/// filesystem or a copy at the same path), the tokenizer file a llama2.c checkpoint needs, and its
/// <see cref="Models.ModelFingerprint"/> in hex, which a worker checks on the model it loads before it takes work.</summary>
/// <param name="Path">The checkpoint's path.</param>
/// <param name="Tokenizer">The tokenizer file of a llama2.c checkpoint, or null.</param>
/// <param name="Fingerprint">The model's fingerprint, 32 hex digits.</param>
[GenerateSerializer, Immutable]
public sealed record ModelRef([property: Id(0)] string Path, [property: Id(1)] string? Tokenizer, [property: Id(2)] string Fingerprint);

/// <summary>One independent piece of a job as its <see cref="IWorkerGrain.Run"/> call carries it: its kind (what a
/// worker runs it with), the models it reads, and its input's last part; the parts before it were staged on the worker
/// (<see cref="IWorkerGrain.Stage"/>) under the same key. The worker checks the whole input against its XxHash64 before it
/// runs the item, and writes the result in parts of <paramref name="PartBytes"/>.</summary>
/// <param name="Protocol">The client's <see cref="ClusterProtocol.Version"/>.</param>
/// <param name="Kind">Which <see cref="IWorkKind"/> runs it.</param>
/// <param name="Models">The models it reads, in the order the kind expects them.</param>
/// <param name="Key">The item's key: its job's run and its index, "RUN/INDEX".</param>
/// <param name="Parts">How many parts the input has (the staged ones and <paramref name="Last"/>).</param>
/// <param name="Last">The input's last part.</param>
/// <param name="Checksum">XxHash64 of the whole input.</param>
/// <param name="PartBytes">The most bytes a part of the result may have.</param>
[GenerateSerializer, Immutable]
public sealed record WorkItem([property: Id(0)] string Protocol, [property: Id(1)] string Kind, [property: Id(2)] IReadOnlyList<ModelRef> Models,
    [property: Id(3)] string Key, [property: Id(4)] int Parts, [property: Id(5)] byte[] Last, [property: Id(6)] ulong Checksum, [property: Id(7)] int PartBytes);

/// <summary>What a worker sends back: the result's first part (the others are fetched with
/// <see cref="IWorkerGrain.Fetch"/>) and the whole result's XxHash64, or why it would not or could not run the item (a
/// refusal: another protocol or model; an error: the item's own failure, which another worker would repeat).</summary>
/// <param name="First">The result's first part, in the kind's encoding (empty on refusal or error).</param>
/// <param name="Parts">How many parts the result has.</param>
/// <param name="Checksum">XxHash64 of the whole result.</param>
/// <param name="Refusal">One line when the worker refused the item, else null.</param>
/// <param name="Error">One line when the item failed, else null.</param>
/// <param name="Worker">The worker's silo address.</param>
/// <param name="Seconds">Time the worker spent on the item (loading a model the first time included).</param>
[GenerateSerializer, Immutable]
public sealed record WorkResult([property: Id(0)] byte[] First, [property: Id(1)] int Parts, [property: Id(2)] ulong Checksum, [property: Id(3)] string? Refusal,
    [property: Id(4)] string? Error, [property: Id(5)] string Worker, [property: Id(6)] double Seconds);

/// <summary>The version both ends of a job must share.</summary>
public static class ClusterProtocol
{
    /// <summary>The wire format's version and the Squeeze library's: a worker built from other code could give other
    /// bytes, so it is refused.</summary>
    public static string Version { get; } = $"squeeze-cluster/5 squeeze/{typeof(Models.Model).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion}";

}
