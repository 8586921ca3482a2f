using System.Runtime.InteropServices;
using System.Text.Json;
using Squeeze.Formats.Gguf;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Tensors;

/// <summary>Every tensor of every synthetic/synthetic-TYPE.gguf dequantizes to llama.cpp's own output bit for bit.</summary>
public class DequantizeGoldenTests(ITestOutputHelper output)
{
    public static TheoryData<string> Types()
    {
        var data = new TheoryData<string>();
        foreach (var t in new[] { "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL" })
            data.Add(t);
        return data;
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void Dequantized_tensors_match_llama_cpp_bit_for_bit(string typeName)
    {
        using var index = JsonDocument.Parse(File.ReadAllText(SharedData.Synthetic("synthetic-dequant-index.json")));
        byte[] expectedBytes = File.ReadAllBytes(SharedData.Synthetic($"synthetic-{typeName}.dequant.f32"));
        using var gguf = GgufFile.Open(SharedData.Synthetic($"synthetic-{typeName}.gguf"));

        int checkedTensors = 0;
        bool sawType = false;
        foreach (var entry in index.RootElement.GetProperty(typeName).EnumerateArray())
        {
            string name = entry.GetProperty("name").GetString()!;
            int count = entry.GetProperty("count").GetInt32();
            int offset = entry.GetProperty("offset").GetInt32();
            Assert.True(gguf.TryGetTensor(name, out var tensor), $"no tensor {name}");
            Assert.Equal(entry.GetProperty("type").GetString(), tensor.Type.ToString());
            Assert.Equal(count, tensor.ElementCount);
            sawType |= tensor.Type.ToString() == typeName;

            var expected = MemoryMarshal.Cast<byte, float>(expectedBytes.AsSpan(offset, count * 4));
            var actual = new float[count];
            Dequantize.Tensor(tensor, actual);
            AssertBitExact(name, expected, actual);
            checkedTensors++;
        }
        Assert.True(sawType, $"no {typeName} tensor was checked");
        Assert.Equal(gguf.Tensors.Count, checkedTensors);
    }

    private void AssertBitExact(string name, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        int mismatches = 0;
        double maxDiff = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]))
                continue;
            if (mismatches < 5)
                output.WriteLine($"{name}[{i}]: expected {expected[i]:R}, actual {actual[i]:R}");
            mismatches++;
            maxDiff = Math.Max(maxDiff, Math.Abs((double)expected[i] - actual[i]));
        }
        Assert.True(mismatches == 0, $"{name}: {mismatches} of {expected.Length} values differ, max |difference| {maxDiff:G9}");
    }
}
