using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Runtime;

namespace Squeeze.Tests.Runtime;

public unsafe class KvCacheTests
{
    private static ModelConfig Config(int heads, int kvHeads, int headDim, int layers = 2) => new()
    {
        Architecture = "llama", Dim = heads * headDim, HiddenDim = 8, LayerCount = layers, HeadCount = heads, KvHeadCount = kvHeads,
        HeadDim = headDim, VocabSize = 8, ContextLength = 128,
    };

    /// <summary>Keys and values with a few large channels (as real keys have) and some spikes.</summary>
    private static float[] Rows(Random rng, int positions, int kvDim)
    {
        var rows = new float[positions * kvDim];
        for (int i = 0; i < rows.Length; i++)
        {
            int channel = i % kvDim;
            rows[i] = (float)(rng.NextDouble() * 2 - 1) * (channel % 7 == 0 ? 6 : 1) + (channel % 5 == 0 ? 2 : 0);
            if (rng.Next(200) == 0)
                rows[i] *= 8;
        }
        return rows;
    }

    private static float[] AttendOne(KvCache cache, int layer, int head, float[] query, int position)
    {
        var scratch = new float[cache.ScratchLength];
        var output = new float[cache.HeadDim];
        fixed (float* q = query, s = scratch, o = output)
            cache.Attend(layer, head, q, position, 1 / MathF.Sqrt(cache.HeadDim), s, o);
        return output;
    }

    private static float[] ScalarAttention(float[] keys, float[] values, int kvDim, int kvOffset, int positions, int headDim, float[] query)
    {
        var scores = new float[positions];
        var output = new float[headDim];
        fixed (float* q = query, k = keys, v = values, s = scores, o = output)
            Attention.HeadScalar(q, k + kvOffset, v + kvOffset, kvDim, positions, headDim, 1 / MathF.Sqrt(headDim), s, o);
        return output;
    }

    private static void Close(float[] expected, float[] actual, float tolerance, string what)
    {
        for (int d = 0; d < expected.Length; d++)
            Assert.True(MathF.Abs(expected[d] - actual[d]) <= tolerance * (1 + MathF.Abs(expected[d])), $"{what}, d {d}: expected {expected[d]}, got {actual[d]}");
    }

    [Fact]
    public void Policy_specs_parse_and_print_back()
    {
        foreach (var policy in KvCachePolicy.Standard)
            Assert.Equal(policy, KvCachePolicy.Parse(policy.ToString()));
        var p = KvCachePolicy.Parse("q2:sinks=4:window=32:outliers=0.01:lowrank=4:group=16:vgroup=8");
        Assert.Equal((KvCacheKind.Quantized, 2, 4, 32, 0.01, 4, 16, 8), (p.Kind, p.Bits, p.Sinks, p.Window, p.Outliers, p.LowRank, p.Group, p.ValueGroup));
        Assert.Equal("q2:sinks=4:window=32:group=16:vgroup=8:outliers=0.01:lowrank=4", p.ToString());
        Assert.False(KvCachePolicy.Parse("evict:keep=0.5:merge=0").Merge);
        Assert.True(KvCachePolicy.Parse("q4:fp=f16").HalfFullRows);
        foreach (var (spec, message) in new[]
        {
            ("q3", "unknown kind 'q3'"), ("q4:window", "not key=value"), ("q4:keep=0.5", "'keep' does not apply"),
            ("evict", "needs keep=F"), ("evict:keep=1.5", "not a fraction"), ("q2:group=0", "at least 1"), ("q2:group=4:lowrank=5", "exceeds the group"), ("q4:fp=bf16", "fp is f32 or f16"), ("evict:keep=0.5:fp=f16", "'fp' does not apply"),
        })
        {
            var e = Assert.Throws<ArgumentException>(() => KvCachePolicy.Parse(spec));
            Assert.Contains(message, e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void F32_cache_attends_bit_for_bit_as_the_attention_kernel_on_the_rows()
    {
        var config = Config(heads: 6, kvHeads: 3, headDim: 48);
        var cache = KvCachePolicy.Float32.CreateCache(config, 64);
        var rng = new Random(1);
        float[] keys = Rows(rng, 40, config.KvDim), values = Rows(rng, 40, config.KvDim), query = Rows(rng, 1, 48);
        cache.Append(1, 0, keys.AsSpan(0, 25 * config.KvDim), values.AsSpan(0, 25 * config.KvDim));
        cache.Append(1, 25, keys.AsSpan(25 * config.KvDim), values.AsSpan(25 * config.KvDim));
        for (int head = 0; head < 6; head++)
        {
            var expected = new float[48];
            var scores = new float[40];
            fixed (float* q = query, k = keys, v = values, s = scores, o = expected)
                Attention.Head(q, k + head / 2 * 48, v + head / 2 * 48, config.KvDim, 40, 48, 1 / MathF.Sqrt(48), s, o);
            Assert.Equal(expected, AttendOne(cache, 1, head, query, 39));
        }
    }

    public static TheoryData<string, int, int, int> QuantizedCases() => new()
    {
        { "q8", 4, 4, 48 },
        { "q4", 4, 2, 48 },
        { "q2", 2, 2, 20 },
        { "q4:sinks=3:window=5:group=8", 4, 4, 6 },
        { "q2:sinks=4:window=8:group=8:vgroup=8", 6, 3, 48 },
        { "q2:sinks=2:window=4:group=8:outliers=0.02", 4, 2, 48 },
        { "q4:group=8:lowrank=3", 2, 2, 40 },
        { "q2:sinks=1:window=3:group=16:outliers=0.01:lowrank=2", 2, 1, 64 },
        { "q4:sinks=3:window=40:group=8:fp=f16", 4, 2, 24 },
    };

    /// <summary>Tiles decoded inside the attention give what plain scalar decoding of the whole cache gives.</summary>
    [Theory]
    [MemberData(nameof(QuantizedCases))]
    public void Quantized_attention_over_tiles_matches_the_scalar_reference_over_the_decoded_cache(string spec, int heads, int kvHeads, int headDim)
    {
        var config = Config(heads, kvHeads, headDim);
        int context = 70, kvDim = config.KvDim;
        var cache = (QuantizedKvCache)KvCachePolicy.Parse(spec).CreateCache(config, context);
        var rng = new Random(spec.Length * 7 + headDim);
        float[] keys = Rows(rng, context, kvDim), values = Rows(rng, context, kvDim);
        float[] decodedKeys = new float[context * kvDim], decodedValues = new float[context * kvDim];
        for (int p = 0; p < context; p++)
        {
            cache.Append(0, p, keys.AsSpan(p * kvDim, kvDim), values.AsSpan(p * kvDim, kvDim));
            cache.Append(1, p, values.AsSpan(p * kvDim, kvDim), keys.AsSpan(p * kvDim, kvDim));
            if (p % 9 != 4 && p != context - 1)
                continue;
            cache.DecodeReference(0, p, decodedKeys, decodedValues);
            for (int head = 0; head < heads; head++)
            {
                var query = Rows(rng, 1, headDim);
                int kvOffset = head / (heads / kvHeads) * headDim;
                Close(ScalarAttention(decodedKeys, decodedValues, kvDim, kvOffset, p + 1, headDim, query), AttendOne(cache, 0, head, query, p), 2e-5f, $"{spec} position {p} head {head}");
            }
        }
    }

    /// <summary>The decoded cache of a plain KIVI policy against a straightforward quantizer written from the description.</summary>
    [Theory]
    [InlineData(8, 0, 0, 32)]
    [InlineData(4, 2, 5, 8)]
    [InlineData(2, 4, 8, 16)]
    public void Quantized_cache_decodes_as_a_straightforward_per_channel_key_and_per_token_value_quantizer(int bits, int sinks, int window, int group)
    {
        var config = Config(heads: 4, kvHeads: 2, headDim: 24);
        int context = 80, kvDim = config.KvDim, levels = (1 << bits) - 1;
        var cache = (QuantizedKvCache)KvCachePolicy.Parse($"q{bits}:sinks={sinks}:window={window}:group={group}:vgroup=12").CreateCache(config, context);
        var rng = new Random(bits);
        float[] keys = Rows(rng, context, kvDim), values = Rows(rng, context, kvDim);
        cache.Append(0, 0, keys, values);
        float[] actualKeys = new float[context * kvDim], actualValues = new float[context * kvDim];
        int position = context - 1;
        cache.DecodeReference(0, position, actualKeys, actualValues);

        float[] expectedKeys = (float[])keys.Clone(), expectedValues = (float[])values.Clone();
        int quantizedEnd = sinks + (context - sinks - window) / group * group;
        for (int g0 = sinks; g0 < quantizedEnd; g0 += group)
        {
            for (int c = 0; c < kvDim; c++)
                QuantizeInPlace(expectedKeys, Enumerable.Range(g0, group).Select(p => p * kvDim + c).ToArray(), levels);
        }
        for (int p = sinks; p < quantizedEnd; p++)
        {
            for (int start = 0; start < kvDim; start += 12)
                QuantizeInPlace(expectedValues, Enumerable.Range(p * kvDim + start, 12).ToArray(), levels);
        }
        Assert.Equal(expectedKeys, actualKeys);
        Assert.Equal(expectedValues, actualValues);
    }

    /// <summary>Asymmetric round-to-nearest with an f16 minimum and scale, over the elements at <paramref name="at"/>.</summary>
    private static void QuantizeInPlace(float[] data, int[] at, int levels)
    {
        float lo = at.Min(i => data[i]), hi = at.Max(i => data[i]);
        float min = (float)(Half)lo, scale = (float)(Half)((hi - lo) / levels);
        foreach (int i in at)
        {
            int code = scale > 0 ? (int)Math.Clamp(MathF.Round((data[i] - min) / scale), 0, levels) : 0;
            data[i] = min + scale * code;
        }
    }

    /// <summary>Quantization error of a random cache stays within half a step, and each refinement lowers it.</summary>
    [Fact]
    public void Outliers_and_low_rank_residual_reduce_the_error_and_outliers_come_back_exactly()
    {
        var config = Config(heads: 4, kvHeads: 4, headDim: 32);
        int context = 64, kvDim = config.KvDim;
        var rng = new Random(5);
        float[] keys = Rows(rng, context, kvDim), values = Rows(rng, context, kvDim);
        double Error(string spec, out float[] decodedKeys)
        {
            var cache = (QuantizedKvCache)KvCachePolicy.Parse(spec).CreateCache(config, context);
            cache.Append(0, 0, keys, values);
            decodedKeys = new float[context * kvDim];
            var decodedValues = new float[context * kvDim];
            cache.DecodeReference(0, context - 1, decodedKeys, decodedValues);
            double sum = 0;
            for (int i = 0; i < keys.Length; i++)
                sum += Math.Pow(keys[i] - decodedKeys[i], 2) + Math.Pow(values[i] - decodedValues[i], 2);
            return sum;
        }
        double plain = Error("q2", out _), outliers = Error("q2:outliers=0.02", out var withOutliers), lowRank = Error("q2:lowrank=8", out _);
        Assert.True(outliers < 0.8 * plain, $"outliers: {outliers} against {plain}");
        Assert.True(lowRank < 0.9 * plain, $"low rank: {lowRank} against {plain}");
        // the largest key of all is an outlier of its channel group: it comes back as its f16 value
        int largest = Enumerable.Range(0, keys.Length).MaxBy(i => MathF.Abs(keys[i]));
        Assert.Equal((float)(Half)keys[largest], withOutliers[largest]);
    }

    [Fact]
    public void Low_rank_fit_recovers_a_matrix_of_that_rank()
    {
        var rng = new Random(3);
        int rows = 16, columns = 40, rank = 3;
        var matrix = new float[rows * columns];
        for (int j = 0; j < rank; j++)
        {
            var u = Enumerable.Range(0, rows).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var v = Enumerable.Range(0, columns).Select(_ => rng.NextDouble() - 0.5).ToArray();
            for (int i = 0; i < rows; i++)
                for (int c = 0; c < columns; c++)
                    matrix[i * columns + c] += (float)(u[i] * v[c] * (j + 1));
        }
        var (a, b) = Squeeze.Kernels.LowRankResidual.Fit(matrix, rows, columns, rank);
        double error = 0, energy = 0;
        for (int i = 0; i < rows; i++)
        {
            for (int c = 0; c < columns; c++)
            {
                double approx = 0;
                for (int j = 0; j < rank; j++)
                    approx += a[i * rank + j] * b[j * columns + c];
                error += Math.Pow(matrix[i * columns + c] - approx, 2);
                energy += Math.Pow(matrix[i * columns + c], 2);
            }
        }
        Assert.True(error < 1e-5 * energy, $"relative error {error / energy}");
        Assert.All(Squeeze.Kernels.LowRankResidual.Fit(new float[rows * columns], rows, columns, rank).B, x => Assert.Equal(0, x));
    }

    /// <summary>A prompt appended as one batch is attended exactly as if decoded one token at a time.</summary>
    [Theory]
    [InlineData("q4:sinks=2:window=6:group=8")]
    [InlineData("q2:window=3:group=4:outliers=0.05:lowrank=2")]
    [InlineData("q2:sinks=3:window=5:group=4:fp=f16")]
    [InlineData("f16")]
    public void A_batch_sees_what_token_by_token_decoding_sees(string spec)
    {
        var config = Config(heads: 2, kvHeads: 2, headDim: 16, layers: 1);
        int context = 50, kvDim = config.KvDim;
        var policy = KvCachePolicy.Parse(spec);
        var rng = new Random(11);
        float[] keys = Rows(rng, context, kvDim), values = Rows(rng, context, kvDim), query = Rows(rng, 1, 16);
        var batch = policy.CreateCache(config, context);
        batch.Append(0, 0, keys.AsSpan(0, 20 * kvDim), values.AsSpan(0, 20 * kvDim));
        batch.Append(0, 20, keys.AsSpan(20 * kvDim), values.AsSpan(20 * kvDim));
        var single = policy.CreateCache(config, context);
        for (int p = 0; p < context; p++)
        {
            single.Append(0, p, keys.AsSpan(p * kvDim, kvDim), values.AsSpan(p * kvDim, kvDim));
            if (p >= 20)
                Assert.Equal(AttendOne(single, 0, 1, query, p), AttendOne(batch, 0, 1, query, p));
        }
        Assert.Equal(policy.CreateCache(config, context).BytesAfter(context), single.HeldBytes);
    }

    [Fact]
    public void Bytes_held_after_decoding_match_the_stated_bytes_per_token_for_every_standard_policy()
    {
        var config = Config(heads: 6, kvHeads: 6, headDim: 48);
        foreach (var policy in KvCachePolicy.Standard)
        {
            foreach (int positions in new[] { 1, 5, 37, 100 })
            {
                var cache = policy.CreateCache(config, 100);
                var rng = new Random(positions);
                for (int p = 0; p < positions; p++)
                {
                    var row = Rows(rng, 1, config.KvDim);
                    for (int l = 0; l < config.LayerCount; l++)
                    {
                        cache.Append(l, p, row, row);
                        if (cache.AttendsInOrder)
                            AttendOne(cache, l, 0, row[..48], p);
                    }
                }
                Assert.Equal(cache.BytesAfter(positions), cache.HeldBytes);
            }
            long f32 = KvCachePolicy.Float32.CreateCache(config, 256).BytesAfter(256);
            Assert.Equal(256L * 2 * 288 * 4 * 2, f32);
            Assert.True(policy.CreateCache(config, 256).BytesAfter(256) <= f32, $"{policy}");
        }
    }
}

/// <summary>The f16 cache's in-register attention (<see cref="Attention.HeadHalf"/>) against its tile-by-tile definition.</summary>
public unsafe class Float16AttentionTests
{
    [Fact]
    public void Attention_over_f16_rows_in_registers_equals_the_tile_by_tile_definition_bit_for_bit()
    {
        if (!Attention.RunsHalf(64))
            return; // the tile path is the only one here
        int compared = 0;
        foreach (int headDim in new[] { 16, 32, 48, 64, 80, 96, 112, 128 })
        {
            foreach (var (window, cap) in new[] { (0, 0f), (24, 0f), (0, 5f), (40, 3f) })
            {
                var config = new ModelConfig
                {
                    Architecture = "gemma2", Dim = 4 * headDim, HiddenDim = 8, LayerCount = 2, HeadCount = 4, KvHeadCount = 2, HeadDim = headDim,
                    VocabSize = 8, ContextLength = 160, SlidingWindow = window, SlidingWindowPeriod = window > 0 ? 2 : 0, AttentionSoftCap = cap,
                };
                var cache = new Float16KvCache(config, 160);
                var rng = new Random(headDim * 31 + window + (int)cap);
                int kvDim = cache.KvDim;
                var keys = Enumerable.Range(0, 150 * kvDim).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
                var values = Enumerable.Range(0, 150 * kvDim).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
                for (int l = 0; l < 2; l++)
                    cache.Append(l, 0, keys, values);
                var query = Enumerable.Range(0, headDim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                var scratch = new float[cache.ScratchLength];
                var fast = new float[headDim];
                var tiles = new float[headDim];
                foreach (int position in new[] { 0, 1, 15, 31, 32, 33, 63, 100, 149 })
                {
                    for (int layer = 0; layer < 2; layer++)
                    {
                        for (int head = 0; head < 4; head++)
                        {
                            int first = window > 0 && layer % 2 == 0 ? Math.Max(0, position - window + 1) : 0; // period 2: layer 0 slides
                            fixed (float* q = query, s = scratch, o = fast, t = tiles)
                            {
                                cache.Attend(layer, head, q, position, 0.125f, s, o);
                                cache.AttendByTiles(layer, first, position + 1 - first, head / 2 * headDim, q, 0.125f, s, t);
                            }
                            for (int d = 0; d < headDim; d++)
                            {
                                if (BitConverter.SingleToInt32Bits(fast[d]) != BitConverter.SingleToInt32Bits(tiles[d]))
                                    Assert.Fail($"head size {headDim}, window {window}, cap {cap}, position {position}, layer {layer}, head {head}, d {d}: {fast[d]} against {tiles[d]}");
                            }
                            compared += headDim;
                        }
                    }
                }
            }
        }
        Assert.True(compared > 50_000, $"{compared} values compared");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(6)]
    [InlineData(8)]
    public void A_group_of_query_heads_attends_bit_for_bit_as_each_head_alone(int group)
    {
        foreach (int headDim in new[] { 32, 64, 128 })
        {
            foreach (var (window, cap) in new[] { (0, 0f), (24, 3f) })
            {
                var config = new ModelConfig
                {
                    Architecture = "gemma2", Dim = 2 * group * headDim, HiddenDim = 8, LayerCount = 2, HeadCount = 2 * group, KvHeadCount = 2,
                    HeadDim = headDim, VocabSize = 8, ContextLength = 96, SlidingWindow = window, SlidingWindowPeriod = window > 0 ? 2 : 0,
                    AttentionSoftCap = cap,
                };
                var cache = new Float16KvCache(config, 96);
                var rng = new Random(group * 131 + headDim + window);
                var keys = Enumerable.Range(0, 90 * cache.KvDim).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
                var values = Enumerable.Range(0, 90 * cache.KvDim).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
                for (int l = 0; l < 2; l++)
                    cache.Append(l, 0, keys, values);
                var queries = Enumerable.Range(0, config.HeadCount * headDim).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
                var scratch = new float[cache.ScratchLength];
                var together = new float[config.HeadCount * headDim];
                var alone = new float[config.HeadCount * headDim];
                foreach (int position in new[] { 0, 17, 89 })
                {
                    for (int layer = 0; layer < 2; layer++)
                    {
                        fixed (float* q = queries, s = scratch, o = together, a = alone)
                        {
                            // every split of each key/value head's query heads: whole, and in two when the group allows
                            for (int kv = 0; kv < 2; kv++)
                            {
                                int firstHead = kv * group;
                                cache.AttendGroup(layer, firstHead, group, q + firstHead * headDim, position, 0.125f, s, o + firstHead * headDim);
                                for (int h = firstHead; h < firstHead + group; h++)
                                    cache.Attend(layer, h, q + h * headDim, position, 0.125f, s, a + h * headDim);
                            }
                        }
                        Assert.Equal(alone.Select(BitConverter.SingleToInt32Bits), together.Select(BitConverter.SingleToInt32Bits));
                    }
                }
            }
        }
    }

    [Fact]
    public void Query_heads_of_different_key_value_heads_are_not_one_group()
    {
        var config = new ModelConfig { Architecture = "llama", Dim = 128, HiddenDim = 8, LayerCount = 1, HeadCount = 4, KvHeadCount = 2, HeadDim = 32, VocabSize = 8, ContextLength = 8 };
        var cache = new Float32KvCache(config, 8);
        var buffer = (float*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)(4 * 32 + cache.ScratchLength), sizeof(float));
        try
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => cache.AttendGroup(0, 1, 2, buffer, 0, 1f, buffer, buffer));
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(buffer);
        }
    }
}

