using System.Diagnostics;
using System.Runtime.InteropServices;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Tensors;
using Xunit.Abstractions;

namespace Squeeze.Tests.Formats.Gguf;

/// <summary>
/// Mutation testing: 20,000 corrupt variants of a small valid model (truncations, byte flips, 4- and 8-byte fields
/// overwritten with extreme values) each either load completely (model, vocabulary, every tensor dequantized) or
/// throw <see cref="ModelFormatException"/>; no other exception type, no hang.
/// </summary>
public class GgufMutationTests(ITestOutputHelper output)
{
    private static readonly ulong[] Extremes =
    [
        0, 1, 2, 3, 31, 32, 33, 255, 256, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1UL << 32, 1UL << 40, 1UL << 50, 1UL << 60,
        long.MaxValue, 1UL << 63, ulong.MaxValue, ulong.MaxValue - 7, BitConverter.DoubleToUInt64Bits(double.NaN),
        BitConverter.SingleToUInt32Bits(float.NaN), BitConverter.SingleToUInt32Bits(float.PositiveInfinity),
    ];

    [Fact]
    public void Every_mutated_file_loads_or_throws_ModelFormatException()
    {
        byte[] seed = TinyGguf.Model();
        long header;
        using (var f = GgufFile.Parse(seed))
            header = f.DataOffset;
        var rng = new Random(20250220);
        var failures = new List<string>();
        int loaded = 0, rejected = 0;
        const int Cases = 20_000;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < Cases; i++)
        {
            byte[] bytes = Mutate(seed, (int)header, rng, out string how);
            try
            {
                LoadEverything(bytes);
                loaded++;
            }
            catch (ModelFormatException e) when (e.Path == "fuzz.gguf")
            {
                rejected++;
            }
            catch (Exception e)
            {
                if (failures.Count < 10)
                    failures.Add($"case {i} ({how}): {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
                else
                    failures.Add("");
            }
        }
        output.WriteLine($"{Cases} cases in {clock.Elapsed.TotalSeconds:F1} s: {loaded} loaded, {rejected} rejected, {failures.Count} other exceptions");
        Assert.True(failures.Count == 0, $"{failures.Count} cases threw something else:\n" + string.Join("\n", failures.Take(10)));
        // Both outcomes occur, so the generator really reaches the parser's checks and past them.
        Assert.InRange(rejected, Cases / 10, Cases);
        Assert.InRange(loaded, Cases / 20, Cases);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"took {clock.Elapsed}");
    }

    private static void LoadEverything(byte[] bytes)
    {
        using var file = GgufFile.Parse(bytes, "fuzz.gguf");
        foreach (var t in file.Tensors)
        {
            var values = new float[t.ElementCount];
            Dequantize.Tensor(t, values);
        }
        using var model = GgufModelReader.FromFile(file);
        _ = model.Vocabulary.Count;
    }

    private static byte[] Mutate(byte[] seed, int header, Random rng, out string how)
    {
        // Most mutations land in the header, where the parser's decisions are; a few in the data.
        int Position(int width) => rng.Next(10) < 9 ? rng.Next(Math.Max(1, header - width)) : rng.Next(seed.Length - width);
        byte[] b = (byte[])seed.Clone();
        switch (rng.Next(4))
        {
            case 0:
                int length = rng.Next(10) < 8 ? rng.Next(header + 1) : rng.Next(seed.Length);
                how = $"truncate to {length}";
                return b[..length];
            case 1:
                int flips = 1 + rng.Next(8);
                how = $"{flips} byte flips";
                for (int k = 0; k < flips; k++)
                    b[Position(1)] ^= (byte)(1 + rng.Next(255));
                return b;
            case 2:
                int p8 = Position(8);
                ulong v8 = rng.Next(4) == 0 ? (ulong)rng.NextInt64() : Extremes[rng.Next(Extremes.Length)];
                how = $"u64 {v8} at {p8}";
                MemoryMarshal.Write(b.AsSpan(p8), in v8);
                return b;
            default:
                int p4 = Position(4);
                uint v4 = (uint)Extremes[rng.Next(Extremes.Length)];
                how = $"u32 {v4} at {p4}";
                MemoryMarshal.Write(b.AsSpan(p4), in v4);
                return b;
        }
    }
}
