using Squeeze.Coding;
using Squeeze.Evaluation;
using Squeeze.Zip;

namespace Squeeze.Tests.Zip;

public class TokenFrequenciesTests
{
    [Theory]
    [InlineData(2, 1f)]
    [InlineData(512, 4f)]
    [InlineData(32000, 12f)]
    public void Frequencies_follow_the_softmax_and_the_log_partition_gives_its_log_probabilities(int vocab, float spread)
    {
        var rng = new Random(vocab);
        var logits = new float[vocab];
        for (int i = 0; i < vocab; i++)
            logits[i] = (float)(rng.NextDouble() * 2 - 1) * spread;
        var cumulative = new uint[vocab + 2];
        double logPartition = TokenFrequencies.Compute(logits, new float[vocab], cumulative);
        var logProbs = new float[vocab];
        LogSoftmax.Compute(logits, logProbs);

        uint total = cumulative[^1];
        Assert.True(total < 1u << 29, $"total {total}");
        Assert.Equal(1u, cumulative[vocab + 1] - cumulative[vocab]); // the escape
        for (int i = 0; i < vocab; i++)
        {
            uint frequency = cumulative[i + 1] - cumulative[i];
            Assert.True(frequency >= 1, $"token {i} is not codable");
            double expected = Math.Exp(logProbs[i]) * TokenFrequencies.Budget + 1;
            Assert.True(Math.Abs(frequency - expected) <= 1 + 1e-5 * expected, $"token {i}: {frequency} against {expected}");
            Assert.Equal(logProbs[i], logits[i] - logPartition, 1e-5);
        }
    }
}
