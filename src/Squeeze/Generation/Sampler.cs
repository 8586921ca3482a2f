using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Squeeze.Generation;

/// <summary>Settings of a <see cref="Sampler"/>.</summary>
public sealed record SamplingOptions
{
    /// <summary>0 picks the most likely token (greedy); higher values flatten the distribution.</summary>
    public float Temperature { get; init; }

    /// <summary>Nucleus sampling: keep the smallest set of tokens whose probability reaches this; 1 keeps all.</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Seed of the random draws, so a sampled text can be reproduced.</summary>
    public int Seed { get; init; } = 42;
}

/// <summary>Picks the next token from logits: greedy at temperature 0, otherwise a seeded draw with optional top-p.</summary>
public sealed class Sampler
{
    private readonly SamplingOptions options;
    private readonly Random random;

    /// <summary>A sampler with its random generator seeded from <paramref name="options"/> (defaults when null); <see cref="ArgumentException"/> for a negative temperature or a top-p outside (0, 1].</summary>
    public Sampler(SamplingOptions? options = null)
    {
        this.options = options ?? new SamplingOptions();
        if (this.options.Temperature < 0 || float.IsNaN(this.options.Temperature))
            throw new ArgumentException($"temperature {this.options.Temperature} must be 0 or more", nameof(options));
        if (!(this.options.TopP is > 0 and <= 1))
            throw new ArgumentException($"top-p {this.options.TopP} must be in (0, 1]", nameof(options));
        random = new Random(this.options.Seed);
    }

    /// <summary>The next token for one row of logits.</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (options.Temperature == 0)
            return TensorPrimitives.IndexOfMax(logits);
        var probs = new float[logits.Length];
        TensorPrimitives.Divide(logits, options.Temperature, probs);
        // TensorPrimitives.SoftMax does not subtract the maximum: logits / T above ~88 (T = 0.1 and a logit of 9) would overflow.
        TensorPrimitives.Subtract(probs, TensorPrimitives.Max(probs), probs);
        TensorPrimitives.SoftMax(probs, probs);
        double r = random.NextDouble();
        if (options.TopP >= 1)
        {
            double cumulative = 0;
            for (int i = 0; i < probs.Length; i++)
            {
                cumulative += probs[i];
                if (r < cumulative)
                    return i;
            }
            return probs.Length - 1;
        }
        // Only tokens with p ≥ (1 − topP) / (n − 1) can be in the nucleus (the rest together hold less than 1 − topP),
        // so sort just those.
        float cutoff = (1f - options.TopP) / Math.Max(1, probs.Length - 1);
        var order = new List<int>();
        for (int i = 0; i < probs.Length; i++)
        {
            if (probs[i] >= cutoff)
                order.Add(i);
        }
        order.Sort((a, b) => probs[b].CompareTo(probs[a]) is var c && c != 0 ? c : a.CompareTo(b));
        double mass = 0;
        int keep = 0;
        while (keep < order.Count && mass < options.TopP)
            mass += probs[order[keep++]];
        double target = r * mass, sum = 0;
        for (int i = 0; i < keep; i++)
        {
            sum += probs[order[i]];
            if (target < sum)
                return order[i];
        }
        return order[keep - 1];
    }
}
