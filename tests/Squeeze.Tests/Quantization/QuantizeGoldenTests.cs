using Squeeze.Formats.Gguf;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Quantization;

/// <summary>
/// Quantizes synthetic/synthetic-f32.gguf tensor by tensor and compares with llama-quantize's <c>--pure</c> output
/// (synthetic-TYPE.gguf, no imatrix): legacy types byte for byte; k-quants and IQ4_NL by squared error against the
/// f32 original (plain Σ (x - x̂)², no weighting), which must not exceed llama.cpp's on any tensor.
/// </summary>
public class QuantizeGoldenTests(ITestOutputHelper output)
{
    // Relative slack for float noise only.
    private const double Slack = 1e-6;

    public static TheoryData<string> LegacyTypes() => new() { "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1" };

    public static TheoryData<string> SearchedTypes() => new() { "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL" };

    [Theory]
    [MemberData(nameof(LegacyTypes))]
    public void Legacy_types_are_byte_identical_to_llama_cpp(string typeName)
    {
        using var source = GgufFile.Open(SharedData.Synthetic("synthetic-f32.gguf"));
        using var golden = GgufFile.Open(SharedData.Synthetic($"synthetic-{typeName}.gguf"));
        Assert.True(GgmlTypes.TryParse(typeName, out var type));
        int quantized = 0;
        foreach (var g in golden.Tensors)
        {
            Assert.True(source.TryGetTensor(g.Name, out var f32), $"no source tensor {g.Name}");
            output.WriteLine($"{g.Name,-28} [{string.Join(", ", g.Shape)}] {g.Type}");
            if (g.Type == GgmlType.F32)
            {
                Assert.Single(g.Shape); // llama-quantize keeps only 1-D tensors (norms) in f32
                continue;
            }
            Assert.Equal(type, g.Type);
            byte[] mine = QuantizeTensor(f32, type);
            ReadOnlySpan<byte> theirs = Bytes(g);
            Assert.Equal(theirs.Length, mine.Length);
            int first = theirs.SequenceEqual(mine) ? -1 : FirstDifference(theirs, mine);
            if (first >= 0)
            {
                int block = GgmlTypes.BlockBytes(type);
                output.WriteLine($"  first difference at byte {first} (block {first / block}): llama.cpp {Convert.ToHexString(theirs.Slice(first / block * block, block))}");
                output.WriteLine($"                                         squeeze   {Convert.ToHexString(mine.AsSpan(first / block * block, block))}");
            }
            Assert.True(first < 0, $"{g.Name}: {typeName} bytes differ from llama.cpp at byte {first}");
            quantized++;
        }
        Assert.True(quantized >= 7, $"only {quantized} {typeName} tensors compared");
    }

    [Theory]
    [MemberData(nameof(SearchedTypes))]
    public void Searched_types_have_no_more_error_than_llama_cpp_on_any_tensor(string typeName)
    {
        using var source = GgufFile.Open(SharedData.Synthetic("synthetic-f32.gguf"));
        using var golden = GgufFile.Open(SharedData.Synthetic($"synthetic-{typeName}.gguf"));
        Assert.True(GgmlTypes.TryParse(typeName, out var type));
        output.WriteLine($"{typeName}: squared error Σ (x - x̂)² per tensor (no weighting)");
        output.WriteLine($"{"tensor",-28} {"llama.cpp",14} {"squeeze",14} {"ratio",8}");
        int compared = 0;
        double totalTheirs = 0, totalMine = 0;
        var failures = new List<string>();
        foreach (var g in golden.Tensors)
        {
            Assert.True(source.TryGetTensor(g.Name, out var f32), $"no source tensor {g.Name}");
            if (g.Type == GgmlType.F32)
            {
                Assert.Single(g.Shape);
                continue;
            }
            Assert.Equal(type, g.Type);
            float[] x = new float[f32.ElementCount];
            Dequantize.Tensor(f32, x);
            float[] theirs = new float[g.ElementCount];
            Dequantize.Tensor(g, theirs);
            byte[] mine = QuantizeTensor(f32, type);
            float[] back = new float[x.Length];
            int columns = checked((int)f32.Columns);
            int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
            for (int r = 0; r < f32.Rows; r++)
                Dequantize.Row(type, mine.AsSpan(r * rowBytes, rowBytes), back.AsSpan(r * columns, columns));
            double eTheirs = Quantize.WeightedSquaredError(x, theirs, default);
            double eMine = Quantize.WeightedSquaredError(x, back, default);
            totalTheirs += eTheirs;
            totalMine += eMine;
            output.WriteLine($"{g.Name,-28} {eTheirs,14:G8} {eMine,14:G8} {eMine / eTheirs,8:F4}");
            if (eMine > eTheirs * (1 + Slack))
                failures.Add($"{g.Name}: {eMine:G9} > {eTheirs:G9}");
            compared++;
        }
        output.WriteLine($"{"total",-28} {totalTheirs,14:G8} {totalMine,14:G8} {totalMine / totalTheirs,8:F4}");
        Assert.True(compared >= 7, $"only {compared} {typeName} tensors compared");
        Assert.True(failures.Count == 0, string.Join("; ", failures));
    }

    [Theory]
    [MemberData(nameof(SearchedTypes))]
    public void Llama_cpp_algorithm_alone_reproduces_llama_cpp_output(string typeName)
    {
        // The starting point of the k-quant / IQ4_NL search is llama.cpp's own algorithm: without the refinement it
        // gives llama.cpp's bytes, so the refined result (kept only where it lowers a block's error) can only be better.
        using var source = GgufFile.Open(SharedData.Synthetic("synthetic-f32.gguf"));
        using var golden = GgufFile.Open(SharedData.Synthetic($"synthetic-{typeName}.gguf"));
        Assert.True(GgmlTypes.TryParse(typeName, out var type));
        int compared = 0;
        long blocks = 0, differing = 0;
        foreach (var g in golden.Tensors)
        {
            if (g.Type == GgmlType.F32)
                continue;
            Assert.True(source.TryGetTensor(g.Name, out var f32));
            float[] x = new float[f32.ElementCount];
            Dequantize.Tensor(f32, x);
            int columns = checked((int)f32.Columns);
            int rowBytes = checked((int)GgmlTypes.RowBytes(type, columns));
            byte[] mine = new byte[rowBytes * f32.Rows];
            for (int r = 0; r < f32.Rows; r++)
                Quantize.Row(type, x.AsSpan(r * columns, columns), default, mine.AsSpan(r * rowBytes, rowBytes), ScaleSearch.LlamaCpp);
            ReadOnlySpan<byte> theirs = Bytes(g);
            int blockBytes = GgmlTypes.BlockBytes(type);
            for (int b = 0; b < mine.Length / blockBytes; b++)
            {
                blocks++;
                if (!theirs.Slice(b * blockBytes, blockBytes).SequenceEqual(mine.AsSpan(b * blockBytes, blockBytes)))
                {
                    if (differing++ < 3)
                    {
                        output.WriteLine($"{g.Name} block {b}: llama.cpp {Convert.ToHexString(theirs.Slice(b * blockBytes, blockBytes))}");
                        output.WriteLine($"{g.Name} block {b}: squeeze   {Convert.ToHexString(mine.AsSpan(b * blockBytes, blockBytes))}");
                    }
                }
            }
            compared++;
        }
        output.WriteLine($"{typeName}: {differing} of {blocks} blocks differ from llama.cpp");
        Assert.True(compared >= 7);
        Assert.Equal(0, differing);
    }

    [Fact]
    public void Stories15M_Q8_0_is_byte_identical_to_llama_cpp()
    {
        // Real weights, every tensor of the 15M-parameter model: Q8_0 (--pure) bytes equal llama-quantize's.
        using var source = GgufFile.Open(SharedData.Golden("stories15M-f32.gguf"));
        using var golden = GgufFile.Open(SharedData.Golden("stories15M-Q8_0.gguf"));
        int compared = 0;
        foreach (var g in golden.Tensors)
        {
            Assert.True(source.TryGetTensor(g.Name, out var f32));
            if (g.Type == GgmlType.F32)
                continue;
            Assert.Equal(GgmlType.Q8_0, g.Type);
            var mine = new byte[g.ByteLength];
            Quantize.Tensor(f32, GgmlType.Q8_0, default, mine);
            Assert.True(Bytes(g).SequenceEqual(mine), $"{g.Name}: bytes differ from llama.cpp at {FirstDifference(Bytes(g), mine)}");
            compared++;
        }
        Assert.Equal(43, compared); // token_embd + 6 layers x 7 matrices
    }

    internal static byte[] QuantizeTensor(Tensor f32, GgmlType type)
    {
        float[] x = new float[f32.ElementCount];
        Dequantize.Tensor(f32, x);
        int columns = checked((int)f32.Columns);
        byte[] y = new byte[GgmlTypes.RowBytes(type, columns) * f32.Rows];
        Quantize.Rows(type, x, columns, default, y);
        return y;
    }

    internal static unsafe ReadOnlySpan<byte> Bytes(Tensor t) => new(t.Data, checked((int)t.ByteLength));

    private static int FirstDifference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        for (int i = 0; i < Math.Min(a.Length, b.Length); i++)
        {
            if (a[i] != b[i])
                return i;
        }
        return Math.Min(a.Length, b.Length);
    }
}
