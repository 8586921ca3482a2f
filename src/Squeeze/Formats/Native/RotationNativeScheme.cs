using System.Text.Json.Nodes;
using Squeeze.Kernels;
using Squeeze.Weights;

namespace Squeeze.Formats.Native;

/// <summary>The "rotation" scheme (format version 2, docs/FORMAT.md "rotation"): <c>W = W′ · F</c> with F the seeded
/// randomized Hadamard transform (<see cref="RandomizedHadamard"/>) and W′ a nested weight under <c>PREFIX.base</c>;
/// no companion tensor of its own.</summary>
internal sealed class RotationNativeScheme : INativeScheme
{
    public static RotationNativeScheme Instance { get; } = new();

    public string Name => "rotation";

    public int Version => 2;

    public bool CanStore(LinearWeight weight) => weight is RotatedWeight;

    public JsonObject Store(LinearWeight weight, string prefix, NativeTensorSink sink)
    {
        var rotated = (RotatedWeight)weight;
        if (rotated.Rotation.Seed > long.MaxValue)
            throw new ArgumentException($"{weight}: the native format stores seeds below 2^63, not {rotated.Rotation.Seed}", nameof(weight));
        return new JsonObject
        {
            ["transform"] = "hadamard",
            ["seed"] = (long)rotated.Rotation.Seed,
            ["permute"] = rotated.Rotation.Permute,
            ["base"] = sink.Store(prefix + ".base", rotated.Inner),
        };
    }

    public LinearWeight Read(NativeSchemeReader json, string name, string prefix, int rows, int columns, NativeTensorSource source)
    {
        json.String("transform", "hadamard");
        long seed = json.Long("seed", 0, long.MaxValue);
        bool permute = json.Bool("permute");
        var inner = source.Read(json.Object("base"), name, prefix + ".base", rows, columns);
        return new RotatedWeight(new RandomizedHadamard(columns, (ulong)seed, permute), inner);
    }
}
