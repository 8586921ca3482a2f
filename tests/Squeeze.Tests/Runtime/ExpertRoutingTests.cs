using Squeeze.Runtime;

namespace Squeeze.Tests.Runtime;

/// <summary>The router's step: softmax over every expert, the top k most probable first (ties to the lower index), weights
/// normalised or not.</summary>
public class ExpertRoutingTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Route_picks_the_most_probable_experts_with_their_softmax_weights(bool normalize)
    {
        float[] logits = [0.5f, 2f, -1f, 2f, 1f];
        var experts = new int[3];
        var weights = new float[3];
        Transformer.Route(logits, normalize, deterministic: false, experts, weights);
        Assert.Equal([1, 3, 4], experts);
        double[] e = [Math.Exp(0.5), Math.Exp(2), Math.Exp(-1), Math.Exp(2), Math.Exp(1)];
        double sum = e.Sum(), picked = e[1] + e[3] + e[4];
        double[] expected = [e[1] / sum, e[3] / sum, e[4] / sum];
        for (int k = 0; k < 3; k++)
            Assert.Equal(normalize ? expected[k] * sum / picked : expected[k], weights[k], 1e-6);
        Assert.Equal(1.0, logits.Sum(), 1e-6); // the logits became the softmax
    }

    [Fact]
    public void Deterministic_routing_picks_the_same_experts()
    {
        var random = new Random(42);
        for (int trial = 0; trial < 100; trial++)
        {
            float[] logits = [.. Enumerable.Range(0, 16).Select(_ => (float)(random.NextDouble() * 8 - 4))];
            float[] copy = [.. logits];
            var a = new int[4];
            var b = new int[4];
            var wa = new float[4];
            var wb = new float[4];
            Transformer.Route(logits, true, deterministic: false, a, wa);
            Transformer.Route(copy, true, deterministic: true, b, wb);
            Assert.Equal(a, b);
            for (int k = 0; k < 4; k++)
                Assert.Equal(wa[k], wb[k], 1e-5);
        }
    }
}
