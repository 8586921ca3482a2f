using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Tests.Calibration;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Compression;

public sealed class TokenUsageTests
{
    [Fact]
    public void Usage_is_the_counts_plus_the_models_expectations_of_every_token()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        string text = CalibratorTests.CalibrationText(6_000);
        long[] counts = TokenUsage.Count(model, text, 700);
        Assert.Equal(700, counts.Sum());
        Assert.Equal(model.Tokenizer.Encode(text, addBos: true).Length, TokenUsage.Count(model, text).Sum());

        // 700 tokens in chunks of 64 (the last one shorter): every position adds its counted token and a distribution.
        double[] usage = TokenUsage.Measure(model, text, 700, 64, threads: 2);
        Assert.Equal(counts.Length, usage.Length);
        Assert.Equal(1400, usage.Sum(), 1e-3);
        Assert.All(Enumerable.Range(0, usage.Length), t => Assert.True(usage[t] >= counts[t], $"token {t}: usage {usage[t]} below its count {counts[t]}"));
        // Tokens the text never holds are still expected, some of them often.
        var expectedOnly = Enumerable.Range(0, usage.Length).Where(t => counts[t] == 0).Select(t => usage[t]).ToArray();
        Assert.True(expectedOnly.Max() > 1, $"the most expected token the text lacks is expected {expectedOnly.Max()} times");
        Assert.Equal(usage, TokenUsage.Measure(model, text, 700, 64, threads: 2));
    }

    [Fact]
    public void A_context_shorter_than_two_tokens_is_refused()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        Assert.Throws<ArgumentOutOfRangeException>(() => TokenUsage.Measure(model, "Once upon a time", 0, 1, threads: 1));
    }
}
