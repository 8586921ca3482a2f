namespace Squeeze.Evaluation;

/// <summary>How well a model predicts a text, scored by llama.cpp's perplexity method.</summary>
public sealed record EvaluationResult
{
    /// <summary>exp(mean negative log-likelihood) over the scored tokens.</summary>
    public required double Perplexity { get; init; }

    /// <summary>Standard error of <see cref="Perplexity"/> (delta method: perplexity × standard error of the mean NLL).</summary>
    public required double PerplexityError { get; init; }

    /// <summary>Mean negative log-likelihood in nats.</summary>
    public required double MeanNll { get; init; }

    /// <summary>Bits per byte of the scored tokens: Σ −log2 p(token) / Σ bytes(token).</summary>
    public required double BitsPerByte { get; init; }

    /// <summary>Chunks of <see cref="ContextLength"/> tokens evaluated.</summary>
    public required int Chunks { get; init; }

    /// <summary>Tokens per chunk.</summary>
    public required int ContextLength { get; init; }

    /// <summary>Tokens scored: the second half of every chunk, as llama.cpp's perplexity scores them.</summary>
    public required long ScoredTokens { get; init; }

    /// <summary>Tokens run through the evaluated model per second (every token of every chunk).</summary>
    public required double TokensPerSecond { get; init; }

    /// <summary>The KV-cache policy the model ran with (<see cref="Runtime.KvCachePolicy"/> spec string).</summary>
    public string KvCache { get; init; } = "f32";

    /// <summary>Bytes per position the cache holds (every layer) when a whole chunk has been decoded one token at a time.</summary>
    public double KvCacheBytesPerToken { get; init; }

    /// <summary>Divergence from the base model, when one was given.</summary>
    public KlDivergenceStats? KlDivergence { get; init; }
}

/// <summary>Per-token KL divergence KL(base ‖ model) over the scored positions, and agreement of the two models.</summary>
public sealed record KlDivergenceStats
{
    /// <summary>Mean KL divergence per scored token, in nats.</summary>
    public required double Mean { get; init; }

    /// <summary>Standard error of <see cref="Mean"/>.</summary>
    public required double MeanError { get; init; }

    /// <summary>Median KL divergence per scored token, in nats.</summary>
    public required double Median { get; init; }

    /// <summary>99th percentile of the per-token KL divergence, in nats: how bad the worst 1 % of tokens get.</summary>
    public required double Percentile99 { get; init; }

    /// <summary>Largest per-token KL divergence, in nats.</summary>
    public required double Maximum { get; init; }

    /// <summary>Percentage of positions where both models rank the same token first.</summary>
    public required double SameTopTokenPercent { get; init; }

    /// <summary>Root mean square of p_model(next) − p_base(next), in percent.</summary>
    public required double RmsDeltaPPercent { get; init; }

    /// <summary>The base model's perplexity on the same tokens.</summary>
    public required double BasePerplexity { get; init; }
}
