using Squeeze.Calibration;
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
        foreach (string bad in (string[])["split:0:uniform:4:64/uniform:3:64", "split:10:uniform:4:64", "split:x:uniform:4:64/uniform:3:64", "split:10:uniform:4:64/bogus:1"])
            Assert.Throws<FormatException>(() => NativeRepresentation.Parse(bad));
    }

    [Fact]
    public void The_rows_of_the_most_used_tokens_get_the_hot_level_and_only_token_indexed_matrices_fit()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        string text = CalibratorTests.CalibrationText(20_000);
        var stats = Calibrator.Run(model, text, new CalibrationOptions { ContextLength = 64, MaxTokens = 1024, CollectGram = true, Threads = 2 });
        long[] counts = RowSplitRepresentation.CountTokens(model, text, 1024);
        Assert.Equal(1024, counts.Sum());
        var encoder = new NativeTensorEncoder(model, stats, new CompressionOptions { Threads = 2 }, counts);
        var split = (RowSplitRepresentation)NativeRepresentation.Parse("split:64:uniform:8:~64/uniform:2:~64");

        Assert.True(split.Fits(encoder, TensorNames.TokenEmbedding));
        Assert.False(split.Fits(encoder, "blk.0.ffn_up.weight"));
        Assert.False(split.Fits(new NativeTensorEncoder(model, stats, new CompressionOptions { Threads = 2 }), TensorNames.TokenEmbedding));

        var encoded = split.Encode(encoder, TensorNames.TokenEmbedding);
        var weight = Assert.IsType<RowSplitWeight>(encoded.Weight);
        Assert.Equal(encoded.OutputError, encoder.RelativeError(TensorNames.TokenEmbedding, weight));
        int[] hot = [.. Enumerable.Range(0, counts.Length).Where(t => weight.Hot[t])];
        Assert.Equal(64, hot.Length);
        long least = hot.Min(t => counts[t]);
        Assert.All(Enumerable.Range(0, counts.Length).Where(t => !weight.Hot[t]), t => Assert.True(counts[t] <= least));

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
        Assert.True(Error(hot) * 50 < Error(Enumerable.Range(0, counts.Length).Where(t => !weight.Hot[t])));
    }
}
