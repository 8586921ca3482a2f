using Squeeze.Generation;

namespace Squeeze.Tests.Generation;

public sealed class SamplerTests
{
    [Fact]
    public void A_low_temperature_on_large_logits_samples_the_top_token_instead_of_failing()
    {
        // logits / T = 900: exp overflows unless the softmax shifts by the maximum first.
        var logits = new float[] { 1f, 90f, 89.5f, -3f };
        var sampler = new Sampler(new SamplingOptions { Temperature = 0.1f, Seed = 3 });
        for (int i = 0; i < 20; i++)
            Assert.Equal(1, sampler.Sample(logits));
    }

    [Fact]
    public void Sampling_follows_the_softmax_of_the_scaled_logits()
    {
        var logits = new float[] { 0f, MathF.Log(3f) };   // probabilities 1/4 and 3/4 at temperature 1
        var sampler = new Sampler(new SamplingOptions { Temperature = 1f, Seed = 7 });
        int ones = Enumerable.Range(0, 4000).Count(_ => sampler.Sample(logits) == 1);
        Assert.InRange(ones, 2850, 3150); // 3000 ± 5 standard deviations (27.4)
    }
}
