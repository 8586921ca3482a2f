using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Tests.Weights;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

public sealed class SplitSchemeTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-split-{Guid.NewGuid():N}");

    public SplitSchemeTests() => Directory.CreateDirectory(root);

    public void Dispose() => Directory.Delete(root, recursive: true);

    /// <summary>"e": split [11, 32], 4 hot rows as 6-bit symmetric uniform codes, 7 cold as 2-bit asymmetric (11 rows:
    /// 5 padding bits in the mask's second byte); "s": split [8, 16] whose hot rows are plain F32 and whose cold rows
    /// are a nested split.</summary>
    private (string Path, Dictionary<string, long[]> Shapes, RowSplitWeight E, RowSplitWeight S) Sample()
    {
        var (e, _) = RowSplitWeightTests.Random(11, 32, 4, 6, 2, 16, seed: 3);
        var values = WeightTestData.Gaussian(8, 16, 4);
        var inner = new RowSplitWeight("s", [false, true, true, false, false],
            WeightTestData.F32("s", values[..32], 2, 16), UniformWeight.Encode("s", values.AsSpan(32, 48), 3, 16, new UniformScheme(3, 8, symmetric: false)));
        var s = new RowSplitWeight("s", [true, false, false, true, true, false, false, false],
            WeightTestData.F32("s", values[80..], 3, 16), inner);
        var (path, shapes) = NativeMutations.WriteWeights(root, ("e", 11, 32, e), ("s", 8, 16, s));
        return (path, shapes, e, s);
    }

    private void AssertRejected(Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>> edit, string expected)
    {
        var (path, shapes, _, _) = Sample();
        NativeMutations.AssertEditRefused(path, shapes, edit, expected);
    }

    [Fact]
    public void A_split_round_trips_with_the_same_rows_and_stored_bytes()
    {
        var (path, shapes, e, s) = Sample();
        using var file = SafetensorsFile.Open(path);
        Assert.Equal("2", file.Metadata[NativeFormat.VersionKey]);
        Assert.Equal(
            "{\"scheme\":\"split\",\"hot\":{\"scheme\":\"uniform\",\"bits\":6,\"group\":16,\"symmetric\":true,\"scale\":\"f16\"},"
            + "\"cold\":{\"scheme\":\"uniform\",\"bits\":2,\"group\":16,\"symmetric\":false,\"scale\":\"f16\"}}",
            file.Metadata["squeeze.scheme.e"]);
        var mask = file.Tensors.Single(t => t.Name == "e.mask");
        Assert.Equal(SafetensorsDType.U8, mask.DType);
        Assert.Equal([2L], mask.Shape);
        var bits = file.GetBytes(mask).ToArray();
        for (int r = 0; r < 11; r++)
            Assert.Equal(e.Hot[r], (bits[r / 8] >> (r % 8) & 1) != 0);
        var weights = NativeWeights.Parse(file, shapes);
        foreach (var (name, expected) in ((string, RowSplitWeight)[])[("e", e), ("s", s)])
        {
            var actual = Assert.IsType<RowSplitWeight>(weights.Weights.Single(w => w.Name == name));
            Assert.Equal(expected.Hot.ToArray(), actual.Hot.ToArray());
            Assert.Equal(expected.Scheme, actual.Scheme);
            Assert.Equal(expected.StoredBytes, actual.StoredBytes);
            Assert.Equal(expected.Decode(), actual.Decode());
        }
        Assert.Equal(11 + 8, NativeMutations.ParseAndDecode(file, shapes).Rows);
        Assert.Equal(2 + 4 * 32 * 6 / 8 + 4 * 2 * 2 + 7 * 32 * 2 / 8 + 7 * 2 * 4, e.StoredBytes);
    }

    [Fact]
    public void Bad_split_schemes_and_companions_are_refused()
    {
        const string hot = "{\"scheme\":\"uniform\",\"bits\":6,\"group\":16,\"symmetric\":true,\"scale\":\"f16\"}";
        const string cold = "{\"scheme\":\"uniform\",\"bits\":2,\"group\":16,\"symmetric\":false,\"scale\":\"f16\"}";
        AssertRejected((_, t) => t.Remove("e.mask"), "tensor 'e.mask': companion tensor is missing");
        AssertRejected((_, t) => t["e.mask"] = (SafetensorsDType.U8, [3], [0x0F, 0x00, 0x00]), "tensor 'e.mask': has shape [3], expected [2]");
        AssertRejected((_, t) => t["e.mask"] = (SafetensorsDType.U8, [1, 2], [0x0F, 0x00]), "tensor 'e.mask': has shape [1, 2], expected [2]");
        AssertRejected((_, t) => t["e.mask"] = (SafetensorsDType.I8, [2], t["e.mask"].Data), "tensor 'e.mask': is I8, not U8");
        AssertRejected((_, t) => NativeMutations.Patch(t, "e.mask", d => d[1] |= 0x08), "tensor 'e.mask': has bits set beyond row 10");
        AssertRejected((_, t) => NativeMutations.Patch(t, "e.mask", d => { d[0] = 0xFF; d[1] = 0x07; }), "tensor 'e.mask': marks 11 of 11 rows hot; a split needs at least one hot and one cold row");
        AssertRejected((_, t) => NativeMutations.Patch(t, "e.mask", d => d.AsSpan().Clear()), "tensor 'e.mask': marks 0 of 11 rows hot");
        // One hot row more than the hot weight holds: its codes (and the cold weight's) have the wrong row count.
        AssertRejected((_, t) => NativeMutations.Patch(t, "e.mask", d =>
        {
            int cold = Enumerable.Range(0, 11).First(r => (d[r / 8] >> (r % 8) & 1) == 0);
            d[cold / 8] |= (byte)(1 << (cold % 8));
        }), "tensor 'e.hot.codes': has shape [4, 24], expected [5, 24]");
        AssertRejected((_, t) => t["e.cold.codes"] = (SafetensorsDType.U8, [6, 8], new byte[48]), "tensor 'e.cold.codes': has shape [6, 8], expected [7, 8]");
        AssertRejected((_, t) => t["s.hot"] = (SafetensorsDType.F32, [4, 16], new byte[256]), "tensor 's.hot': has shape [4, 16], expected [3, 16]");
        AssertRejected((_, t) => t.Remove("s.cold.mask"), "tensor 's.cold.mask': companion tensor is missing");
        AssertRejected((m, _) => m["squeeze.scheme.e"] = $"{{\"scheme\":\"split\",\"hot\":{hot}}}", "tensor 'e': \"cold\" is missing from scheme \"split\"");
        AssertRejected((m, _) => m["squeeze.scheme.e"] = $"{{\"scheme\":\"split\",\"hot\":{hot},\"cold\":{cold},\"rows\":4}}", "unknown key \"rows\"");
        AssertRejected((m, _) => m[NativeFormat.VersionKey] = "1", "scheme \"split\" is defined by format version 2, but the file says version 1");
    }

    private static readonly string[] Swaps =
    [
        "split", "uniform", "plain", "\\\"hot\\\"", "\\\"cold\\\"", "true", "false", "U8", "F16", "F32",
        "e.mask", "e.hot", "e.cold", "s.mask", "s.hot", "s.cold", "0", "1", "2", "3", "4", "7", "8", "11", "16", "-1", "[]", "{}",
    ];

    /// <summary>Mutations of the sample either parse and decode every row, or throw ModelFormatException; never another exception.</summary>
    [Fact]
    public void Mutated_split_files_load_and_decode_or_throw_ModelFormatException()
    {
        var (path, shapes, _, _) = Sample();
        var (loaded, rejected) = NativeMutations.Run(File.ReadAllBytes(path), Swaps, 2000, 29, file => NativeMutations.ParseAndDecode(file, shapes), structural: true);
        Assert.True(loaded > 50 && rejected > 500, $"{loaded} loaded, {rejected} rejected");
    }
}
