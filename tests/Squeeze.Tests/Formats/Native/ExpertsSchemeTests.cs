using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Tests.Weights;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class ExpertsSchemeTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-experts-{Guid.NewGuid():N}");

    public ExpertsSchemeTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    /// <summary>"x": a stack [3, 4, 32] of experts in three representations: 4-bit asymmetric uniform codes in groups of
    /// 16, plain F32, and 2-bit symmetric codes in groups of 32.</summary>
    private (string Path, Dictionary<string, long[]> Shapes, ExpertStackWeight X) Sample()
    {
        var values = WeightTestData.Gaussian(12, 32, 5);
        var x = new ExpertStackWeight("x",
        [
            UniformWeight.Encode("x", values.AsSpan(0, 128), 4, 32, new UniformScheme(4, 16, symmetric: false)),
            WeightTestData.F32("x", values[128..256], 4, 32),
            UniformWeight.Encode("x", values.AsSpan(256, 128), 4, 32, new UniformScheme(2, 32, symmetric: true)),
        ]);
        var (path, shapes) = NativeMutations.WriteWeights(root, ("x", 12, 32, x));
        shapes["x"] = [3, 4, 32];
        return (path, shapes, x);
    }

    private void AssertRejected(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>> edit, string expected,
        long[]? shape = null)
    {
        var (path, shapes, _) = Sample();
        if (shape is not null)
            shapes["x"] = shape;
        NativeMutations.AssertEditRefused(path, shapes, edit, expected);
    }

    [Fact]
    public void A_stack_of_experts_round_trips_with_the_same_rows_and_stored_bytes()
    {
        var (path, shapes, x) = Sample();
        using var file = SafetensorsFile.Open(path);
        Assert.Equal("3", file.Metadata[NativeFormat.VersionKey]);
        Assert.StartsWith("{\"scheme\":\"experts\",\"experts\":[{\"scheme\":\"uniform\",\"bits\":4,\"group\":16,", file.Metadata["squeeze.scheme.x"]);
        Assert.Contains("x.1", file.Tensors.Select(t => t.Name));
        var actual = Assert.IsType<ExpertStackWeight>(NativeWeights.Parse(file, shapes).Weights.Single());
        Assert.Equal(3, actual.Experts.Count);
        Assert.Equal(x.Scheme, actual.Scheme);
        Assert.Equal(x.StoredBytes, actual.StoredBytes);
        Assert.Equal(x.Decode(), actual.Decode());
        Assert.Equal(12, NativeMutations.ParseAndDecode(file, shapes).Rows);
    }

    /// <summary>The product of the whole stack is every expert's product in its rows, as the reference computes it.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(17)]
    public void The_stack_s_product_is_each_expert_s_in_its_rows(int tokens)
    {
        var (_, _, x) = Sample();
        var input = WeightTestData.Gaussian(tokens, 32, 7, scale: 1f);
        WeightTestData.AssertProductMatchesTheReference(x, input, tokens, $"experts, {tokens} tokens", quantizedActivations: true);
    }

    [Fact]
    public void Bad_stacks_are_refused()
    {
        AssertRejected((_, _) => { }, "tensor 'x' of shape [12, 32] is stored as experts 3", shape: [12, 32]);
        AssertRejected((_, _) => { }, "a stack of 2 experts is stored in the \"experts\" scheme", shape: [2, 6, 32]);
        AssertRejected((_, _) => { }, "tensor 'x': 3 experts do not split its 10 rows evenly", shape: [2, 5, 32]);
        AssertRejected((_, _) => { }, "tensor 'x.0.codes': has shape [4, ", shape: [3, 5, 32]);
        AssertRejected((m, _) => m["squeeze.scheme.x"] = "{\"scheme\":\"experts\",\"experts\":[]}", "tensor 'x'");
        AssertRejected((_, t) => t.Remove("x.1"), "tensor 'x.1': companion tensor is missing");
        AssertRejected((m, _) => m[NativeFormat.VersionKey] = "2", "scheme \"experts\" is defined by format version 3, but the file says version 2");
    }

    private static readonly string[] Swaps =
    [
        "experts", "uniform", "plain", "\\\"experts\\\"", "true", "false", "U8", "F16", "F32", "x.0", "x.1", "x.2", "0", "1", "2", "3", "4", "16", "32", "-1", "[]", "{}",
    ];

    /// <summary>Mutations of the sample either parse and decode every row, or throw ModelFormatException; never another exception.</summary>
    [Fact]
    public void Mutated_stacks_load_and_decode_or_throw_ModelFormatException()
    {
        var (path, shapes, _) = Sample();
        var (loaded, rejected) = NativeMutations.Run(File.ReadAllBytes(path), Swaps, 2000, 31, file => NativeMutations.ParseAndDecode(file, shapes), structural: true);
        Assert.True(loaded > 50 && rejected > 500, $"{loaded} loaded, {rejected} rejected");
    }
}
