using System.Globalization;
using Squeeze.Models;

namespace Squeeze.Formats.HuggingFace;

/// <summary>Maps Hugging Face transformers tensor names (<c>model.layers.3.self_attn.q_proj.weight</c>) to llama.cpp's
/// GGUF names (<c>blk.3.attn_q.weight</c>) and back.</summary>
public static class HuggingFaceNames
{
    private const string LayerPrefix = "model.layers.";
    private const string BlockPrefix = "blk.";

    // Hugging Face per-layer suffix → GGUF per-layer suffix.
    private static readonly (string Hf, string Gguf)[] LayerSuffixes =
    [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.q_proj.bias", "attn_q.bias"),
        ("self_attn.k_proj.bias", "attn_k.bias"),
        ("self_attn.v_proj.bias", "attn_v.bias"),
        ("self_attn.q_norm.weight", "attn_q_norm.weight"),
        ("self_attn.k_norm.weight", "attn_k_norm.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ];

    // Gemma 2 and 3 norm both sides of each sub-layer: their names mean other GGUF tensors than Llama's.
    private static readonly (string Hf, string Gguf)[] PostNormSuffixes =
    [
        ("post_attention_layernorm.weight", "post_attention_norm.weight"),
        ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
        ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
    ];

    private static readonly (string Hf, string Gguf)[] Globals =
    [
        ("model.embed_tokens.weight", TensorNames.TokenEmbedding),
        ("model.norm.weight", TensorNames.OutputNorm),
        ("lm_head.weight", TensorNames.Output),
    ];

    /// <summary>True for stored tensors that carry no weights and are skipped on load (old checkpoints' rotary
    /// <c>inv_freq</c> buffers).</summary>
    public static bool IsIgnored(string huggingFaceName)
        => huggingFaceName.StartsWith(LayerPrefix, StringComparison.Ordinal)
           && huggingFaceName.EndsWith(".self_attn.rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>The GGUF name of a Hugging Face tensor name, or false when the name is not one Squeeze knows.</summary>
    public static bool TryToGguf(string huggingFaceName, out string ggufName) => TryToGguf(huggingFaceName, postNorms: false, out ggufName);

    /// <summary>The GGUF name of a Hugging Face tensor name of a model with norms on its sub-layers' outputs
    /// (<paramref name="postNorms"/>: Gemma 2 and 3, whose <c>post_attention_layernorm</c> is
    /// <c>post_attention_norm</c> and <c>pre_feedforward_layernorm</c> is <c>ffn_norm</c>), or false when unknown.</summary>
    public static bool TryToGguf(string huggingFaceName, bool postNorms, out string ggufName)
    {
        ArgumentNullException.ThrowIfNull(huggingFaceName);
        foreach (var (hf, gguf) in Globals)
        {
            if (huggingFaceName == hf)
            {
                ggufName = gguf;
                return true;
            }
        }
        if (TrySplitLayer(huggingFaceName, LayerPrefix, out int layer, out string suffix))
        {
            foreach (var (hf, gguf) in postNorms ? PostNormSuffixes.Concat(LayerSuffixes) : LayerSuffixes)
            {
                if (suffix == hf)
                {
                    ggufName = $"{BlockPrefix}{layer}.{gguf}";
                    return true;
                }
            }
        }
        ggufName = "";
        return false;
    }

    /// <summary>The Hugging Face name of a GGUF tensor name, or false when it has none.</summary>
    public static bool TryToHuggingFace(string ggufName, out string huggingFaceName) => TryToHuggingFace(ggufName, postNorms: false, out huggingFaceName);

    /// <summary>The Hugging Face name of a GGUF tensor name, for a model with or without norms on its sub-layers'
    /// outputs (<paramref name="postNorms"/>), or false when it has none.</summary>
    public static bool TryToHuggingFace(string ggufName, bool postNorms, out string huggingFaceName)
    {
        ArgumentNullException.ThrowIfNull(ggufName);
        foreach (var (hf, gguf) in Globals)
        {
            if (ggufName == gguf)
            {
                huggingFaceName = hf;
                return true;
            }
        }
        if (TrySplitLayer(ggufName, BlockPrefix, out int layer, out string suffix))
        {
            foreach (var (hf, gguf) in postNorms ? PostNormSuffixes.Concat(LayerSuffixes) : LayerSuffixes)
            {
                if (suffix == gguf)
                {
                    huggingFaceName = $"{LayerPrefix}{layer}.{hf}";
                    return true;
                }
            }
        }
        huggingFaceName = "";
        return false;
    }

    // Mixture-of-experts layers' Hugging Face suffixes (Mixtral's block_sparse_moe, Qwen-MoE's mlp) → GGUF suffix; the
    // routed experts' ("experts.{E}." + suffix) are stacked into one 3-D GGUF tensor per projection, as llama.cpp's
    // converter stacks them.
    private static readonly (string Hf, string Gguf)[] MixtureSuffixes =
    [
        ("block_sparse_moe.gate.weight", "ffn_gate_inp.weight"),
        ("mlp.gate.weight", "ffn_gate_inp.weight"),
        ("mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"),
        ("mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"),
        ("mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"),
        ("mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"),
    ];

    private static readonly (string Prefix, string Hf, string Gguf)[] ExpertSuffixes =
    [
        ("block_sparse_moe.experts.", "w1.weight", "ffn_gate_exps.weight"),
        ("block_sparse_moe.experts.", "w2.weight", "ffn_down_exps.weight"),
        ("block_sparse_moe.experts.", "w3.weight", "ffn_up_exps.weight"),
        ("mlp.experts.", "gate_proj.weight", "ffn_gate_exps.weight"),
        ("mlp.experts.", "up_proj.weight", "ffn_up_exps.weight"),
        ("mlp.experts.", "down_proj.weight", "ffn_down_exps.weight"),
    ];

    /// <summary>The GGUF name of a mixture-of-experts layer's Hugging Face tensor (<c>model.layers.3.mlp.gate.weight</c> →
    /// <c>blk.3.ffn_gate_inp.weight</c>), with the routed expert it belongs to (<c>…experts.5.w1.weight</c> →
    /// <c>blk.3.ffn_gate_exps.weight</c>, expert 5), or −1 for the router and the shared expert; false for other names.</summary>
    public static bool TryToGgufMixture(string huggingFaceName, out string ggufName, out int expert)
    {
        ArgumentNullException.ThrowIfNull(huggingFaceName);
        ggufName = "";
        expert = -1;
        if (!TrySplitLayer(huggingFaceName, LayerPrefix, out int layer, out string suffix))
            return false;
        foreach (var (hf, gguf) in MixtureSuffixes)
        {
            if (suffix == hf)
            {
                ggufName = $"{BlockPrefix}{layer}.{gguf}";
                return true;
            }
        }
        foreach (var (prefix, hf, gguf) in ExpertSuffixes)
        {
            if (TrySplitLayer(suffix, prefix, out int e, out string rest) && rest == hf)
            {
                ggufName = $"{BlockPrefix}{layer}.{gguf}";
                expert = e;
                return true;
            }
        }
        return false;
    }

    /// <summary>The Hugging Face name of a mixture-of-experts tensor of a Mixtral (<paramref name="mixtral"/>) or Qwen-MoE
    /// checkpoint: of routed expert <paramref name="expert"/> for a stacked <c>ffn_*_exps</c> name, else of the router or
    /// shared-expert tensor; false for other names.</summary>
    public static bool TryToHuggingFaceMixture(string ggufName, bool mixtral, int expert, out string huggingFaceName)
    {
        ArgumentNullException.ThrowIfNull(ggufName);
        huggingFaceName = "";
        if (!TrySplitLayer(ggufName, BlockPrefix, out int layer, out string suffix))
            return false;
        string family = mixtral ? "block_sparse_moe." : "mlp.";
        foreach (var (prefix, hf, gguf) in ExpertSuffixes)
        {
            if (suffix == gguf && prefix.StartsWith(family, StringComparison.Ordinal))
            {
                huggingFaceName = $"{LayerPrefix}{layer}.{prefix}{expert}.{hf}";
                return true;
            }
        }
        foreach (var (hf, gguf) in MixtureSuffixes)
        {
            if (suffix == gguf && hf.StartsWith(family, StringComparison.Ordinal))
            {
                huggingFaceName = $"{LayerPrefix}{layer}.{hf}";
                return true;
            }
        }
        return false;
    }

    // A multimodal checkpoint's (Gemma3ForConditionalGeneration, Mistral3ForConditionalGeneration) language model under
    // transformers' two namings: before 4.52 "language_model.model.*" and "language_model.lm_head.weight", since then
    // "model.language_model.*" and a top-level "lm_head.weight"; the image part beside it in either.
    private static readonly (string Old, string New, string Text)[] LanguageModelPrefixes =
    [
        ("language_model.model.", "model.language_model.", "model."),
        ("language_model.lm_head.", "lm_head.", "lm_head."),
    ];

    private static readonly string[] ImagePrefixes = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."];

    /// <summary>True for a multimodal checkpoint's vision tower and multi-modal projector tensors (under either naming),
    /// which are not part of the language model.</summary>
    public static bool IsImagePart(string huggingFaceName)
        => ImagePrefixes.Any(p => huggingFaceName.StartsWith(p, StringComparison.Ordinal));

    /// <summary>The text model's name of a multimodal checkpoint's language-model tensor
    /// (<c>language_model.model.layers.3.mlp.up_proj.weight</c> or <c>model.language_model.layers.3.mlp.up_proj.weight</c>
    /// → <c>model.layers.3.mlp.up_proj.weight</c>), with the naming it is in (<paramref name="newNames"/>: transformers
    /// 4.52's <c>model.language_model.</c>; null for <c>lm_head.weight</c>, which one naming shares with a text model);
    /// false for other names.</summary>
    public static bool TryToTextModel(string huggingFaceName, out string textName, out bool? newNames)
    {
        ArgumentNullException.ThrowIfNull(huggingFaceName);
        foreach (var (old, @new, text) in LanguageModelPrefixes)
        {
            if (huggingFaceName.StartsWith(old, StringComparison.Ordinal))
            {
                textName = text + huggingFaceName[old.Length..];
                newNames = false;
                return true;
            }
            if (huggingFaceName.StartsWith(@new, StringComparison.Ordinal))
            {
                textName = text + huggingFaceName[@new.Length..];
                newNames = text == @new ? null : true;
                return true;
            }
        }
        textName = "";
        newNames = null;
        return false;
    }

    /// <summary>The multimodal checkpoint's name of a text model's tensor name, in the old or new
    /// (<paramref name="newNames"/>) naming of <see cref="TryToTextModel"/>.</summary>
    public static string ToMultimodal(string textName, bool newNames)
    {
        ArgumentNullException.ThrowIfNull(textName);
        foreach (var (old, @new, text) in LanguageModelPrefixes)
        {
            if (textName.StartsWith(text, StringComparison.Ordinal))
                return (newNames ? @new : old) + textName[text.Length..];
        }
        throw new ArgumentException($"'{textName}' is not a text model's tensor name", nameof(textName));
    }

    /// <summary>Splits "prefix{N}.rest" with N a canonical non-negative decimal (no sign, no leading zeros).</summary>
    private static bool TrySplitLayer(string name, string prefix, out int layer, out string suffix)
    {
        layer = -1;
        suffix = "";
        if (!name.StartsWith(prefix, StringComparison.Ordinal))
            return false;
        int dot = name.IndexOf('.', prefix.Length);
        if (dot < 0)
            return false;
        var digits = name.AsSpan(prefix.Length, dot - prefix.Length);
        if (!int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out layer)
            || !digits.SequenceEqual(layer.ToString(CultureInfo.InvariantCulture)))
            return false;
        suffix = name[(dot + 1)..];
        return true;
    }
}
