namespace Squeeze.Runtime;

/// <summary>The input of a group of linear layers that read the same activations.</summary>
public enum LinearInput
{
    /// <summary>Input of attn_q, attn_k and attn_v (after attn_norm): [tokens, dim].</summary>
    Attention,

    /// <summary>Input of attn_output (the attention's weighted values): [tokens, qDim].</summary>
    AttentionOutput,

    /// <summary>Input of ffn_gate and ffn_up (after ffn_norm): [tokens, dim].</summary>
    FeedForward,

    /// <summary>Input of ffn_down (silu(gate) · up): [tokens, hidden].</summary>
    FeedForwardDown,

    /// <summary>Input of the routed experts' ffn_gate_exps and ffn_up_exps: per expert, the rows (after ffn_norm) of the
    /// tokens routed to it ([routed tokens, dim]), through <see cref="IActivationObserver.ObserveExpert"/>.</summary>
    ExpertFeedForward,

    /// <summary>Input of the routed experts' ffn_down_exps: per expert, silu(gate) · up of the tokens routed to it
    /// ([routed tokens, expertHidden]), through <see cref="IActivationObserver.ObserveExpert"/>.</summary>
    ExpertFeedForwardDown,

    /// <summary>Input of the shared expert's ffn_down_shexp (Qwen2-MoE): [tokens, sharedHidden].</summary>
    SharedExpertDown,

    /// <summary>Input of the output classifier (after output_norm): [tokens, dim]; <c>layer</c> is −1.</summary>
    Output,
}

/// <summary>Sees the activations that enter each linear layer during a forward pass (calibration statistics are
/// collected this way). Called on the forward pass's thread, once per batch and input.</summary>
public interface IActivationObserver
{
    /// <summary><paramref name="input"/> is [tokens, width], row-major, valid only during the call.</summary>
    void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens);

    /// <summary>The input of routed expert <paramref name="expert"/> of <paramref name="layer"/>: only the rows of the
    /// tokens routed to it, [tokens, width] row-major, valid only during the call; <paramref name="kind"/> is
    /// <see cref="LinearInput.ExpertFeedForward"/> or <see cref="LinearInput.ExpertFeedForwardDown"/>.</summary>
    void ObserveExpert(int layer, LinearInput kind, int expert, ReadOnlySpan<float> input, int tokens);
}
