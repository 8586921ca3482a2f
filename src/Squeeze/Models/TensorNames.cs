namespace Squeeze.Models;

/// <summary>llama.cpp's GGUF tensor names, used for every model whatever file it came from.</summary>
public static class TensorNames
{
    /// <summary>Token embedding, [vocabulary, dim].</summary>
    public const string TokenEmbedding = "token_embd.weight";
    /// <summary>RMSNorm weight before the output classifier, [dim].</summary>
    public const string OutputNorm = "output_norm.weight";
    /// <summary>Output classifier, [vocabulary, dim]; absent when the embeddings are tied.</summary>
    public const string Output = "output.weight";

    /// <summary>Per-pair divisors of the rotary frequencies (Llama 3's rope scaling), [headDim / 2].</summary>
    public const string RopeFrequencies = "rope_freqs.weight";

    /// <summary>Phi-3's per-pair divisors of the rotary frequencies for contexts beyond the original one, [ropeDimensions / 2].</summary>
    public const string RopeFactorsLong = "rope_factors_long.weight";

    /// <summary>Phi-3's per-pair divisors of the rotary frequencies within the original context, [ropeDimensions / 2].</summary>
    public const string RopeFactorsShort = "rope_factors_short.weight";

    /// <summary>RMSNorm weight before layer <paramref name="layer"/>'s attention, [dim].</summary>
    public static string AttentionNorm(int layer) => $"blk.{layer}.attn_norm.weight";

    /// <summary>Query projection of layer <paramref name="layer"/>, [heads × headDim, dim].</summary>
    public static string Query(int layer) => $"blk.{layer}.attn_q.weight";

    /// <summary>Key projection of layer <paramref name="layer"/>, [kvHeads × headDim, dim].</summary>
    public static string Key(int layer) => $"blk.{layer}.attn_k.weight";

    /// <summary>Value projection of layer <paramref name="layer"/>, [kvHeads × headDim, dim].</summary>
    public static string Value(int layer) => $"blk.{layer}.attn_v.weight";

    /// <summary>Phi-3's fused q, k and v projection of layer <paramref name="layer"/> as GGUF stores it, [qDim + 2·kvDim, dim]
    /// (a model holds its three parts as <see cref="Query"/>, <see cref="Key"/> and <see cref="Value"/>).</summary>
    public static string QueryKeyValue(int layer) => $"blk.{layer}.attn_qkv.weight";

    /// <summary>Query bias of layer <paramref name="layer"/> (Qwen2).</summary>
    public static string QueryBias(int layer) => $"blk.{layer}.attn_q.bias";

    /// <summary>Key bias of layer <paramref name="layer"/> (Qwen2).</summary>
    public static string KeyBias(int layer) => $"blk.{layer}.attn_k.bias";

    /// <summary>Value bias of layer <paramref name="layer"/> (Qwen2).</summary>
    public static string ValueBias(int layer) => $"blk.{layer}.attn_v.bias";

    /// <summary>Per-head RMSNorm weight on the queries of layer <paramref name="layer"/> (Qwen3), [headDim].</summary>
    public static string QueryNorm(int layer) => $"blk.{layer}.attn_q_norm.weight";

    /// <summary>Per-head RMSNorm weight on the keys of layer <paramref name="layer"/> (Qwen3), [headDim].</summary>
    public static string KeyNorm(int layer) => $"blk.{layer}.attn_k_norm.weight";

    /// <summary>Attention output projection of layer <paramref name="layer"/>, [dim, heads × headDim].</summary>
    public static string AttentionOutput(int layer) => $"blk.{layer}.attn_output.weight";

    /// <summary>RMSNorm weight before layer <paramref name="layer"/>'s feed-forward, [dim].</summary>
    public static string FeedForwardNorm(int layer) => $"blk.{layer}.ffn_norm.weight";

    /// <summary>RMSNorm weight on the attention's output of layer <paramref name="layer"/> (Gemma 2 and 3), [dim].</summary>
    public static string PostAttentionNorm(int layer) => $"blk.{layer}.post_attention_norm.weight";

    /// <summary>RMSNorm weight on the feed-forward's output of layer <paramref name="layer"/> (Gemma 2 and 3), [dim].</summary>
    public static string PostFeedForwardNorm(int layer) => $"blk.{layer}.post_ffw_norm.weight";

    /// <summary>Feed-forward gate projection of layer <paramref name="layer"/> (SiLU side), [hidden, dim].</summary>
    public static string Gate(int layer) => $"blk.{layer}.ffn_gate.weight";

    /// <summary>Feed-forward up projection of layer <paramref name="layer"/>, [hidden, dim].</summary>
    public static string Up(int layer) => $"blk.{layer}.ffn_up.weight";

    /// <summary>Feed-forward down projection of layer <paramref name="layer"/>, [dim, hidden].</summary>
    public static string Down(int layer) => $"blk.{layer}.ffn_down.weight";

    /// <summary>Router of layer <paramref name="layer"/>'s experts, [experts, dim] (kept in F32 by every mix, as llama.cpp).</summary>
    public static string ExpertRouter(int layer) => $"blk.{layer}.ffn_gate_inp.weight";

    /// <summary>Gate projections of layer <paramref name="layer"/>'s routed experts stacked, [experts, expertHidden, dim].</summary>
    public static string GateExperts(int layer) => $"blk.{layer}.ffn_gate_exps.weight";

    /// <summary>Up projections of layer <paramref name="layer"/>'s routed experts stacked, [experts, expertHidden, dim].</summary>
    public static string UpExperts(int layer) => $"blk.{layer}.ffn_up_exps.weight";

    /// <summary>Down projections of layer <paramref name="layer"/>'s routed experts stacked, [experts, dim, expertHidden].</summary>
    public static string DownExperts(int layer) => $"blk.{layer}.ffn_down_exps.weight";

    /// <summary>Gate projection of layer <paramref name="layer"/>'s shared expert (Qwen2-MoE), [sharedHidden, dim].</summary>
    public static string GateShared(int layer) => $"blk.{layer}.ffn_gate_shexp.weight";

    /// <summary>Up projection of layer <paramref name="layer"/>'s shared expert, [sharedHidden, dim].</summary>
    public static string UpShared(int layer) => $"blk.{layer}.ffn_up_shexp.weight";

    /// <summary>Down projection of layer <paramref name="layer"/>'s shared expert, [dim, sharedHidden].</summary>
    public static string DownShared(int layer) => $"blk.{layer}.ffn_down_shexp.weight";

    /// <summary>The shared expert's gate of layer <paramref name="layer"/>: its output is scaled by σ(this · x), [dim].</summary>
    public static string SharedExpertGate(int layer) => $"blk.{layer}.ffn_gate_inp_shexp.weight";

    /// <summary>True for the stacked 3-D tensors of routed experts (<c>ffn_*_exps</c>).</summary>
    public static bool IsExperts(string name) => name.EndsWith("_exps.weight", StringComparison.Ordinal);
}
