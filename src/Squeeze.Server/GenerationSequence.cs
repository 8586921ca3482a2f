using System.Threading.Channels;
using Squeeze.Generation;
using Squeeze.Tokenizers;

namespace Squeeze.Server;

/// <summary>How a request samples: the OpenAI API's parameters that change the next-token choice.</summary>
internal sealed record SamplingParameters
{
    /// <summary>Temperature and top-p and seed, as <see cref="Sampler"/> takes them.</summary>
    public required SamplingOptions Sampler { get; init; }

    /// <summary>OpenAI's presence penalty: subtracted once from the logit of every token already generated.</summary>
    public float PresencePenalty { get; init; }

    /// <summary>OpenAI's frequency penalty: subtracted from a token's logit once per time it was generated.</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>Added to the logits of these token ids.</summary>
    public IReadOnlyDictionary<int, float> LogitBias { get; init; } = new Dictionary<int, float>();

    /// <summary>Whether the logits are changed before sampling at all.</summary>
    public bool AdjustsLogits => PresencePenalty != 0 || FrequencyPenalty != 0 || LogitBias.Count > 0;
}

/// <summary>
/// A request's generation: the prompt, then tokens sampled as <see cref="Generator"/> samples them (the same sampler on
/// the same logits, so the same seed gives what <c>squeeze generate</c> gives), until an end-of-generation token,
/// <c>max_tokens</c> or the end of the context. Each sampled token goes to <see cref="Tokens"/> for the request to write
/// out, and to a <see cref="Follower"/> on another model when one scores it.
/// </summary>
internal sealed class GenerationSequence : Sequence
{
    private readonly ModelWorker worker;
    private readonly Sampler sampler;
    private readonly SamplingParameters sampling;
    private readonly int maxTokens;
    private readonly Vocabulary vocabulary;
    private readonly Channel<int> tokens = Channel.CreateUnbounded<int>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly Dictionary<int, int> counts = [];
    private float[] scratch = [];

    public GenerationSequence(ModelWorker worker, int[] prompt, SamplingParameters sampling, int maxTokens, TimeSpan timeLimit, CancellationToken requestAborted)
        : base(prompt, timeLimit, requestAborted)
    {
        this.worker = worker;
        this.sampling = sampling;
        this.maxTokens = maxTokens;
        sampler = new Sampler(sampling.Sampler);
        vocabulary = worker.Model.Vocabulary;
    }

    /// <summary>The sampled tokens, in order; completed when the sequence finishes.</summary>
    public ChannelReader<int> Tokens => tokens.Reader;

    /// <summary>Tokens sampled so far.</summary>
    public int Generated { get; private set; }

    /// <summary>A sequence on another model that runs the same tokens and scores them (the comparison page), or null.</summary>
    public FollowerSequence? Follower { get; set; }

    /// <summary>Sees the logits at each position where this sequence samples, before the token is chosen (the comparison
    /// page's divergence), or null.</summary>
    public Action<int, ReadOnlySpan<float>>? LogitsObserver { get; set; }

    /// <inheritdoc/>
    public override FinishReason OnLogits(ReadOnlySpan<float> logits, int position)
    {
        LogitsObserver?.Invoke(position, logits);
        if (sampling.AdjustsLogits)
        {
            if (scratch.Length != logits.Length)
                scratch = new float[logits.Length];
            logits.CopyTo(scratch);
            foreach (var (id, bias) in sampling.LogitBias)
                scratch[id] += bias;
            foreach (var (id, count) in counts)
                scratch[id] -= count * sampling.FrequencyPenalty + sampling.PresencePenalty;
            logits = scratch;
        }
        int next = sampler.Sample(logits);
        if (vocabulary.EndsGeneration(next))
            return FinishReason.Stop;
        Generated++;
        counts[next] = counts.GetValueOrDefault(next) + 1;
        worker.CountGenerated();
        tokens.Writer.TryWrite(next);
        Follower?.Follow(next);
        if (Generated >= maxTokens || position + 1 >= worker.ContextLength)
            return FinishReason.Length;
        Feed.Enqueue(next);
        return FinishReason.None;
    }

    /// <inheritdoc/>
    protected override void OnFinished(FinishReason reason)
    {
        tokens.Writer.TryComplete();
        Follower?.SourceFinished(Generated);
    }
}
