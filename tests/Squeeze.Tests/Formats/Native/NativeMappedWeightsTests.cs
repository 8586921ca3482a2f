using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

/// <summary>A native model's weights stay in its mapped weights file: loading it allocates next to nothing for them,
/// and the runtime computes the same bits from the mapping as from copies of the same codes in managed arrays.</summary>
public sealed class NativeMappedWeightsTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-native-mapped-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
    }

    /// <summary>Every 2-D tensor of stories15M in 4-bit uniform codes, groups of 32, except <paramref name="codebook"/>
    /// (in 3-bit codebooks, one per group of 32).</summary>
    private static Dictionary<string, LinearWeight> Quantized(Model model, params string[] codebook)
    {
        var weights = new Dictionary<string, LinearWeight>(StringComparer.Ordinal);
        foreach (var tensor in model.Tensors.Where(t => t.Shape.Length == 2))
        {
            var scheme = new UniformScheme(4, 32, symmetric: false);
            if (!codebook.Contains(tensor.Name))
            {
                weights[tensor.Name] = UniformWeight.Encode(tensor, scheme);
                continue;
            }
            var values = new float[tensor.ElementCount];
            Squeeze.Tensors.Dequantize.Tensor(tensor, values);
            weights[tensor.Name] = CodebookQuantizer.Quantize(tensor.Name, values, (int)tensor.Rows, (int)tensor.Columns, default, bits: 3, group: 32);
        }
        return weights;
    }

    /// <summary>Bytes the calling thread allocates while loading <paramref name="directory"/> (after one load to warm up).</summary>
    private static long LoadAllocations(string directory, out long storedBytes)
    {
        using (ModelLoader.Load(directory))
        {
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var model = ModelLoader.Load(directory);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        storedBytes = model.Weights.Sum(w => w.StoredBytes);
        return allocated;
    }

    [Fact]
    public void Loading_allocates_far_less_than_the_stored_codes()
    {
        using var model = ModelLoader.Load(SharedData.Stories15M);
        string plain = Path.Combine(root, "plain"), quantized = Path.Combine(root, "quantized");
        NativeModelWriter.Write(model, plain);
        NativeModelWriter.Write(model, quantized, Quantized(model));

        long plainAllocated = LoadAllocations(plain, out long plainStored);
        long quantizedAllocated = LoadAllocations(quantized, out long stored);
        Assert.Equal(0, plainStored); // every tensor mapped as it is: the baseline (config, vocabulary, tensor views)
        Assert.True(stored > 9_000_000, $"{stored} bytes of codes, scales and mins");
        // Copies of the codes, scales and mins would allocate at least their stored bytes beyond the baseline; views of
        // the mapping allocate a few objects per weight (its JSON, a reader, the views: about 6 KB).
        long weightsAllocated = quantizedAllocated - plainAllocated;
        Assert.True(weightsAllocated < stored / 20, $"loading the quantized model allocated {weightsAllocated:N0} bytes more than the plain one; its weights store {stored:N0}");
    }

    [Fact]
    public void Logits_from_the_mapping_equal_those_from_managed_copies_bit_for_bit()
    {
        using var source = ModelLoader.Load(SharedData.Stories15M);
        string dir = Path.Combine(root, "mixed");
        NativeModelWriter.Write(source, dir, Quantized(source, "blk.2.ffn_up.weight", "blk.4.attn_output.weight"));
        using var mapped = ModelLoader.Load(dir);
        Assert.Contains(mapped.Weights, w => w is CodebookWeight);
        var copies = mapped.Weights.Select(w => w switch
        {
            UniformWeight u => (LinearWeight)new UniformWeight(u.Name, u.Rows, u.Columns, u.UniformScheme, u.Codes.ToArray(), u.Scales.ToArray(), u.Mins.ToArray()),
            CodebookWeight c => new CodebookWeight(c.Name, c.Rows, c.Columns, c.Bits, c.Group, c.PackedCodes.ToArray(), c.Table.ToArray()),
            _ => throw new InvalidOperationException($"{w} is neither uniform nor a codebook"),
        }).ToList();
        using var copied = mapped.WithWeights(copies);

        int[] prompt = [1, 365, 2462, 263, 931, 29892, 727, 471, 263, 2217, 7826, 4257, 365, 2354, 29889, 2296, 14155, 304, 1708];
        foreach (bool deterministic in (bool[])[false, true])
        {
            var options = new RuntimeOptions { Threads = 2, ContextLength = 64, Deterministic = deterministic };
            using var fromMapping = new Transformer(mapped, options);
            using var fromCopies = new Transformer(copied, options);
            // A prompt of 19 tokens (the decoded product), then single-token steps (outside the deterministic mode, the
            // fused uniform product and the codebooks' own).
            Assert.Equal(Bits(fromCopies.Forward(prompt, prompt.Length)), Bits(fromMapping.Forward(prompt, prompt.Length)));
            foreach (int token in (int[])[322, 1183, 4240])
                Assert.Equal(Bits(fromCopies.Forward([token])), Bits(fromMapping.Forward([token])));
        }
    }

    private static int[] Bits(ReadOnlySpan<float> logits) => System.Runtime.InteropServices.MemoryMarshal.Cast<float, int>(logits).ToArray();

    [Fact]
    public void A_weight_read_after_its_model_is_disposed_throws_instead_of_reading_freed_memory()
    {
        using var source = ModelLoader.Load(SharedData.Stories260K);
        string dir = Path.Combine(root, "disposed");
        var schemes = source.Tensors.Where(t => t.Shape.Length == 2 && t.Columns % 32 == 0)
            .ToDictionary(t => t.Name, _ => new UniformScheme(4, 32, symmetric: true));
        NativeModelWriter.Write(source, dir, schemes);
        var model = ModelLoader.Load(dir);
        var weight = model.Weights[0];
        var row = new float[weight.Columns];
        weight.DecodeRow(0, row);
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => weight.DecodeRow(0, row));
    }
}
