using System.IO.Hashing;
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

/// <summary>One independent piece of a job: its kind (what a worker runs it with), the models it reads, and its input as
/// bytes with their XxHash64, checked by the worker before it runs the item.</summary>
/// <param name="Protocol">The client's <see cref="ClusterProtocol.Version"/>.</param>
/// <param name="Kind">Which <see cref="IWorkKind"/> runs it.</param>
/// <param name="Models">The models it reads, in the order the kind expects them.</param>
/// <param name="Payload">The item's input, in the kind's encoding.</param>
/// <param name="Checksum">XxHash64 of <paramref name="Payload"/>.</param>
[GenerateSerializer, Immutable]
public sealed record WorkItem([property: Id(0)] string Protocol, [property: Id(1)] string Kind, [property: Id(2)] IReadOnlyList<ModelRef> Models,
    [property: Id(3)] byte[] Payload, [property: Id(4)] ulong Checksum);

/// <summary>What a worker sends back: the result's bytes and their XxHash64, or why it would not or could not run the
/// item (a refusal: another protocol or model; an error: the item's own failure, which another worker would repeat).</summary>
/// <param name="Payload">The result, in the kind's encoding (empty on refusal or error).</param>
/// <param name="Checksum">XxHash64 of <paramref name="Payload"/>.</param>
/// <param name="Refusal">One line when the worker refused the item, else null.</param>
/// <param name="Error">One line when the item failed, else null.</param>
/// <param name="Worker">The worker's silo address.</param>
/// <param name="Seconds">Time the worker spent on the item (loading a model the first time included).</param>
[GenerateSerializer, Immutable]
public sealed record WorkResult([property: Id(0)] byte[] Payload, [property: Id(1)] ulong Checksum, [property: Id(2)] string? Refusal,
    [property: Id(3)] string? Error, [property: Id(4)] string Worker, [property: Id(5)] double Seconds);

/// <summary>The version both ends of a job must share, and the checksum of what travels.</summary>
public static class ClusterProtocol
{
    /// <summary>The wire format's version and the Squeeze library's: a worker built from other code could give other
    /// bytes, so it is refused.</summary>
    public static string Version { get; } = $"squeeze-cluster/3 squeeze/{typeof(Models.Model).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion}";

    /// <summary>XxHash64 of <paramref name="bytes"/>.</summary>
    public static ulong Checksum(ReadOnlySpan<byte> bytes) => XxHash64.HashToUInt64(bytes);
}
