using Squeeze.Calibration;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Calibration;

public sealed class CalibratorTests
{
    internal static string CalibrationText(int characters) => File.ReadAllText(SharedData.Corpus("tinystories-calib.txt"))[..characters];

    [Fact]
    public void Accumulate_matches_a_direct_computation_and_is_thread_count_independent()
    {
        var random = new Random(42);
        int tokens = 37, width = 19;
        var x = new float[tokens * width];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(random.NextDouble() * 4 - 2);
        var one = new ActivationStatistics(3, LinearInput.FeedForward, width, collectGram: true);
        var many = new ActivationStatistics(3, LinearInput.FeedForward, width, collectGram: true);
        one.Accumulate(x.AsSpan(0, 20 * width), 20, threads: 1);
        one.Accumulate(x.AsSpan(20 * width), tokens - 20, threads: 1);
        many.Accumulate(x.AsSpan(0, 20 * width), 20, threads: 4);
        many.Accumulate(x.AsSpan(20 * width), tokens - 20, threads: 4);
        Assert.Equal(one.Gram, many.Gram);
        Assert.Equal(tokens, one.TokenCount);
        for (int i = 0; i < width; i++)
        {
            double ss = 0, sa = 0, max = 0;
            for (int t = 0; t < tokens; t++)
            {
                double v = x[t * width + i];
                ss += v * v;
                sa += Math.Abs(v);
                max = Math.Max(max, Math.Abs(v));
            }
            Assert.Equal(ss, one.SumSquares[i], 1e-9);
            Assert.Equal(sa, one.SumAbs[i], 1e-9);
            Assert.Equal((float)max, one.MaxAbs[i]);
            Assert.Equal((float)(ss / tokens), one.Importance()[i], 1e-5f);
            for (int j = 0; j < width; j++)
            {
                double g = 0;
                for (int t = 0; t < tokens; t++)
                    g += (double)x[t * width + i] * x[t * width + j];
                Assert.Equal(g, one.Gram![i * width + j], 1e-9);
                Assert.Equal(one.Gram[i * width + j], one.Gram[j * width + i]);
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 3)]
    [InlineData(3, 4)]
    [InlineData(5, 7)]
    [InlineData(8, 8)]
    [InlineData(19, 9)]
    [InlineData(33, 37)]
    [InlineData(160, 71)]
    [InlineData(67, 5)]
    [InlineData(131, 12)]
    public void Gram_elements_are_the_reference_dot_products_bit_for_bit_on_any_thread_count(int width, int tokens)
    {
        var random = new Random(width * 1000 + tokens);
        var x = new float[tokens * width];
        for (int i = 0; i < x.Length; i++)
            x[i] = (float)(random.NextDouble() * 4 - 2);
        var one = new ActivationStatistics(0, LinearInput.Attention, width, collectGram: true);
        var many = new ActivationStatistics(0, LinearInput.Attention, width, collectGram: true);
        one.Accumulate(x, tokens, threads: 1);
        many.Accumulate(x, tokens, threads: 3);
        Assert.Equal(one.Gram, many.Gram);
        var columns = new double[width][];
        for (int j = 0; j < width; j++)
            columns[j] = [.. Enumerable.Range(0, tokens).Select(t => (double)x[t * width + j])];
        for (int i = 0; i < width; i++)
        {
            for (int j = 0; j < width; j++)
                Assert.Equal(Squeeze.Kernels.LinearAlgebra.Dot(columns[i], columns[j]), one.Gram![i * width + j]);
        }
    }

    [Fact]
    public void Stories260K_statistics_cover_every_linear_input_and_are_deterministic()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string text = CalibrationText(6000);
        var options = new CalibrationOptions { ContextLength = 64, MaxTokens = 256, CollectGram = true, Threads = 1 };
        var a = Calibrator.Run(model, text, options);
        var b = Calibrator.Run(model, text, options with { Threads = 3 });

        var c = model.Config;
        Assert.Equal(256, a.TokenCount);
        Assert.Equal(4 * c.LayerCount + 1, a.Entries.Count);
        Assert.Equal(-1, a.Entries[0].Layer);
        Assert.Equal(LinearInput.Output, a.Entries[0].Kind);
        foreach (var e in a.Entries)
        {
            int expectedWidth = e.Kind switch
            {
                LinearInput.AttentionOutput => c.QDim,
                LinearInput.FeedForwardDown => c.HiddenDim,
                _ => c.Dim,
            };
            Assert.Equal(expectedWidth, e.Width);
            Assert.Equal(256, e.TokenCount);
            Assert.All(e.Importance(), v => Assert.True(float.IsFinite(v) && v >= 0));
            var other = b.Get(e.Layer, e.Kind);
            Assert.Equal(e.SumSquares, other.SumSquares);
            Assert.Equal(e.MaxAbs, other.MaxAbs);
            Assert.Equal(e.Gram, other.Gram);
            // The Gram diagonal is the sum of squares, summed in another order.
            for (int j = 0; j < e.Width; j++)
                Assert.Equal(e.SumSquares[j], e.Gram![j * e.Width + j], 1e-9 * Math.Max(1, e.SumSquares[j]));
        }
        Assert.Equal(a.TextHash, b.TextHash);
        Assert.Equal(ModelIdentity.Of(model).Hash, a.Model.Hash);
    }

    [Fact]
    public void Block_by_block_statistics_are_those_of_whole_forward_passes_bit_for_bit()
    {
        // The reference: every chunk through Transformer.Forward with an observer, as calibration ran before it went
        // block by block. Same chunks, same batches: the statistics must not differ in a single bit.
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string text = CalibrationText(6000);
        var options = new CalibrationOptions { ContextLength = 64, MaxTokens = 256, CollectGram = true, Threads = 2 };
        var blockwise = Calibrator.Run(model, text, options);
        var reference = new ActivationCollector(collectGram: true, threads: 2);
        int[] tokens = model.Tokenizer.Encode(text, addBos: true);
        using (var runtime = new Transformer(model, new RuntimeOptions { Threads = 2, ContextLength = 64, BatchSize = 64 }) { Observer = reference })
        {
            for (int c = 0; c < 4; c++)
            {
                var chunk = tokens.AsSpan(c * 64, 64).ToArray();
                chunk[0] = model.Vocabulary.BosId;
                runtime.Reset();
                runtime.Forward(chunk, logitCount: 64);
            }
        }
        Assert.Equal(reference.Entries.Count, blockwise.Entries.Count);
        foreach (var expected in reference.Entries)
        {
            var actual = blockwise.Get(expected.Layer, expected.Kind);
            Assert.Equal(expected.TokenCount, actual.TokenCount);
            Assert.Equal(expected.SumSquares, actual.SumSquares);
            Assert.Equal(expected.SumAbs, actual.SumAbs);
            Assert.Equal(expected.MaxAbs, actual.MaxAbs);
            Assert.Equal(expected.Gram, actual.Gram);
        }
    }

    [Theory]
    // 20 chunks of 16 tokens: one group of shards of 8, 8 and 4 chunks, summed in shard order (the order before groups).
    [InlineData(20)]
    // 48 chunks: six shards, a group of four and one of two; each group summed in shard order, then the groups.
    [InlineData(48)]
    public void Shards_are_each_calibrated_alone_and_summed_by_group_in_a_fixed_tree_bit_for_bit(int chunks)
    {
        // The reference: each shard's chunks through whole forward passes with an observer of its own, the shards then
        // added in shard order within each group of four, and the groups' sums in group order.
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string text = CalibrationText(6000);
        const int ctx = 16;
        int shards = CalibrationShards.Count(chunks), groups = CalibrationShards.Groups(chunks);
        Assert.Equal((chunks + 7) / 8, shards);
        Assert.Equal((shards + 3) / 4, groups);
        var options = new CalibrationOptions { ContextLength = ctx, MaxTokens = ctx * chunks, CollectGram = true, Threads = 2 };
        var grouped = Calibrator.Run(model, text, options);
        var oneThread = Calibrator.Run(model, text, options with { Threads = 1 });
        int[] tokens = model.Tokenizer.Encode(text, addBos: true);
        var shardStatistics = new List<IReadOnlyList<ActivationStatistics>>();
        var whole = new ActivationCollector(collectGram: true, threads: 2);
        using (var runtime = new Transformer(model, new RuntimeOptions { Threads = 2, ContextLength = ctx, BatchSize = ctx }))
        {
            void Forward(int c)
            {
                var chunk = tokens.AsSpan(c * ctx, ctx).ToArray();
                chunk[0] = model.Vocabulary.BosId;
                runtime.Reset();
                runtime.Forward(chunk, logitCount: ctx);
            }
            for (int shard = 0; shard < shards; shard++)
            {
                var collector = new ActivationCollector(collectGram: true, threads: 2);
                runtime.Observer = collector;
                var (first, count) = CalibrationShards.Chunks(shard, chunks);
                for (int c = first; c < first + count; c++)
                    Forward(c);
                shardStatistics.Add(collector.Entries);
            }
            runtime.Observer = whole;
            for (int c = 0; c < chunks; c++)
                Forward(c);
        }
        // Add keeps the first statistics it is given as the sum: each order adds copies.
        static IReadOnlyList<ActivationStatistics> Copy(IReadOnlyList<ActivationStatistics> entries) => [.. entries.Select(e =>
            new ActivationStatistics(e.Layer, e.Kind, e.TokenCount, (double[])e.SumSquares.Clone(), (double[])e.SumAbs.Clone(), (float[])e.MaxAbs.Clone(), (double[]?)e.Gram?.Clone()))];
        var tree = new SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics>();
        var inShardOrder = new SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics>();
        for (int group = 0; group < groups; group++)
        {
            var sum = new SortedDictionary<(int Layer, LinearInput Kind), ActivationStatistics>();
            for (int shard = 4 * group; shard < Math.Min(shards, 4 * group + 4); shard++)
            {
                CalibrationShards.Add(sum, Copy(shardStatistics[shard]));
                CalibrationShards.Add(inShardOrder, Copy(shardStatistics[shard]));
            }
            CalibrationShards.Add(tree, [.. sum.Values]);
        }
        Assert.Equal(tree.Count, grouped.Entries.Count);
        foreach (var expected in tree.Values)
        {
            foreach (var actual in new[] { grouped.Get(expected.Layer, expected.Kind), oneThread.Get(expected.Layer, expected.Kind) })
            {
                Assert.Equal(ctx * chunks, actual.TokenCount);
                Assert.Equal(expected.SumSquares, actual.SumSquares);
                Assert.Equal(expected.SumAbs, actual.SumAbs);
                Assert.Equal(expected.MaxAbs, actual.MaxAbs);
                Assert.Equal(expected.Gram, actual.Gram);
            }
        }
        // The order matters, so this test tells the orders apart: summed over all chunks at once, the last bits differ;
        // all shards added one after another (the order before groups) gives these very bits for one group, others for two.
        static bool SameSums(ActivationStatistics a, ActivationStatistics b) => a.SumSquares.SequenceEqual(b.SumSquares) && a.SumAbs.SequenceEqual(b.SumAbs) && a.Gram!.SequenceEqual(b.Gram!);
        Assert.Contains(whole.Entries, e => !SameSums(e, grouped.Get(e.Layer, e.Kind)));
        Assert.All(whole.Entries, e => Assert.Equal(e.MaxAbs, grouped.Get(e.Layer, e.Kind).MaxAbs));
        if (groups == 1)
            Assert.All(inShardOrder.Values, e => Assert.True(SameSums(e, grouped.Get(e.Layer, e.Kind))));
        else
            Assert.Contains(inShardOrder.Values, e => !SameSums(e, grouped.Get(e.Layer, e.Kind)));
    }

    [Fact]
    public void Adding_statistics_adds_every_sum_and_each_experts_and_refuses_another_input()
    {
        var random = new Random(7);
        float[] Rows(int tokens) => [.. Enumerable.Range(0, tokens * 5).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        var (a, b) = (Rows(6), Rows(4));
        var first = new ActivationStatistics(1, LinearInput.ExpertFeedForward, 5, collectGram: true);
        var second = new ActivationStatistics(1, LinearInput.ExpertFeedForward, 5, collectGram: true);
        first.AccumulateExpert(0, a, 6);
        second.AccumulateExpert(0, b.AsSpan(0, 10), 2);
        second.AccumulateExpert(2, b.AsSpan(10), 2);
        var secondExpert0 = second.Expert(0)!;
        var (sumSquares, gram) = (first.SumSquares.Zip(second.SumSquares, (x, y) => x + y).ToArray(), first.Gram!.Zip(second.Gram!, (x, y) => x + y).ToArray());
        var expert0 = first.Expert(0)!.SumSquares.Zip(secondExpert0.SumSquares, (x, y) => x + y).ToArray();
        var maxAbs = first.MaxAbs.Zip(second.MaxAbs, Math.Max).ToArray();
        first.Add(second);
        Assert.Equal(10, first.TokenCount);
        Assert.Equal(sumSquares, first.SumSquares);
        Assert.Equal(gram, first.Gram);
        Assert.Equal(maxAbs, first.MaxAbs);
        Assert.Equal(expert0, first.Expert(0)!.SumSquares);
        Assert.Equal(8, first.Expert(0)!.TokenCount);
        Assert.Null(first.Expert(1));
        Assert.Same(second.Expert(2), first.Expert(2));
        var other = Assert.Throws<ArgumentException>(() => first.Add(new ActivationStatistics(1, LinearInput.FeedForward, 5, collectGram: true)));
        Assert.Contains("FeedForward", other.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => first.Add(new ActivationStatistics(1, LinearInput.ExpertFeedForward, 5, collectGram: false)));
    }

    [Fact]
    public void Advancing_through_a_replaced_block_gives_the_next_block_the_replaced_models_input()
    {
        // Block 0 replaced (its query projection rounded to Q4_0): block 1's statistics must be those a whole forward
        // pass of the replaced model gives, and differ from the original's.
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string text = CalibrationText(3000);
        var options = new CalibrationOptions { ContextLength = 32, MaxTokens = 64, CollectGram = false, Threads = 1 };
        var query = model[TensorNames.Query(0)];
        var values = new float[query.ElementCount];
        Dequantize.Tensor(query, values);
        var q4 = new byte[GgmlTypes.RowBytes(GgmlType.Q4_0, query.Columns) * query.Rows];
        Quantize.Rows(GgmlType.Q4_0, values, (int)query.Columns, [], q4, 1);
        using var replaced = model.WithTensors(new Dictionary<string, (GgmlType, byte[])> { [TensorNames.Query(0)] = (GgmlType.Q4_0, q4) });
        using var runner = new LayerwiseCalibrator(model, text, options);
        var original = runner.Collect();
        runner.Advance(replaced);
        var next = runner.Collect();
        var expected = Calibrator.Run(replaced, text, options with { Layers = new HashSet<int> { 1 } });
        Assert.Equal(expected.Entries.Count, next.Count);
        foreach (var e in next)
            Assert.Equal(expected.Get(1, e.Kind).SumSquares, e.SumSquares);
        var unreplaced = Calibrator.Run(model, text, options with { Layers = new HashSet<int> { 1 } });
        Assert.NotEqual(unreplaced.Get(1, LinearInput.Attention).SumSquares, next.Single(e => e.Kind == LinearInput.Attention).SumSquares);
        Assert.All(original, e => Assert.Equal(0, e.Layer));
    }

    [Fact]
    public void Layer_selection_collects_only_the_chosen_layers_with_the_same_values()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string text = CalibrationText(3000);
        var all = Calibrator.Run(model, text, new CalibrationOptions { ContextLength = 32, MaxTokens = 64, CollectGram = true, Threads = 1 });
        var some = Calibrator.Run(model, text, new CalibrationOptions { ContextLength = 32, MaxTokens = 64, CollectGram = true, Threads = 1, Layers = new HashSet<int> { 2 } });
        Assert.Equal(4, some.Entries.Count);
        Assert.All(some.Entries, e => Assert.Equal(2, e.Layer));
        foreach (var e in some.Entries)
            Assert.Equal(all.Get(2, e.Kind).Gram, e.Gram);
    }

    [Fact]
    public void Bad_texts_are_refused_with_clear_errors()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        var empty = Assert.Throws<ArgumentException>(() => Calibrator.Run(model, "", new CalibrationOptions { ContextLength = 32 }));
        Assert.Contains("empty", empty.Message);
        var shortText = Assert.Throws<ArgumentException>(() => Calibrator.Run(model, "Once upon a time.", new CalibrationOptions { ContextLength = 32 }));
        Assert.Contains("fewer than one chunk of 32", shortText.Message);
        var surrogate = Assert.Throws<ArgumentException>(() => Calibrator.Run(model, "abc\ud800def", new CalibrationOptions { ContextLength = 32 }));
        Assert.Contains("not valid Unicode", surrogate.Message);
    }

    [Fact]
    public void Model_identity_distinguishes_architectures_but_not_storage()
    {
        using var small = Llama2cReader.Load(SharedData.Stories260K);
        using var again = ModelLoader.Load(SharedData.Stories260K);
        using var large = Llama2cReader.Load(SharedData.Stories15M);
        Assert.Equal(ModelIdentity.Of(small).Hash, ModelIdentity.Of(again).Hash);
        Assert.NotEqual(ModelIdentity.Of(small).Hash, ModelIdentity.Of(large).Hash);
        Assert.Contains("stories260K", ModelIdentity.Of(small).Description);
    }
}
