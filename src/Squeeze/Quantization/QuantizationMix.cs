using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>
/// A named quantization mix (llama.cpp's <c>llama_ftype</c>: Q4_K_M, Q8_0 …): a default type plus llama.cpp's
/// per-tensor rules from <c>llama_tensor_get_type</c> (llama.cpp c392e509), reproduced for Llama-family models
/// (dense or with experts, not Falcon). <see cref="Plan(Model, QuantizationMix, IReadOnlyList{TensorTypeOverride}, bool, bool)"/>
/// applies them to a model.
/// </summary>
public sealed class QuantizationMix
{
    private QuantizationMix(string name, GgmlType defaultType)
    {
        Name = name;
        DefaultType = defaultType;
    }

    /// <summary>The mix's name as llama-quantize spells it ("Q4_K_M").</summary>
    public string Name { get; }

    /// <summary>The type of every 2-D tensor no rule changes.</summary>
    public GgmlType DefaultType { get; }

    /// <summary>Every 2-D tensor f32.</summary>
    public static QuantizationMix F32 { get; } = new("F32", GgmlType.F32);

    /// <summary>Every 2-D tensor f16.</summary>
    public static QuantizationMix F16 { get; } = new("F16", GgmlType.F16);

    /// <summary>Every 2-D tensor bf16.</summary>
    public static QuantizationMix BF16 { get; } = new("BF16", GgmlType.BF16);

    /// <summary>Q8_0 everywhere.</summary>
    public static QuantizationMix Q8_0 { get; } = new("Q8_0", GgmlType.Q8_0);

    /// <summary>Q4_0; with importance, the first eighth of ffn_down layers Q4_1.</summary>
    public static QuantizationMix Q4_0 { get; } = new("Q4_0", GgmlType.Q4_0);

    /// <summary>Q4_1 everywhere but the output (Q6_K).</summary>
    public static QuantizationMix Q4_1 { get; } = new("Q4_1", GgmlType.Q4_1);

    /// <summary>Q5_0; with importance, the first eighth of ffn_down layers Q5_1.</summary>
    public static QuantizationMix Q5_0 { get; } = new("Q5_0", GgmlType.Q5_0);

    /// <summary>Q5_1 everywhere but the output (Q6_K).</summary>
    public static QuantizationMix Q5_1 { get; } = new("Q5_1", GgmlType.Q5_1);

    /// <summary>Q2_K; attn_v Q3_K (Q4_K with grouped-query attention ≥ 4), ffn_down and attn_output Q3_K.</summary>
    public static QuantizationMix Q2_K { get; } = new("Q2_K", GgmlType.Q2_K);

    /// <summary>Q3_K everywhere but the output.</summary>
    public static QuantizationMix Q3_K_S { get; } = new("Q3_K_S", GgmlType.Q3_K);

    /// <summary>Q3_K; attn_v Q5_K for the first two layers then Q4_K, ffn_down Q5_K for the first sixteenth then Q4_K, attn_output Q4_K.</summary>
    public static QuantizationMix Q3_K_M { get; } = new("Q3_K_M", GgmlType.Q3_K);

    /// <summary>Q3_K; attn_v, ffn_down and attn_output Q5_K.</summary>
    public static QuantizationMix Q3_K_L { get; } = new("Q3_K_L", GgmlType.Q3_K);

    /// <summary>Q4_K; attn_v Q5_K for the first four, ffn_down Q5_K for the first eighth of layers.</summary>
    public static QuantizationMix Q4_K_S { get; } = new("Q4_K_S", GgmlType.Q4_K);

    /// <summary>Q4_K; attn_v and ffn_down Q6_K on the layers <c>use_more_bits</c> picks.</summary>
    public static QuantizationMix Q4_K_M { get; } = new("Q4_K_M", GgmlType.Q4_K);

    /// <summary>Q5_K everywhere but the output.</summary>
    public static QuantizationMix Q5_K_S { get; } = new("Q5_K_S", GgmlType.Q5_K);

    /// <summary>Q5_K; attn_v and ffn_down Q6_K on the layers <c>use_more_bits</c> picks.</summary>
    public static QuantizationMix Q5_K_M { get; } = new("Q5_K_M", GgmlType.Q5_K);

    /// <summary>Q6_K everywhere.</summary>
    public static QuantizationMix Q6_K { get; } = new("Q6_K", GgmlType.Q6_K);

    /// <summary>IQ4_NL; attn_v Q5_K with grouped-query attention ≥ 4, the first eighth of ffn_down Q5_K without importance.</summary>
    public static QuantizationMix IQ4_NL { get; } = new("IQ4_NL", GgmlType.IQ4_NL);

    /// <summary>Every mix, in a stable order.</summary>
    public static IReadOnlyList<QuantizationMix> All { get; } =
        [F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q5_K_S, Q5_1, Q5_0, Q4_K_M, Q4_K_S, Q4_1, Q4_0, IQ4_NL, Q3_K_L, Q3_K_M, Q3_K_S, Q2_K];

    /// <summary>The mix called <paramref name="name"/> (case-insensitive).</summary>
    /// <exception cref="ArgumentException">No such mix; the message lists the known ones.</exception>
    public static QuantizationMix Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return All.FirstOrDefault(m => string.Equals(m.Name, name, StringComparison.OrdinalIgnoreCase))
            ?? throw new ArgumentException($"unknown quantization mix '{name}'; known: {string.Join(", ", All.Select(m => m.Name))}", nameof(name));
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>Chooses the type of every tensor of <paramref name="model"/> as llama-quantize would (see the other overload).</summary>
    public static QuantizationPlan Plan(Model model, QuantizationMix mix, IReadOnlyList<TensorTypeOverride> overrides, bool pure, bool hasImportance = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Plan(model.Config, model.Tensors.Select(t => (t.Name, t.Shape, t.Type)).ToList(), mix, overrides, pure, hasImportance);
    }

    /// <summary>
    /// Chooses the type of every tensor: 1-D tensors (norms, biases) and <c>*_norm.weight</c> stay F32; with
    /// <paramref name="pure"/> every other weight gets the mix's default type; otherwise llama.cpp's rules for the mix
    /// apply (tied token_embd quantized as the output, attn_v / ffn_down bumps by layer, attn_output …, with counters
    /// advancing in llama.cpp's tensor order: by layer, then by name). Then the first matching override applies, and
    /// finally a type whose block does not divide the row falls back (<see cref="TypeFallback"/>).
    /// <paramref name="hasImportance"/> says whether an importance matrix will be used (llama.cpp picks differently
    /// for Q4_0/Q5_0 ffn_down and IQ4_NL with one).
    /// </summary>
    /// <exception cref="ArgumentException">An override matches no quantizable tensor.</exception>
    public static QuantizationPlan Plan(ModelConfig config, IReadOnlyList<(string Name, long[] Shape, GgmlType Type)> tensors, QuantizationMix mix,
        IReadOnlyList<TensorTypeOverride> overrides, bool pure, bool hasImportance = false)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(mix);
        overrides ??= [];

        var state = new RuleState
        {
            Config = config,
            Mix = mix,
            HasImportance = hasImportance,
            HasOutput = tensors.Any(t => t.Name == TensorNames.Output),
            AttentionVCount = tensors.Select(t => GgufLayout.FileName(config, t.Name)).Distinct(StringComparer.Ordinal)
                .Count(n => n.Contains("attn_v.weight", StringComparison.Ordinal) || n.Contains("attn_qkv.weight", StringComparison.Ordinal)),
        };
        var overrideUsed = new bool[overrides.Count];
        var result = new TensorPlan?[tensors.Count];

        // The rules see the tensors llama.cpp's quantizer sees: the parts of a fused GGUF tensor (Phi-3's attn_qkv,
        // ffn_up) get the type chosen once for it.
        var fileNames = tensors.Select(t => GgufLayout.FileName(config, t.Name)).ToArray();
        var ruled = new Dictionary<string, TypeChoice>(StringComparer.Ordinal);

        // llama.cpp visits tensors ordered by layer number ("blk.N."; -1 for none), then by name; the layer counters
        // of attn_v and ffn_down advance in that order.
        var order = Enumerable.Range(0, tensors.Count).OrderBy(i => LayerOf(fileNames[i])).ThenBy(i => fileNames[i], StringComparer.Ordinal)
            .ThenBy(i => tensors[i].Name, StringComparer.Ordinal).ToList();
        foreach (int index in order)
        {
            var (name, shape, sourceType) = tensors[index];
            if (!IsQuantizable(name, shape))
            {
                result[index] = new TensorPlan(name, shape, sourceType, GgmlType.F32, false,
                    shape.Length == 1 ? "1-D tensor kept in F32" : name.Contains("ffn_gate_inp", StringComparison.Ordinal) ? "not quantized (expert router)" : "not quantized (norm)");
                continue;
            }
            long columns = shape[^1];
            var choice = new TypeChoice(mix.DefaultType, pure ? "--pure" : "mix default");
            if (!pure && IsBlockQuantized(mix.DefaultType))
            {
                if (!ruled.TryGetValue(fileNames[index], out choice))
                    ruled[fileNames[index]] = choice = TensorRule(state, fileNames[index], columns);
            }
            for (int o = 0; o < overrides.Count; o++)
            {
                if (overrides[o].Regex.IsMatch(name))
                {
                    choice = new TypeChoice(overrides[o].Type, $"--tensor-type {overrides[o]}");
                    overrideUsed[o] = true;
                    break;
                }
            }
            var fitted = TypeFallback.Resolve(choice.Type, columns);
            if (fitted.Type != choice.Type)
                choice = new TypeChoice(fitted.Type, $"{choice.Reason} {choice.Type}; {fitted.Reason}");
            result[index] = new TensorPlan(name, shape, sourceType, choice.Type, true, choice.Reason);
        }
        for (int o = 0; o < overrides.Count; o++)
        {
            if (!overrideUsed[o])
                throw new ArgumentException($"--tensor-type {overrides[o]} matches no quantizable tensor", nameof(overrides));
        }
        return new QuantizationPlan(mix, pure, result.Select(r => r!).ToList());
    }

    // llama_model_quantize_impl: names ending in "weight", 2-D or more (the experts' 3-D), not a norm, not an expert router.
    private static bool IsQuantizable(string name, long[] shape) =>
        name.EndsWith("weight", StringComparison.Ordinal) && shape.Length >= 2 && !name.Contains("_norm.weight", StringComparison.Ordinal)
        && !name.Contains("ffn_gate_inp.weight", StringComparison.Ordinal);

    private static bool IsBlockQuantized(GgmlType type) => type is not (GgmlType.F32 or GgmlType.F16 or GgmlType.BF16);

    private static int LayerOf(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal))
            return -1;
        int end = name.IndexOf('.', 4);
        return end > 4 && int.TryParse(name.AsSpan(4, end - 4), out int layer) ? layer : -1;
    }

    private sealed class RuleState
    {
        public required ModelConfig Config { get; init; }
        public required QuantizationMix Mix { get; init; }
        public bool HasImportance { get; init; }
        public bool HasOutput { get; init; }
        public int AttentionVCount { get; init; }
        public int AttentionVIndex { get; set; }
        public int FfnDownIndex { get; set; }
    }

    // llama.cpp's use_more_bits: the first and last eighth of the layers and every third one in between.
    private static bool UseMoreBits(int layer, int layers) => layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;

    // llama_tensor_get_type for the mixes above, non-Falcon models, with its rules for 8-expert models (Mixtral: attn_v and
    // attn_k Q8_0, attn_output Q5_K for the smaller mixes) and, with experts, ffn_down's layer read from the tensor's name
    // (so ffn_down_exps and ffn_down_shexp of a layer get the same rule).
    private static TypeChoice TensorRule(RuleState s, string name, long columns)
    {
        QuantizationMix mix = s.Mix;
        GgmlType type = mix.DefaultType;
        string reason = "mix default";
        int gqa = s.Config.KvHeadCount > 0 ? s.Config.HeadCount / s.Config.KvHeadCount : 0;
        // LLM_TYPE_70B: an 80-layer llama with grouped-query attention.
        bool is70B = s.Config.Architecture == "llama" && s.Config.LayerCount == 80 && s.Config.HeadCount != s.Config.KvHeadCount;
        bool eightExperts = s.Config.ExpertCount == 8;

        if (name == TensorNames.Output || (!s.HasOutput && name == TensorNames.TokenEmbedding))
        {
            string what = name == TensorNames.Output ? "output" : "tied token_embd (also the output)";
            if (columns % GgmlTypes.BlockSize(type) != 0)
            {
                type = GgmlType.Q8_0;
                reason = $"{what}: rows of {columns} do not fit {mix.DefaultType} blocks, Q8_0";
            }
            else if (type != GgmlType.Q8_0)
            {
                type = GgmlType.Q6_K;
                reason = $"{what} Q6_K";
            }
            else
            {
                reason = $"{what} Q8_0";
            }
        }
        else if (name == TensorNames.TokenEmbedding)
        {
            reason = "token_embd: mix default";
        }
        else if (name.Contains("attn_v.weight", StringComparison.Ordinal))
        {
            int i = s.AttentionVIndex, n = s.AttentionVCount;
            if (mix == Q2_K) { type = gqa >= 4 ? GgmlType.Q4_K : GgmlType.Q3_K; reason = "attn_v (Q2_K mix)"; }
            else if (mix == Q3_K_M) { type = i < 2 ? GgmlType.Q5_K : GgmlType.Q4_K; reason = $"attn_v {i} of {n} (Q3_K_M: Q5_K for the first 2)"; }
            else if (mix == Q3_K_L) { type = GgmlType.Q5_K; reason = "attn_v (Q3_K_L)"; }
            else if (mix == IQ4_NL && gqa >= 4) { type = GgmlType.Q5_K; reason = "attn_v, grouped-query attention >= 4"; }
            else if ((mix == Q4_K_M || mix == Q5_K_M) && UseMoreBits(i, n)) { type = GgmlType.Q6_K; reason = $"attn_v {i} of {n}: use_more_bits"; }
            else if (mix == Q4_K_S && i < 4) { type = GgmlType.Q5_K; reason = $"attn_v {i} of {n} (Q4_K_S: Q5_K for the first 4)"; }
            if (is70B && type is GgmlType.Q3_K or GgmlType.Q4_K)
            {
                type = GgmlType.Q5_K;
                reason = "attn_v of a 70B model";
            }
            if (eightExperts)
            {
                type = GgmlType.Q8_0;
                reason = "attn_v of an 8-expert model";
            }
            s.AttentionVIndex++;
        }
        else if (name.Contains("attn_k.weight", StringComparison.Ordinal) && eightExperts)
        {
            type = GgmlType.Q8_0;
            reason = "attn_k of an 8-expert model";
        }
        else if (name.Contains("ffn_down", StringComparison.Ordinal))
        {
            int i = s.Config.ExpertCount > 1 ? LayerOf(name) : s.FfnDownIndex, n = s.Config.LayerCount;
            if (mix == Q2_K) { type = GgmlType.Q3_K; reason = "ffn_down (Q2_K mix)"; }
            else if (mix == Q3_K_M) { type = i < n / 16 ? GgmlType.Q5_K : GgmlType.Q4_K; reason = $"ffn_down {i} of {n} (Q3_K_M)"; }
            else if (mix == Q3_K_L) { type = GgmlType.Q5_K; reason = "ffn_down (Q3_K_L)"; }
            else if (mix == Q4_K_M) { if (UseMoreBits(i, n)) { type = GgmlType.Q6_K; reason = $"ffn_down {i} of {n}: use_more_bits"; } }
            else if (mix == IQ4_NL && i < n / 8 && !s.HasImportance) { type = GgmlType.Q5_K; reason = $"ffn_down {i} of {n}: first eighth, no importance"; }
            else if (mix == Q5_K_M) { if (UseMoreBits(i, n)) { type = GgmlType.Q6_K; reason = $"ffn_down {i} of {n}: use_more_bits"; } }
            else if (mix == Q4_K_S) { if (i < n / 8) { type = GgmlType.Q5_K; reason = $"ffn_down {i} of {n}: first eighth (Q4_K_S)"; } }
            else if ((mix == Q4_0 || mix == Q5_0) && s.HasImportance && i < n / 8)
            {
                type = mix == Q4_0 ? GgmlType.Q4_1 : GgmlType.Q5_1;
                reason = $"ffn_down {i} of {n}: first eighth with importance";
            }
            s.FfnDownIndex++;
        }
        else if (name.Contains("attn_qkv.weight", StringComparison.Ordinal))
        {
            if (mix == Q3_K_M || mix == Q3_K_L) { type = GgmlType.Q4_K; reason = $"attn_qkv ({mix.Name})"; }
            else if (mix == Q4_K_M) { type = GgmlType.Q5_K; reason = "attn_qkv (Q4_K_M)"; }
            else if (mix == Q5_K_M) { type = GgmlType.Q6_K; reason = "attn_qkv (Q5_K_M)"; }
        }
        else if (name.Contains("attn_output.weight", StringComparison.Ordinal) && eightExperts)
        {
            if (mix == Q2_K || mix == Q3_K_S || mix == Q3_K_M || mix == IQ4_NL || mix == Q4_K_S || mix == Q4_K_M)
            {
                type = GgmlType.Q5_K;
                reason = "attn_output of an 8-expert model";
            }
        }
        else if (name.Contains("attn_output.weight", StringComparison.Ordinal))
        {
            if (mix == Q2_K) { type = GgmlType.Q3_K; reason = "attn_output (Q2_K mix)"; }
            else if (mix == Q3_K_M) { type = GgmlType.Q4_K; reason = "attn_output (Q3_K_M)"; }
            else if (mix == Q3_K_L) { type = GgmlType.Q5_K; reason = "attn_output (Q3_K_L)"; }
        }
        return new TypeChoice(type, reason);
    }
}
