namespace Squeeze.Models;

/// <summary>How rotary position embedding pairs up the values of a head.</summary>
public enum RopeStyle
{
    /// <summary>Meta's order: pairs (0,1), (2,3), … (llama2.c, GGUF llama).</summary>
    Interleaved,

    /// <summary>GPT-NeoX / Hugging Face order: pairs (i, i + headDim/2) (GGUF qwen2, qwen3).</summary>
    Neox,
}

/// <summary>The activation of the feed-forward gate: <c>h = act(gate) · up</c>.</summary>
public enum FeedForwardActivation
{
    /// <summary>SiLU, x·σ(x) (SwiGLU: Llama, Mistral, Qwen).</summary>
    Silu,

    /// <summary>GELU in its tanh approximation, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (GeGLU: Gemma).</summary>
    GeluTanh,
}

/// <summary>Hyperparameters of a Llama-family decoder. Tensor names follow llama.cpp's GGUF convention
/// (<c>token_embd.weight</c>, <c>blk.N.attn_q.weight</c> …) whatever the source file was.</summary>
public sealed record ModelConfig
{
    /// <summary>GGUF architecture name: "llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mistral3" …</summary>
    public required string Architecture { get; init; }

    /// <summary>Model width (embedding length).</summary>
    public required int Dim { get; init; }

    /// <summary>Feed-forward width.</summary>
    public required int HiddenDim { get; init; }

    /// <summary>Number of transformer blocks.</summary>
    public required int LayerCount { get; init; }

    /// <summary>Number of query heads.</summary>
    public required int HeadCount { get; init; }

    /// <summary>Number of key/value heads; fewer than <see cref="HeadCount"/> under grouped-query attention.</summary>
    public required int KvHeadCount { get; init; }

    /// <summary>Values per attention head; usually Dim / HeadCount (Qwen3 may differ).</summary>
    public required int HeadDim { get; init; }

    /// <summary>Number of tokens: rows of the token embedding and of the output classifier.</summary>
    public required int VocabSize { get; init; }

    /// <summary>The context length the model was trained with.</summary>
    public required int ContextLength { get; init; }

    /// <summary>Base of the rotary embedding's frequencies (10000 for Llama 2).</summary>
    public float RopeTheta { get; init; } = 10000f;

    private readonly int? ropeDimensions;

    /// <summary>Number of values per head that rotate (GGUF <c>rope.dimension_count</c>): the first ones of each head
    /// (Phi-3's <c>partial_rotary_factor</c>); the head's other values pass unrotated. <see cref="HeadDim"/> unless set.</summary>
    public int RopeDimensions
    {
        get => ropeDimensions ?? HeadDim;
        init => ropeDimensions = value;
    }

    /// <summary>How the rotary embedding pairs up a head's values.</summary>
    public RopeStyle RopeStyle { get; init; } = RopeStyle.Interleaved;

    /// <summary>Linear rotary scaling (GGUF <c>rope.scaling.type</c> "linear", <c>rope.scaling.factor</c>): positions are
    /// divided by this factor; 1 means none.</summary>
    public float RopeScalingFactor { get; init; } = 1f;

    /// <summary>Llama 3 rotary scaling: the model holds <see cref="TensorNames.RopeFrequencies"/> ([HeadDim / 2]), by
    /// which each pair's rotary frequency is divided, as llama.cpp stores and applies it (<see cref="RopeScaling.Llama3Factors"/>).</summary>
    public bool RopeFrequencyFactors { get; init; }

    /// <summary>YaRN rotary scaling (GGUF <c>rope.scaling.type</c> "yarn", llama.cpp's <c>ext_factor</c> 1): pair i's
    /// angle mixes the one divided by <see cref="RopeScalingFactor"/> and the unscaled one by a ramp between the
    /// correction dimensions of <see cref="YarnBetaFast"/> and <see cref="YarnBetaSlow"/> rotations over
    /// <see cref="RopeOriginalContext"/> positions, and cos and sin are multiplied by 1 + 0.1·ln(factor).</summary>
    public bool Yarn { get; init; }

    /// <summary>YaRN's β_fast: rotations over the original context above which a pair keeps its frequency.</summary>
    public float YarnBetaFast { get; init; } = 32f;

    /// <summary>YaRN's β_slow: rotations over the original context below which a pair is fully interpolated.</summary>
    public float YarnBetaSlow { get; init; } = 1f;

    /// <summary>YaRN's <c>mscale_all_dim</c> (GGUF <c>rope.scaling.yarn_log_multiplier</c>; Ministral 3's), with <c>mscale</c>
    /// 1: cos and sin are multiplied by (1 + 0.1·ln s) / (1 + 0.1·m·ln s) for factor s, transformers' and llama.cpp's
    /// get_mscale(s, 1) / get_mscale(s, m), instead of 1 + 0.1·ln s; 0 means none.</summary>
    public float YarnLogMultiplier { get; init; }

    /// <summary>Llama 4's attention temperature (GGUF <c>attention.temperature_scale</c>; Ministral 3's
    /// <c>llama_4_scaling_beta</c>): after the rotation, the queries at position p are multiplied by
    /// 1 + β·ln(1 + ⌊p / <see cref="RopeOriginalContext"/>⌋); 0 means none.</summary>
    public float AttentionTemperatureScale { get; init; }

    /// <summary>Phi-3's long-rope scaling: the model holds <see cref="TensorNames.RopeFactorsLong"/> and
    /// <see cref="TensorNames.RopeFactorsShort"/> ([RopeDimensions / 2]), per-pair frequency divisors; as in llama.cpp,
    /// a runtime whose context exceeds <see cref="RopeOriginalContext"/> divides by the long ones, otherwise by the short ones.</summary>
    public bool LongRope { get; init; }

    /// <summary>The context the rotary scaling starts from (GGUF <c>rope.scaling.original_context_length</c>; Hugging Face
    /// <c>original_max_position_embeddings</c>): YaRN's correction range, long rope's choice of factors; 0 means none given.</summary>
    public int RopeOriginalContext { get; init; }

    /// <summary>Multiplies every rotary cos and sin (GGUF <c>rope.scaling.attn_factor</c>; Phi-3's long-rope attention
    /// factor √(1 + ln(context / original) / ln(original)), as llama.cpp's converter computes it); 1 means none.</summary>
    public float RopeAttentionFactor { get; init; } = 1f;

    /// <summary>A sliding window config.json declares that the model does not run with (Phi-3's, which llama.cpp's phi3
    /// disables, and so does Squeeze); kept to be written back as llama.cpp's converter writes it. 0 means none.</summary>
    public int DeclaredSlidingWindow { get; init; }

    /// <summary>Epsilon added to the mean square in every RMSNorm.</summary>
    public float RmsNormEps { get; init; } = 1e-5f;

    /// <summary>True when the output classifier reuses <c>token_embd.weight</c> (no <c>output.weight</c>).</summary>
    public bool TiedEmbeddings { get; init; }

    /// <summary>Qwen2: q, k and v projections carry biases (<c>blk.N.attn_q.bias</c> …).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Qwen3: RMSNorm on each head of q and k (<c>blk.N.attn_q_norm.weight</c>).</summary>
    public bool QkNorm { get; init; }

    /// <summary>Sliding-window attention: a query at position p sees the keys at positions p − SlidingWindow + 1 … p
    /// on the layers <see cref="IsSlidingLayer"/> names (llama.cpp's standard window); 0 means every layer sees every
    /// earlier position.</summary>
    public int SlidingWindow { get; init; }

    /// <summary>Which layers slide (llama.cpp's <c>set_swa_pattern</c>): 0 means every layer; n means every layer but
    /// each n-th (layers n − 1, 2n − 1 … are global): 2 for Gemma 2, 6 for Gemma 3.</summary>
    public int SlidingWindowPeriod { get; init; }

    /// <summary>Qwen's <c>max_window_layers</c>: the layers before this one attend to every earlier position, the others
    /// slide when <see cref="SlidingWindow"/> is set (with <c>use_sliding_window</c>); 0 means every layer may slide.</summary>
    public int FirstSlidingLayer { get; init; }

    /// <summary>Gemma 3: the rotary base of the sliding layers, which rotate without <see cref="RopeScalingFactor"/>;
    /// null means every layer rotates alike.</summary>
    public float? SlidingRopeTheta { get; init; }

    /// <summary>The feed-forward gate's activation.</summary>
    public FeedForwardActivation Activation { get; init; } = FeedForwardActivation.Silu;

    /// <summary>Gemma: token embeddings are multiplied by √<see cref="Dim"/> (in f32, as llama.cpp) before the first layer.</summary>
    public bool ScaleEmbedding { get; init; }

    /// <summary>Gemma 2 and 3: RMSNorm on the outputs of the attention and of the feed-forward before they join the
    /// residual stream (<c>blk.N.post_attention_norm.weight</c>, <c>blk.N.post_ffw_norm.weight</c>).</summary>
    public bool PostNorms { get; init; }

    /// <summary>Gemma: queries are multiplied by this factor before the attention, which then scales by 1
    /// (<c>query_pre_attn_scalar</c>^−½); null means the attention scales by 1/√<see cref="HeadDim"/>.</summary>
    public float? QueryScale { get; init; }

    /// <summary>Gemma 2: attention scores s become c·tanh(s / c) before the softmax; 0 means no capping.</summary>
    public float AttentionSoftCap { get; init; }

    /// <summary>Gemma 2: logits z become c·tanh(z / c); 0 means no capping.</summary>
    public float FinalLogitSoftCap { get; init; }

    /// <summary>Mixture of experts: the number of routed experts of every layer's feed-forward (GGUF
    /// <c>expert_count</c>); 0 means a dense feed-forward (<c>ffn_gate</c>, <c>ffn_up</c>, <c>ffn_down</c>).</summary>
    public int ExpertCount { get; init; }

    /// <summary>Experts each token is routed to (GGUF <c>expert_used_count</c>): the top k of the router's softmax.</summary>
    public int ExpertUsedCount { get; init; }

    /// <summary>Width of one routed expert's feed-forward (GGUF <c>expert_feed_forward_length</c>; Mixtral's is
    /// <see cref="HiddenDim"/>).</summary>
    public int ExpertHiddenDim { get; init; }

    /// <summary>Width of the shared expert every token runs, gated per token by σ(<c>ffn_gate_inp_shexp</c> · x) (Qwen2-MoE,
    /// GGUF <c>expert_shared_feed_forward_length</c>); 0 means none.</summary>
    public int SharedExpertHiddenDim { get; init; }

    /// <summary>The top-k routing weights are divided by their sum (Mixtral, Qwen3-MoE); otherwise they are the softmax
    /// probabilities over all experts as they are (Qwen2-MoE), as llama.cpp's architectures route.</summary>
    public bool NormalizeExpertWeights { get; init; }

    /// <summary>True for a mixture-of-experts feed-forward.</summary>
    public bool IsMixtureOfExperts => ExpertCount > 0;

    /// <summary>The options beyond Llama's and Qwen's that shape the forward pass, as text; empty when all are at their
    /// defaults (so the fingerprints and identities of Llama and Qwen models do not change).</summary>
    public string ForwardVariant
    {
        get
        {
            return ExpertCount == 0 ? DenseVariant : FormattableString.Invariant(
                $"experts={ExpertCount}/{ExpertUsedCount}/{ExpertHiddenDim}/{SharedExpertHiddenDim}/{NormalizeExpertWeights}|{DenseVariant}");
        }
    }

    private string DenseVariant
    {
        get
        {
            // The rotary options of Phi-3 and YaRN come after Gemma's, written only when set, so no other model's text changes.
            // Ministral 3's YaRN multiplier and query temperature come last, written only when set.
            string ministral = YarnLogMultiplier == 0 && AttentionTemperatureScale == 0 ? ""
                : FormattableString.Invariant($"|yarnLogMul={YarnLogMultiplier:R}|attnTemp={AttentionTemperatureScale:R}");
            string rope = ropeDimensions is null && !Yarn && !LongRope && RopeOriginalContext == 0 && RopeAttentionFactor == 1f && ministral.Length == 0 ? ""
                : FormattableString.Invariant(
                    $"|ropeDims={RopeDimensions}|yarn={Yarn}/{RopeScalingFactor:R}/{YarnBetaFast:R}/{YarnBetaSlow:R}|longRope={LongRope}|ropeOriginal={RopeOriginalContext}|ropeAttn={RopeAttentionFactor:R}") + ministral;
            if (SlidingWindow == 0 && SlidingRopeTheta is null && Activation == FeedForwardActivation.Silu && !ScaleEmbedding && !PostNorms
                && QueryScale is null && AttentionSoftCap == 0 && FinalLogitSoftCap == 0)
                return rope;
            // The first sliding layer is written only when set, so no other model's text changes.
            string firstSliding = FirstSlidingLayer == 0 ? "" : FormattableString.Invariant($"/from{FirstSlidingLayer}");
            return FormattableString.Invariant(
                $"swa={SlidingWindow}/{SlidingWindowPeriod}{firstSliding}|swaTheta={SlidingRopeTheta}|act={Activation}|embScale={ScaleEmbedding}|postNorms={PostNorms}|qScale={QueryScale:R}|attnCap={AttentionSoftCap:R}|logitCap={FinalLogitSoftCap:R}") + rope;
        }
    }

    /// <summary>True when layer <paramref name="layer"/> attends within <see cref="SlidingWindow"/> positions.</summary>
    public bool IsSlidingLayer(int layer)
        => SlidingWindow > 0 && layer >= FirstSlidingLayer && (SlidingWindowPeriod == 0 || layer % SlidingWindowPeriod < SlidingWindowPeriod - 1);

    /// <summary>Width of the key and value projections.</summary>
    public int KvDim => KvHeadCount * HeadDim;

    /// <summary>Width of the query projection.</summary>
    public int QDim => HeadCount * HeadDim;
}
