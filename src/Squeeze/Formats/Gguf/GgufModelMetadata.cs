using Squeeze.Models;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.Gguf;

/// <summary>
/// The metadata llama.cpp needs to run a model: <c>general.*</c>, the architecture's hyperparameters
/// (<c>llama.*</c>, <c>qwen2.*</c> …) and the vocabulary as <c>tokenizer.ggml.*</c>, with the value types
/// llama.cpp's own converters write.
/// </summary>
public static class GgufModelMetadata
{
    /// <summary>ggml's quantization format version written by current llama.cpp.</summary>
    public const uint QuantizationVersion = 2;

    /// <summary>Ordered key-value pairs for <paramref name="model"/>. <paramref name="fileType"/> is llama.cpp's
    /// <c>llama_ftype</c> of the mix (0 all F32, 1 mostly F16, 7 Q8_0, 15 Q4_K_M …).</summary>
    /// <exception cref="NotSupportedException">The model has an option llama.cpp's architecture cannot express (a Gemma
    /// query scale, window pattern or cap other than the ones llama.cpp derives).</exception>
    public static IReadOnlyList<KeyValuePair<string, GgufValue>> Build(Model model, uint fileType, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        string arch = c.Architecture;
        var entries = new List<KeyValuePair<string, GgufValue>>();
        void Add(string key, GgufValue value) => entries.Add(new(key, value));
        void U32(string key, long value) => Add(key, GgufValue.Scalar(GgufValueType.UInt32, checked((uint)value)));
        void F32(string key, float value) => Add(key, GgufValue.Scalar(GgufValueType.Float32, value));

        Add("general.architecture", GgufValue.String(arch));
        Add("general.name", GgufValue.String(name ?? arch));
        U32("general.alignment", GgufFile.DefaultAlignment);
        U32("general.file_type", fileType);
        U32("general.quantization_version", QuantizationVersion);

        U32($"{arch}.context_length", c.ContextLength);
        U32($"{arch}.embedding_length", c.Dim);
        U32($"{arch}.feed_forward_length", c.HiddenDim);
        U32($"{arch}.block_count", c.LayerCount);
        if (c.IsMixtureOfExperts)
            AddExperts(model, U32);
        U32($"{arch}.attention.head_count", c.HeadCount);
        U32($"{arch}.attention.head_count_kv", c.KvHeadCount);
        if (c.HeadDim != c.Dim / c.HeadCount || arch is "gemma2" or "gemma3") // Gemma's converters always write them
        {
            U32($"{arch}.attention.key_length", c.HeadDim);
            U32($"{arch}.attention.value_length", c.HeadDim);
        }
        U32($"{arch}.rope.dimension_count", c.RopeDimensions);
        F32($"{arch}.rope.freq_base", c.RopeTheta);
        if (c.Yarn)
        {
            // llama.cpp's converter: type, factor, original context, and β only when config.json gives them.
            Add($"{arch}.rope.scaling.type", GgufValue.String("yarn"));
            F32($"{arch}.rope.scaling.factor", c.RopeScalingFactor);
            U32($"{arch}.rope.scaling.original_context_length", c.RopeOriginalContext);
            if (c.YarnBetaFast != 32f)
                F32($"{arch}.rope.scaling.yarn_beta_fast", c.YarnBetaFast);
            if (c.YarnBetaSlow != 1f)
                F32($"{arch}.rope.scaling.yarn_beta_slow", c.YarnBetaSlow);
            // Ministral 3 (mistral3): mscale_all_dim, and below llama_4_scaling_beta, as the converter's Ministral3Model writes them.
            if (c.YarnLogMultiplier != 0)
                F32($"{arch}.rope.scaling.yarn_log_multiplier", c.YarnLogMultiplier);
        }
        else if (c.RopeScalingFactor != 1f)
        {
            Add($"{arch}.rope.scaling.type", GgufValue.String("linear"));
            F32($"{arch}.rope.scaling.factor", c.RopeScalingFactor);
        }
        if (c.AttentionTemperatureScale != 0)
            F32($"{arch}.attention.temperature_scale", c.AttentionTemperatureScale);
        if (arch == "phi3")
        {
            // Phi3MiniModel's keys: the original context always, the window (0 for none), the long-rope attention factor.
            if (!c.Yarn)
                U32($"{arch}.rope.scaling.original_context_length", c.RopeOriginalContext);
            U32($"{arch}.attention.sliding_window", c.DeclaredSlidingWindow);
        }
        if (c.RopeAttentionFactor != 1f || c.LongRope)
            F32($"{arch}.rope.scaling.attn_factor", c.RopeAttentionFactor);
        F32($"{arch}.attention.layer_norm_rms_epsilon", c.RmsNormEps);
        if (arch is "gemma2" or "gemma3")
            AddGemma(model, U32, F32);
        U32($"{arch}.vocab_size", c.VocabSize);

        var v = model.Vocabulary;
        Add("tokenizer.ggml.model", GgufValue.String(v.Kind == TokenizerKind.SentencePiece ? "llama" : "gpt2"));
        if (v.Kind == TokenizerKind.BytePairEncoding)
            Add("tokenizer.ggml.pre", GgufValue.String(v.PreTokenizer ?? "default"));
        Add("tokenizer.ggml.tokens", GgufValue.Array(GgufValueType.String, v.Tokens));
        Add("tokenizer.ggml.scores", GgufValue.Array(GgufValueType.Float32, v.Scores));
        Add("tokenizer.ggml.token_type", GgufValue.Array(GgufValueType.Int32, v.Types.Select(t => (int)t).ToArray()));
        if (v.Merges is { } merges)
            Add("tokenizer.ggml.merges", GgufValue.Array(GgufValueType.String, merges));
        U32("tokenizer.ggml.bos_token_id", TokenId(v.BosId));
        U32("tokenizer.ggml.eos_token_id", TokenId(v.EosId));
        U32("tokenizer.ggml.unknown_token_id", TokenId(v.UnknownId));
        U32("tokenizer.ggml.seperator_token_id", uint.MaxValue);
        U32("tokenizer.ggml.padding_token_id", TokenId(v.PaddingId));
        if (v.EotId >= 0)
            U32("tokenizer.ggml.eot_token_id", v.EotId);
        Add("tokenizer.ggml.add_bos_token", GgufValue.Scalar(GgufValueType.Bool, v.AddBos));
        if (v.Kind == TokenizerKind.SentencePiece)
            Add("tokenizer.ggml.add_space_prefix", GgufValue.Scalar(GgufValueType.Bool, v.AddSpacePrefix));
        if (v.ChatTemplate is { } template)
            Add("tokenizer.chat_template", GgufValue.String(template));
        return entries;
    }

    /// <summary>Gemma's keys, as llama.cpp's converter writes them; refuses what llama.cpp would run otherwise than Squeeze.
    /// (A llama model's sliding window, Mistral's, is not written: llama.cpp's llama architecture attends to every
    /// position, and so does Squeeze on the file, as on the converter's.)</summary>
    private static void AddGemma(Model model, Action<string, long> u32, Action<string, float> f32)
    {
        var c = model.Config;
        string arch = c.Architecture;
        void Refuse(string what) => throw new NotSupportedException($"{model.Source}: {what}; llama.cpp's {arch} cannot run it as Squeeze does");
        if (c.QueryScale != GgufModelReader.GemmaQueryScale(arch, c.LayerCount, c.Dim, c.HeadCount, c.HeadDim))
            Refuse($"the queries are scaled by {c.QueryScale} (query_pre_attn_scalar), not by llama.cpp's {GgufModelReader.GemmaQueryScale(arch, c.LayerCount, c.Dim, c.HeadCount, c.HeadDim)}");
        if (arch == "gemma2")
        {
            if (c.SlidingWindow == 0 || c.SlidingWindowPeriod != 2 || c.SlidingRopeTheta is not null)
                Refuse("Gemma 2 layers slide alternately with one rotary base");
            if (c.AttentionSoftCap == 0 || c.FinalLogitSoftCap == 0)
                Refuse("Gemma 2 without soft-capping");
            f32($"{arch}.attn_logit_softcapping", c.AttentionSoftCap);
            f32($"{arch}.final_logit_softcapping", c.FinalLogitSoftCap);
        }
        else
        {
            if (c.AttentionSoftCap != 0)
                Refuse("Gemma 3 with soft-capped attention scores");
            if (c.SlidingWindow > 0 && (c.SlidingWindowPeriod != 6 || c.SlidingRopeTheta != GgufModelReader.GemmaSlidingRopeTheta))
                Refuse($"its sliding layers are every {c.SlidingWindowPeriod} but one with rotary base {c.SlidingRopeTheta} (llama.cpp: 6, {GgufModelReader.GemmaSlidingRopeTheta})");
            if (c.FinalLogitSoftCap != 0)
                f32($"{arch}.final_logit_softcapping", c.FinalLogitSoftCap);
        }
        if (c.SlidingWindow > 0)
            u32($"{arch}.attention.sliding_window", c.SlidingWindow);
    }

    /// <summary>The experts' keys, as llama.cpp's converter writes them for Mixtral (llama: the experts' width is
    /// <c>feed_forward_length</c>), Qwen2-MoE and Qwen3-MoE; refuses a routing llama.cpp's architecture would not run.</summary>
    private static void AddExperts(Model model, Action<string, long> u32)
    {
        var c = model.Config;
        string arch = c.Architecture;
        bool normalizes = arch is "llama" or "qwen3moe";
        if (arch is not ("llama" or "qwen2moe" or "qwen3moe") || c.NormalizeExpertWeights != normalizes || (c.SharedExpertHiddenDim > 0) != (arch == "qwen2moe")
            || (arch == "llama" && c.ExpertHiddenDim != c.HiddenDim))
            throw new NotSupportedException($"{model.Source}: {c.ExpertCount} experts with weights {(c.NormalizeExpertWeights ? "" : "not ")}normalised, shared expert width {c.SharedExpertHiddenDim}: llama.cpp's {arch} cannot run them as Squeeze does");
        u32($"{arch}.expert_count", c.ExpertCount);
        u32($"{arch}.expert_used_count", c.ExpertUsedCount);
        if (arch != "llama")
            u32($"{arch}.expert_feed_forward_length", c.ExpertHiddenDim);
        if (c.SharedExpertHiddenDim > 0)
            u32($"{arch}.expert_shared_feed_forward_length", c.SharedExpertHiddenDim);
    }

    /// <summary>A token id as GGUF stores it: −1 (none) becomes 0xFFFFFFFF, as llama.cpp's converters write it.</summary>
    private static uint TokenId(int id) => id < 0 ? uint.MaxValue : (uint)id;
}
