using Squeeze.Calibration;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Pruning;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Pruning;

public class StructuredPruningTests
{
    private const string Text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. " +
        "One day, she saw a big red ball under a tree. She ran to get it, but a dog took it first.";

    [Theory]
    [InlineData(PruningMethod.Wanda)]
    [InlineData(PruningMethod.SparseGpt)]
    public void Heads_and_units_go_from_every_matrix_they_touch_and_run_as_the_zeroed_matrices_do(PruningMethod method)
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var stats = Calibrator.Run(model, Text, new CalibrationOptions { ContextLength = 64, CollectGram = true, Threads = 1 });
        var config = model.Config; // 8 heads of 8 sharing 4 key/value heads; 172 feed-forward units
        var heads = StructuredPruning.Heads(model, 1, 0.5, method, stats).ToDictionary(p => p.Name, p => p.Result);
        var output = heads[TensorNames.AttentionOutput(1)];
        var query = heads[TensorNames.Query(1)];
        var gone = Enumerable.Range(0, config.HeadCount).Where(h => !output.Mask[h * config.HeadDim]).ToArray();
        Assert.Equal(4, gone.Length);
        foreach (int h in gone)
        {
            for (int r = 0; r < config.Dim; r++)
                Assert.All(Enumerable.Range(h * config.HeadDim, config.HeadDim), c => Assert.Equal(0f, output.Weights[r * config.QDim + c]));
            Assert.All(query.Weights.AsSpan(h * config.HeadDim * config.Dim, config.HeadDim * config.Dim).ToArray(), v => Assert.Equal(0f, v));
        }
        int group = config.HeadCount / config.KvHeadCount;
        var key = heads[TensorNames.Key(1)];
        for (int g = 0; g < config.KvHeadCount; g++)
        {
            bool allGone = Enumerable.Range(g * group, group).All(gone.Contains);
            Assert.Equal(!allGone, key.Mask[g * config.HeadDim * config.Dim]);
        }

        var units = StructuredPruning.FeedForwardUnits(model, 2, 0.25, method, stats).ToDictionary(p => p.Name, p => p.Result);
        var down = units[TensorNames.Down(2)];
        var up = units[TensorNames.Up(2)];
        int removed = 0;
        for (int u = 0; u < config.HiddenDim; u++)
        {
            bool kept = down.Mask[u];
            removed += kept ? 0 : 1;
            Assert.Equal(kept, up.Mask[u * config.Dim]);
            Assert.Equal(kept, units[TensorNames.Gate(2)].Mask[u * config.Dim]);
        }
        Assert.Equal(43, removed);

        var all = heads.Concat(units).ToArray();
        using var zeroed = model.WithTensors(all.ToDictionary(p => p.Key, p => (GgmlType.F32, ToBytes(p.Value.Weights)), StringComparer.Ordinal));
        var structured = all.Select(p => PrunedWeights.Structured(p.Key, p.Value, F32)).ToArray();
        Assert.All(structured, w => Assert.IsType<StructuredSparseWeight>(w));
        Assert.True(structured.Sum(w => w.StoredBytes) < all.Sum(p => p.Value.Weights.Length * sizeof(float)) * 0.8);
        using var sparse = model.WithWeights(structured);
        int[] tokens = [1, 403, 407, 262, 300, 289, 47, 122, 301, 44, 33, 55];
        using var a = new Transformer(zeroed, new RuntimeOptions { Threads = 1 });
        using var b = new Transformer(sparse, new RuntimeOptions { Threads = 1 });
        var expected = a.Forward(tokens, tokens.Length).ToArray();
        var actual = b.Forward(tokens, tokens.Length).ToArray();
        for (int i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], actual[i], 1e-4f);
    }

    private static byte[] ToBytes(float[] values) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    private static unsafe LinearWeight F32(string name, float[] values, int rows, int columns)
    {
        var buffer = NativeBuffer.Allocate(values.LongLength * sizeof(float));
        values.AsSpan().CopyTo(new Span<float>(buffer.Pointer, values.Length));
        return new BlockWeight(new Tensor(name, GgmlType.F32, [rows, columns], buffer, 0));
    }
}
