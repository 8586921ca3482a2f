using Squeeze.Models;
using Squeeze.Tensors;

namespace Squeeze.Formats.Gguf;

/// <summary>Loads a GGUF file as a <see cref="Model"/> (architectures llama (with experts: Mixtral), qwen2, qwen3, gemma2,
/// gemma3, phi3, qwen2moe, qwen3moe, mistral3), with the hyperparameters llama.cpp reads from it and, where llama.cpp derives one
/// instead of reading it, llama.cpp's value. Phi-3's fused <c>attn_qkv</c> and <c>ffn_up</c> (gate rows, then up rows)
/// are read as views of their rows: the model's attn_q, attn_k, attn_v, ffn_gate and ffn_up.</summary>
public static class GgufModelReader
{
    /// <summary>Maps <paramref name="path"/>, reads the hyperparameters of <c>general.architecture</c>, the vocabulary and the
    /// tensors. The model owns the mapping and releases it when disposed.</summary>
    /// <exception cref="ModelFormatException">The file is corrupt, misses a required key or tensor, or its architecture is not supported.</exception>
    public static Model Load(string path)
    {
        var file = GgufFile.Open(path);
        try
        {
            return FromFile(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>The model in an already opened <paramref name="file"/>; the model takes ownership of the file when this
    /// succeeds (on failure the caller still owns it).</summary>
    /// <exception cref="ModelFormatException">A required key or tensor is missing or inconsistent, or the architecture is not supported.</exception>
    public static Model FromFile(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var config = ReadConfig(file);
        var vocabulary = GgufVocabulary.Read(file);
        if (vocabulary.Count != config.VocabSize)
            throw Fail(file, $"the vocabulary has {vocabulary.Count} tokens, the model {config.VocabSize}");
        return new Model(config, vocabulary, GgufLayout.Split(file.Tensors, config), file.Path, [file]);
    }

    /// <summary>The <see cref="ModelConfig"/> described by the metadata (<c>{arch}.embedding_length</c> …) and checked against
    /// the tensors: <c>token_embd.weight</c> must be [vocab, dim]; <see cref="ModelConfig.TiedEmbeddings"/> when there is no
    /// <c>output.weight</c>.</summary>
    /// <exception cref="ModelFormatException">A required key is missing or out of range, or the architecture is not supported.</exception>
    public static ModelConfig ReadConfig(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        string arch = file.GetString("general.architecture") ?? throw Fail(file, "no 'general.architecture'");
        RopeStyle rope = arch switch
        {
            "llama" or "mistral3" => RopeStyle.Interleaved,
            "qwen2" or "qwen3" or "gemma2" or "gemma3" or "phi3" or "qwen2moe" or "qwen3moe" => RopeStyle.Neox,
            _ => throw Fail(file, $"architecture '{arch}' is not supported (llama, qwen2, qwen3, gemma2, gemma3, phi3, qwen2moe, qwen3moe, mistral3)"),
        };
        bool mistral3 = arch == "mistral3";
        bool gemma2 = arch == "gemma2", gemma3 = arch == "gemma3", gemma = gemma2 || gemma3, phi3 = arch == "phi3";

        int dim = Positive(file, $"{arch}.embedding_length");
        int layers = Positive(file, $"{arch}.block_count");
        int hidden = Positive(file, $"{arch}.feed_forward_length");
        int heads = Positive(file, $"{arch}.attention.head_count");
        int kvHeads = Positive(file, $"{arch}.attention.head_count_kv", heads);
        int context = Positive(file, $"{arch}.context_length");
        if (heads % kvHeads != 0)
            throw Fail(file, $"{heads} attention heads cannot be shared by {kvHeads} key/value heads");
        if (file.GetInteger($"{arch}.attention.key_length") is null && dim % heads != 0)
            throw Fail(file, $"embedding length {dim} is not a multiple of {heads} heads and no key_length is given");
        int headDim = Positive(file, $"{arch}.attention.key_length", dim / heads);
        int valueDim = Positive(file, $"{arch}.attention.value_length", headDim);
        if (valueDim != headDim)
            throw Fail(file, $"key length {headDim} and value length {valueDim} differ; that is not supported");
        float theta = PositiveFloat(file, $"{arch}.rope.freq_base", 10000f);
        float eps = PositiveFloat(file, $"{arch}.attention.layer_norm_rms_epsilon", null);
        int ropeDimensions = Positive(file, $"{arch}.rope.dimension_count", headDim);
        if (ropeDimensions % 2 != 0 || ropeDimensions > headDim)
            throw Fail(file, $"'{arch}.rope.dimension_count' = {ropeDimensions} is not an even number of values up to the head's {headDim}");
        // Rotary scaling as llama.cpp reads it: a factor (older files: rope.scale_linear) that scales linearly unless the
        // type says "none" (no type means linear) or "yarn" (llama.cpp's YaRN: ext_factor 1, β_fast 32, β_slow 1, whatever
        // the file's yarn_* keys say, which llama.cpp reads for none of these architectures); Llama 3's per-pair frequency divisors in rope_freqs.weight; Phi-3's long and short factors in
        // rope_factors_long/short.weight, chosen by the context against the original one; the attention factor.
        string scalingType = file.GetString($"{arch}.rope.scaling.type") ?? "linear";
        if (scalingType is not ("none" or "linear" or "yarn") && !(phi3 && scalingType == "longrope"))
            throw Fail(file, $"'{arch}.rope.scaling.type' = '{scalingType}' is not supported (none, linear, yarn; longrope for phi3)");
        float scalingFactor = PositiveFloat(file, $"{arch}.rope.scaling.factor", PositiveFloat(file, $"{arch}.rope.scale_linear", 1f));
        if (scalingType == "none")
            scalingFactor = 1f;
        bool yarn = scalingType == "yarn";
        int originalContext = yarn || phi3 ? Positive(file, $"{arch}.rope.scaling.original_context_length", context) : 0;
        // llama.cpp's mistral3 reads YaRN's β and log multiplier, and Llama 4's query temperature over the original context.
        float temperature = mistral3 ? NonNegativeFloat(file, $"{arch}.attention.temperature_scale") : 0;
        if (temperature != 0 && originalContext == 0)
            throw Fail(file, $"'{arch}.attention.temperature_scale' needs YaRN's original context length");

        string[] tokens = file.GetArray<string>("tokenizer.ggml.tokens") ?? throw Fail(file, "no 'tokenizer.ggml.tokens'");
        int vocab = tokens.Length;
        if (!file.TryGetTensor(TensorNames.TokenEmbedding, out Tensor embedding))
            throw Fail(file, $"no tensor '{TensorNames.TokenEmbedding}'");
        if (embedding.Shape.Length != 2 || embedding.Shape[0] != vocab || embedding.Shape[1] != dim)
            throw Fail(file, $"'{TensorNames.TokenEmbedding}' is [{string.Join(", ", embedding.Shape)}], expected [{vocab}, {dim}]");

        // Gemma as llama.cpp runs it: Gemma 2 slides on even layers (window 4096 unless the file says) and caps scores at 50
        // and logits at 30 unless it says otherwise; Gemma 3 slides on five layers of six with rotary base 10000 there when
        // the file has a window; queries scaled by 1/√headDim, or by 1/√(dim / heads) for the 27B models (by layer count).
        int slidingWindow = gemma2 ? Positive(file, $"{arch}.attention.sliding_window", 4096)
            : gemma3 && file.GetInteger($"{arch}.attention.sliding_window") is > 0 ? Positive(file, $"{arch}.attention.sliding_window") : 0;
        float? queryScale = gemma ? GemmaQueryScale(arch, layers, dim, heads, headDim) : null;

        // Mixture of experts (Mixtral is llama with experts), routed as llama.cpp's architectures route.
        bool moeArch = arch is "qwen2moe" or "qwen3moe";
        int experts = moeArch ? Positive(file, $"{arch}.expert_count") : file.GetInteger($"{arch}.expert_count") is > 0 ? Positive(file, $"{arch}.expert_count") : 0;
        int expertsUsed = experts > 0 ? Positive(file, $"{arch}.expert_used_count") : 0;
        if (expertsUsed > experts)
            throw Fail(file, $"'{arch}.expert_used_count' = {expertsUsed} exceeds '{arch}.expert_count' = {experts}");
        var config = new ModelConfig
        {
            ExpertCount = experts,
            ExpertUsedCount = expertsUsed,
            ExpertHiddenDim = experts == 0 ? 0 : moeArch ? Positive(file, $"{arch}.expert_feed_forward_length") : hidden,
            SharedExpertHiddenDim = arch == "qwen2moe" ? Positive(file, $"{arch}.expert_shared_feed_forward_length", hidden) : 0,
            NormalizeExpertWeights = experts > 0 && arch != "qwen2moe",
            Architecture = arch,
            Dim = dim,
            HiddenDim = hidden,
            LayerCount = layers,
            HeadCount = heads,
            KvHeadCount = kvHeads,
            HeadDim = headDim,
            VocabSize = vocab,
            ContextLength = context,
            RopeTheta = theta,
            RopeStyle = rope,
            RopeScalingFactor = scalingFactor,
            RopeFrequencyFactors = file.TryGetTensor(TensorNames.RopeFrequencies, out _),
            Yarn = yarn,
            LongRope = phi3 && file.TryGetTensor(TensorNames.RopeFactorsLong, out _),
            RopeOriginalContext = originalContext,
            RopeAttentionFactor = PositiveFloat(file, $"{arch}.rope.scaling.attn_factor", 1f),
            YarnBetaFast = mistral3 && yarn ? PositiveFloat(file, $"{arch}.rope.scaling.yarn_beta_fast", 32f) : 32f,
            YarnBetaSlow = mistral3 && yarn ? PositiveFloat(file, $"{arch}.rope.scaling.yarn_beta_slow", 1f) : 1f,
            YarnLogMultiplier = mistral3 && yarn ? NonNegativeFloat(file, $"{arch}.rope.scaling.yarn_log_multiplier") : 0,
            AttentionTemperatureScale = temperature,
            DeclaredSlidingWindow = phi3 && file.GetInteger($"{arch}.attention.sliding_window") is > 0 ? Positive(file, $"{arch}.attention.sliding_window") : 0,
            RmsNormEps = eps,
            TiedEmbeddings = !file.TryGetTensor(TensorNames.Output, out _),
            AttentionBias = arch is "qwen2" or "qwen2moe",
            QkNorm = arch is "qwen3" or "gemma3" or "qwen3moe",
            SlidingWindow = slidingWindow,
            SlidingWindowPeriod = gemma2 ? 2 : gemma3 ? 6 : 0,
            SlidingRopeTheta = gemma3 && slidingWindow > 0 ? GemmaSlidingRopeTheta : null,
            Activation = gemma ? FeedForwardActivation.GeluTanh : FeedForwardActivation.Silu,
            ScaleEmbedding = gemma,
            PostNorms = gemma,
            QueryScale = queryScale,
            AttentionSoftCap = gemma2 ? PositiveFloat(file, $"{arch}.attn_logit_softcapping", 50f) : 0,
            FinalLogitSoftCap = gemma2 ? PositiveFloat(file, $"{arch}.final_logit_softcapping", 30f)
                : gemma3 ? NonNegativeFloat(file, $"{arch}.final_logit_softcapping") : 0,
        };
        if (ropeDimensions != headDim)
            config = config with { RopeDimensions = ropeDimensions };
        CheckTensors(file, config);
        return config;
    }


    /// <summary>Every tensor the forward pass reads is present with the shape the hyperparameters imply.</summary>
    private static void CheckTensors(GgufFile file, ModelConfig c)
    {
        Expect(file, TensorNames.OutputNorm, c.Dim);
        if (c.RopeFrequencyFactors)
            Expect(file, TensorNames.RopeFrequencies, c.HeadDim / 2);
        if (c.LongRope)
        {
            Expect(file, TensorNames.RopeFactorsLong, c.RopeDimensions / 2);
            Expect(file, TensorNames.RopeFactorsShort, c.RopeDimensions / 2);
        }
        bool phi3 = c.Architecture == "phi3";
        if (!c.TiedEmbeddings)
            Expect(file, TensorNames.Output, c.VocabSize, c.Dim);
        for (int l = 0; l < c.LayerCount; l++)
        {
            Expect(file, TensorNames.AttentionNorm(l), c.Dim);
            if (phi3)
            {
                Expect(file, TensorNames.QueryKeyValue(l), c.QDim + 2L * c.KvDim, c.Dim);
            }
            else
            {
                Expect(file, TensorNames.Query(l), c.QDim, c.Dim);
                Expect(file, TensorNames.Key(l), c.KvDim, c.Dim);
                Expect(file, TensorNames.Value(l), c.KvDim, c.Dim);
            }
            Expect(file, TensorNames.AttentionOutput(l), c.Dim, c.QDim);
            Expect(file, TensorNames.FeedForwardNorm(l), c.Dim);
            if (c.IsMixtureOfExperts)
            {
                Expect(file, TensorNames.ExpertRouter(l), c.ExpertCount, c.Dim);
                Expect(file, TensorNames.GateExperts(l), c.ExpertCount, c.ExpertHiddenDim, c.Dim);
                Expect(file, TensorNames.UpExperts(l), c.ExpertCount, c.ExpertHiddenDim, c.Dim);
                Expect(file, TensorNames.DownExperts(l), c.ExpertCount, c.Dim, c.ExpertHiddenDim);
                if (c.SharedExpertHiddenDim > 0)
                {
                    Expect(file, TensorNames.SharedExpertGate(l), c.Dim);
                    Expect(file, TensorNames.GateShared(l), c.SharedExpertHiddenDim, c.Dim);
                    Expect(file, TensorNames.UpShared(l), c.SharedExpertHiddenDim, c.Dim);
                    Expect(file, TensorNames.DownShared(l), c.Dim, c.SharedExpertHiddenDim);
                }
            }
            else if (phi3)
            {
                Expect(file, TensorNames.Up(l), 2L * c.HiddenDim, c.Dim);
                Expect(file, TensorNames.Down(l), c.Dim, c.HiddenDim);
            }
            else
            {
                Expect(file, TensorNames.Gate(l), c.HiddenDim, c.Dim);
                Expect(file, TensorNames.Up(l), c.HiddenDim, c.Dim);
                Expect(file, TensorNames.Down(l), c.Dim, c.HiddenDim);
            }
            if (c.PostNorms)
            {
                Expect(file, TensorNames.PostAttentionNorm(l), c.Dim);
                Expect(file, TensorNames.PostFeedForwardNorm(l), c.Dim);
            }
            if (c.AttentionBias)
            {
                Expect(file, TensorNames.QueryBias(l), c.QDim);
                Expect(file, TensorNames.KeyBias(l), c.KvDim);
                Expect(file, TensorNames.ValueBias(l), c.KvDim);
            }
            if (c.QkNorm)
            {
                Expect(file, TensorNames.QueryNorm(l), c.HeadDim);
                Expect(file, TensorNames.KeyNorm(l), c.HeadDim);
            }
        }
    }

    /// <summary>The rotary base llama.cpp gives Gemma 3's sliding layers (it reads none from the file).</summary>
    public const float GemmaSlidingRopeTheta = 10000f;

    /// <summary>The factor llama.cpp multiplies Gemma's queries by: 1/√(dim / heads) for the 27B models (Gemma 2 with 46
    /// layers, Gemma 3 with 62), 1/√headDim otherwise.</summary>
    public static float GemmaQueryScale(string architecture, int layers, int dim, int heads, int headDim)
    {
        bool is27B = (architecture == "gemma2" && layers == 46) || (architecture == "gemma3" && layers == 62);
        return is27B ? 1f / MathF.Sqrt(dim / heads) : 1f / MathF.Sqrt(headDim);
    }

    private static float NonNegativeFloat(GgufFile file, string key)
    {
        double? value = file.GetFloat(key);
        if (value is null)
            return 0;
        float f = (float)value.Value;
        if (!float.IsFinite(f) || f < 0)
            throw Fail(file, $"'{key}' = {value} is not a finite number ≥ 0");
        return f;
    }

    private static void Expect(GgufFile file, string name, params long[] shape)
    {
        if (!file.TryGetTensor(name, out Tensor t))
            throw Fail(file, $"no tensor '{name}'");
        if (!t.Shape.AsSpan().SequenceEqual(shape))
            throw Fail(file, $"tensor '{name}' is [{string.Join(", ", t.Shape)}], expected [{string.Join(", ", shape)}]");
    }

    private static int Positive(GgufFile file, string key, int? fallback = null)
    {
        long? value = file.GetInteger(key);
        if (value is null)
            return fallback ?? throw Fail(file, $"no '{key}'");
        if (value is <= 0 or > int.MaxValue)
            throw Fail(file, $"'{key}' = {value} is out of range");
        return (int)value;
    }

    private static float PositiveFloat(GgufFile file, string key, float? fallback)
    {
        double? value = file.GetFloat(key);
        if (value is null)
            return fallback ?? throw Fail(file, $"no '{key}'");
        float f = (float)value.Value;
        if (!float.IsFinite(f) || f <= 0)
            throw Fail(file, $"'{key}' = {value} is not a positive finite number");
        return f;
    }

    private static ModelFormatException Fail(GgufFile file, string problem) => new(file.Path, problem);
}
