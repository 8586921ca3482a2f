using Squeeze.Calibration;
using Squeeze.Compression.Representations;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Tests.Calibration;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Compression;

public sealed class RowSplitRepresentationTests
{
    [Fact]
    public void The_spec_parses_back_and_bad_specs_are_refused()
    {
        var split = NativeRepresentation.Parse("split:4096:uniform:6:~64/vq:6:12");
        var typed = Assert.IsType<RowSplitRepresentation>(split);
        Assert.Equal(4096, typed.HotRows);
        Assert.Equal("uniform:6:~64", typed.Hot.Spec);
        Assert.Equal("vq:6:12", typed.Cold.Spec);
        Assert.Equal(split, NativeRepresentation.Parse(split.Spec));
        var tiers = Assert.IsType<RowSplitRepresentation>(NativeRepresentation.Parse("split:512:uniform:5:~64/split:1536:uniform:4:~64/vq:16:6"));
        Assert.Equal("uniform:5:~64", tiers.Hot.Spec);
        var inner = Assert.IsType<RowSplitRepresentation>(tiers.Cold);
        Assert.Equal((1536, "uniform:4:~64", "vq:16:6"), (inner.HotRows, inner.Hot.Spec, inner.Cold.Spec));
        Assert.Equal(tiers, NativeRepresentation.Parse(tiers.Spec));
        foreach (string bad in (string[])["split:0:uniform:4:64/uniform:3:64", "split:10:uniform:4:64", "split:x:uniform:4:64/uniform:3:64", "split:10:uniform:4:64/bogus:1",
                     "split:10:split:5:uniform:4:64/uniform:3:64/uniform:2:64", "split:10:uniform:4:64/split:5:uniform:3:64"])
            Assert.Throws<FormatException>(() => NativeRepresentation.Parse(bad));
    }

    [Fact]
    public void Tiers_take_the_rows_of_the_next_most_used_tokens_each_from_its_own_row()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        string text = CalibratorTests.CalibrationText(20_000);
        var stats = Calibrator.Run(model, text, new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, Threads = 2 });
        double[] usage = TokenUsage.Measure(model, text, 1024, 64, threads: 2);
        var encoder = new TensorEncoder(model, stats, new CompressionOptions { Threads = 2 }, usage);
        var tiers = NativeRepresentation.Parse("split:64:uniform:8:~64/split:128:uniform:4:~64/uniform:2:~64");
        Assert.False(NativeRepresentation.Parse("split:64:uniform:8:~64/split:448:uniform:4:~64/uniform:2:~64").Fits(encoder, TensorNames.TokenEmbedding));

        var weight = Assert.IsType<RowSplitWeight>(tiers.Encode(encoder, TensorNames.TokenEmbedding).Weight);
        var cold = Assert.IsType<RowSplitWeight>(weight.ColdRows);
        int[] byUse = RowSplitRepresentation.ByUse(usage);
        var tier = new int[usage.Length];
        Array.Fill(tier, 2);
        foreach (int t in byUse[..64])
            tier[t] = 0;
        foreach (int t in byUse[64..192])
            tier[t] = 1;
        int[] coldTokens = [.. Enumerable.Range(0, usage.Length).Where(t => !weight.Hot[t])];
        Assert.Equal([.. Enumerable.Range(0, usage.Length).Select(t => tier[t] == 0)], weight.Hot.ToArray());
        Assert.Equal([.. coldTokens.Select(t => tier[t] == 1)], cold.Hot.ToArray());

        // Each row decodes near its own token's row (a row taken from another token would be as far as two random rows),
        // and the error grows tier by tier.
        var original = model.Weight(TensorNames.TokenEmbedding);
        var a = new float[original.Columns];
        var b = new float[original.Columns];
        var error = new double[3];
        for (int t = 0; t < usage.Length; t++)
        {
            original.DecodeRow(t, a);
            weight.DecodeRow(t, b);
            double difference = 0, energy = 0;
            for (int c = 0; c < a.Length; c++)
            {
                difference += (a[c] - b[c]) * (double)(a[c] - b[c]);
                energy += a[c] * (double)a[c];
            }
            Assert.True(difference < 0.5 * energy, $"token {t} (tier {tier[t]}): squared error {difference} of a row with energy {energy}");
            error[tier[t]] += difference / energy / tier.Count(x => x == tier[t]);
        }
        Assert.True(error[0] * 10 < error[1] && error[1] * 2 < error[2], $"relative squared errors by tier: {string.Join(", ", error)}");
    }

    [Fact]
    public void The_rows_of_the_most_used_tokens_get_the_hot_level_and_only_token_indexed_matrices_fit()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        string text = CalibratorTests.CalibrationText(20_000);
        var stats = Calibrator.Run(model, text, new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        double[] usage = TokenUsage.Measure(model, text, 1024, 64, threads: 2);
        var encoder = new TensorEncoder(model, stats, new CompressionOptions { Threads = 2 }, usage);
        var split = (RowSplitRepresentation)NativeRepresentation.Parse("split:64:uniform:8:~64/uniform:2:~64");

        Assert.True(split.Fits(encoder, TensorNames.TokenEmbedding));
        Assert.False(split.Fits(encoder, "blk.0.ffn_up.weight"));
        Assert.False(split.Fits(new TensorEncoder(model, stats, new CompressionOptions { Threads = 2 }), TensorNames.TokenEmbedding));

        var encoded = split.Encode(encoder, TensorNames.TokenEmbedding);
        var weight = Assert.IsType<RowSplitWeight>(encoded.Weight);
        Assert.Equal(encoded.OutputError, encoder.RelativeError(TensorNames.TokenEmbedding, weight));
        int[] hot = [.. Enumerable.Range(0, usage.Length).Where(t => weight.Hot[t])];
        Assert.Equal(64, hot.Length);
        double least = hot.Min(t => usage[t]);
        Assert.All(Enumerable.Range(0, usage.Length).Where(t => !weight.Hot[t]), t => Assert.True(usage[t] <= least));

        // hot rows at 8 bits are far closer to the original than cold rows at 2 bits
        var original = model.Weight(TensorNames.TokenEmbedding);
        double Error(IEnumerable<int> rows)
        {
            var a = new float[original.Columns];
            var b = new float[original.Columns];
            double sum = 0;
            foreach (int r in rows)
            {
                original.DecodeRow(r, a);
                weight.DecodeRow(r, b);
                for (int c = 0; c < a.Length; c++)
                    sum += (a[c] - b[c]) * (double)(a[c] - b[c]) / a.Length;
            }
            return sum / rows.Count();
        }
        Assert.True(Error(hot) * 50 < Error(Enumerable.Range(0, usage.Length).Where(t => !weight.Hot[t])));
    }
}
