using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.HuggingFace;

/// <summary>
/// Loads a Hugging Face checkpoint directory (config.json, model.safetensors or a sharded
/// model.safetensors.index.json, tokenizer.json or tokenizer.model) as a <see cref="Model"/> with GGUF tensor names.
/// Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM,
/// Gemma3ForCausalLM (text) and Phi3ForCausalLM with F32, F16 or BF16 weights; of Gemma3ForConditionalGeneration and
/// Mistral3ForConditionalGeneration the language model alone (config.json's <c>text_config</c>, tensors under
/// <c>language_model.model.</c> or <c>model.language_model.</c>), as llama.cpp's converter writes it: the vision tower
/// and multi-modal projector are never read, and <see cref="Model.LeftOut"/> says so. Phi-3's fused qkv_proj and gate_up_proj
/// are read as views of their rows (attn_q, attn_k, attn_v; ffn_gate, ffn_up), which the GGUF writer fuses again. Llama/Mistral q/k rows are converted from rotate-half to
/// Meta's interleaved order (copied into owned buffers; <see cref="RopeStyle.Interleaved"/>); Qwen and Gemma keep
/// Hugging Face order (<see cref="RopeStyle.Neox"/>), as llama.cpp does. Gemma's norms multiply by (1 + w): their
/// weights are read with 1 added (owned F32 copies), as llama.cpp's converter stores them. Of a Gemma 3 whose tokenizer
/// is tokenizer.json alone, the embedding keeps the rows llama.cpp's converter keeps (its vocab and added_tokens
/// counted). Every other tensor is a view into the memory-mapped safetensors files.
/// </summary>
public static class HuggingFaceReader
{
    /// <summary>Name of the config file inside a checkpoint directory.</summary>
    public const string ConfigFile = "config.json";

    /// <summary>Name of the single-file weights.</summary>
    public const string WeightsFile = "model.safetensors";

    /// <summary>Name of the index of sharded weights.</summary>
    public const string WeightsIndexFile = "model.safetensors.index.json";

    /// <summary>Loads <paramref name="directory"/> with its tokenizer (tokenizer.json, else tokenizer.model).</summary>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    /// <exception cref="ModelFormatException">A file is missing, malformed or describes an unsupported model.</exception>
    public static Model Load(string directory) => Load(directory, vocabulary: null);

    /// <summary>Loads <paramref name="directory"/> with an already loaded <paramref name="vocabulary"/> (null: read the
    /// directory's tokenizer).</summary>
    public static Model Load(string directory, Vocabulary? vocabulary)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"Hugging Face checkpoint directory {directory} does not exist");
        var config = ReadConfig(Path.Combine(directory, ConfigFile), llama3DivisorsStored: false, out var computed, out string? multimodal);
        var owned = new List<IDisposable>();
        try
        {
            var tensors = ReadTensors(directory, config, multimodal, owned, out var image);
            tensors.InsertRange(0, computed.Select(c => FloatTensor(c.Name, c.Values, owned)));
            vocabulary ??= ReadVocabulary(directory);
            if (vocabulary.Count > config.VocabSize)
                throw new ModelFormatException(directory, $"the tokenizer has {vocabulary.Count} tokens but config.json's vocab_size is {config.VocabSize}");
            if (Gemma3TokenizerJsonRows(directory, config, vocabulary) is int rows)
            {
                // llama.cpp's converter keeps the first rows of a Gemma 3 embedding only: views of them, and a config to match.
                config = config with { VocabSize = rows };
                for (int i = 0; i < tensors.Count; i++)
                {
                    if (tensors[i].Name is TensorNames.TokenEmbedding or TensorNames.Output)
                        tensors[i] = new Tensor(tensors[i].Name, tensors[i].Type, [rows, config.Dim], tensors[i].Buffer, tensors[i].Offset);
                }
            }
            vocabulary = vocabulary.PaddedTo(config.VocabSize); // a token for every embedding row, as llama.cpp pads it
            string? leftOut = multimodal is null ? null
                : $"{multimodal}: only the language model is read; the vision tower and multi-modal projector ({image.Tensors} tensors, {image.Parameters:N0} parameters) are not part of this model";
            return new Model(config, vocabulary, tensors, directory, owned) { LeftOut = leftOut };
        }
        catch
        {
            foreach (var d in owned)
                d.Dispose();
            throw;
        }
    }

    /// <summary>Reads a config.json into a <see cref="ModelConfig"/> (GGUF architecture name, rope style as loaded).</summary>
    /// <exception cref="ModelFormatException">Missing, malformed, or an unsupported architecture or option; the message names the value.</exception>
    public static ModelConfig ReadConfig(string configPath) => ReadConfig(configPath, llama3DivisorsStored: false, out _, out _);

    /// <summary>Reads a config.json, with the tensors its rope scaling defines (Llama 3's per-pair rotary frequency
    /// divisors, Phi-3's long and short factors), in load order, and the multimodal class whose language model it
    /// describes (null for a text model). With <paramref name="llama3DivisorsStored"/> (a native directory, whose
    /// weights file holds rope_freqs.weight), rope_scaling of type "llama3" needs no parameters and defines no tensor.</summary>
    internal static ModelConfig ReadConfig(string configPath, bool llama3DivisorsStored, out IReadOnlyList<(string Name, float[] Values)> computed, out string? multimodal)
    {
        if (!File.Exists(configPath))
            throw new ModelFormatException(configPath, "config.json not found; a Hugging Face checkpoint directory needs one");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
            return ParseConfig(configPath, doc.RootElement, llama3DivisorsStored, out computed, out multimodal);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(configPath, $"not valid JSON: {e.Message}", e);
        }
    }

    private static ModelConfig ParseConfig(string file, JsonElement root, bool llama3DivisorsStored, out IReadOnlyList<(string Name, float[] Values)> computed, out string? multimodal)
    {
        var computedTensors = new List<(string Name, float[] Values)>();
        computed = computedTensors;
        multimodal = null;
        [DoesNotReturn]
        void Fail(string problem) => throw new ModelFormatException(file, problem);
        if (root.ValueKind != JsonValueKind.Object)
            Fail("config is not a JSON object");

        string? architecture = null;
        if (root.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array && archs.GetArrayLength() > 0)
        {
            if (archs.GetArrayLength() != 1 || archs[0].ValueKind != JsonValueKind.String)
                Fail($"\"architectures\" is {archs.GetRawText()}; expected one class name");
            architecture = archs[0].GetString()!;
        }
        else if (root.TryGetProperty("model_type", out var modelType) && modelType.ValueKind == JsonValueKind.String)
        {
            architecture = modelType.GetString() switch
            {
                "llama" => "LlamaForCausalLM",
                "mistral" => "MistralForCausalLM",
                "qwen2" => "Qwen2ForCausalLM",
                "qwen3" => "Qwen3ForCausalLM",
                "gemma2" => "Gemma2ForCausalLM",
                "gemma3_text" => "Gemma3ForCausalLM",
                "phi3" => "Phi3ForCausalLM",
                "mixtral" => "MixtralForCausalLM",
                "qwen2_moe" => "Qwen2MoeForCausalLM",
                "qwen3_moe" => "Qwen3MoeForCausalLM",
                "gemma3" => "Gemma3ForConditionalGeneration",
                "mistral3" => "Mistral3ForConditionalGeneration",
                "ministral3" => "Ministral3ForCausalLM",
                var other => Fail<string>(file, $"model_type \"{other}\" is not supported (llama, mistral, qwen2, qwen3, gemma2, gemma3_text, gemma3, phi3, mixtral, qwen2_moe, qwen3_moe, mistral3, ministral3)"),
            };
        }
        else
        {
            Fail("neither \"architectures\" nor \"model_type\" says what model this is");
        }

        // A multimodal checkpoint's language model is the text model its text_config describes (transformers' defaults
        // for the keys it leaves out, as for that text model's own config); the image part's settings beside it are
        // not read. tie_word_embeddings may sit at the top level (Gemma3Config's).
        JsonElement? outer = null;
        if (architecture is "Gemma3ForConditionalGeneration" or "Mistral3ForConditionalGeneration")
        {
            bool gemmaImage = architecture == "Gemma3ForConditionalGeneration";
            if (!root.TryGetProperty("text_config", out var text) || text.ValueKind != JsonValueKind.Object)
                Fail($"{architecture} has no \"text_config\" object; its language model's settings belong there");
            // Mistral 3's language model is a Mistral (Mistral Small 3.1) or a Ministral 3.
            string textType = gemmaImage ? "gemma3_text" : "mistral";
            if (text.TryGetProperty("model_type", out var type) && type.ValueKind != JsonValueKind.Null
                && !(type.ValueKind == JsonValueKind.String && (type.GetString() == textType || (!gemmaImage && type.GetString() == "ministral3"))))
                Fail($"\"text_config\".\"model_type\" is {type.GetRawText()}; {architecture}'s language model is \"{textType}\"{(gemmaImage ? "" : " or \"ministral3\"")}");
            multimodal = architecture;
            outer = root;
            root = text;
            architecture = gemmaImage ? "Gemma3ForCausalLM" : type.ValueKind == JsonValueKind.String && type.GetString() == "ministral3" ? "Ministral3ForCausalLM" : "MistralForCausalLM";
        }

        bool qwen = architecture is "Qwen2ForCausalLM" or "Qwen3ForCausalLM" or "Qwen2MoeForCausalLM" or "Qwen3MoeForCausalLM";
        bool qwen3 = architecture is "Qwen3ForCausalLM" or "Qwen3MoeForCausalLM";
        bool gemma3 = architecture == "Gemma3ForCausalLM";
        bool gemma = gemma3 || architecture == "Gemma2ForCausalLM";
        bool phi3 = architecture == "Phi3ForCausalLM";
        bool ministral3 = architecture == "Ministral3ForCausalLM";
        string ggufArch = architecture switch
        {
            "LlamaForCausalLM" or "MistralForCausalLM" => "llama",
            "Qwen2ForCausalLM" => "qwen2",
            "Qwen3ForCausalLM" => "qwen3",
            "Gemma2ForCausalLM" => "gemma2",
            "Gemma3ForCausalLM" => "gemma3",
            "Phi3ForCausalLM" => "phi3",
            "MixtralForCausalLM" => "llama",
            "Qwen2MoeForCausalLM" => "qwen2moe",
            "Qwen3MoeForCausalLM" => "qwen3moe",
            "Ministral3ForCausalLM" => "mistral3",
            _ => Fail<string>(file, $"architecture \"{architecture}\" is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, Ministral3ForCausalLM, Gemma3ForConditionalGeneration, Mistral3ForConditionalGeneration)"),
        };

        string Key(string key) => outer is null ? $"\"{key}\"" : $"\"text_config\".\"{key}\"";
        int RequiredInt(string key)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return gemma3 && Gemma3TextDefaults.TryGetValue(key, out int fallback) ? fallback : Fail<int>(file, $"{Key(key)} is missing");
            return PositiveInt(key, v);
        }
        int OptionalInt(string key, int fallback)
            => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? PositiveInt(key, v) : fallback;
        int PositiveInt(string key, JsonElement v)
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int value) || value <= 0)
                Fail($"{Key(key)} is {v.GetRawText()}; expected a positive integer");
            return value;
        }
        double OptionalDouble(string key, double fallback, bool nullIsFallback = true)
        {
            if (!root.TryGetProperty(key, out var v) || (nullIsFallback && v.ValueKind == JsonValueKind.Null))
                return fallback;
            if (v.ValueKind == JsonValueKind.Null)
                return 0;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double value) || !double.IsFinite(value) || value <= 0)
                Fail($"{Key(key)} is {v.GetRawText()}; expected a positive number");
            return value;
        }
        bool OptionalBool(string key, bool fallback)
        {
            if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return fallback;
            if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                Fail($"{Key(key)} is {v.GetRawText()}; expected true or false");
            return v.GetBoolean();
        }

        int dim = RequiredInt("hidden_size");
        int hidden = RequiredInt("intermediate_size");
        int layers = RequiredInt("num_hidden_layers");
        int heads = RequiredInt("num_attention_heads");
        int kvHeads = OptionalInt("num_key_value_heads", gemma3 ? Gemma3TextDefaults["num_key_value_heads"] : ministral3 ? 8 : heads);
        int vocab = RequiredInt("vocab_size");
        // transformers' defaults when a key is absent.
        int headDim = OptionalInt("head_dim", qwen3 || ministral3 ? 128 : gemma ? 256 : dim / heads);
        int maxPositions = OptionalInt("max_position_embeddings", architecture switch
        {
            "LlamaForCausalLM" => 2048,
            "MistralForCausalLM" => 4096 * 32,
            "Gemma2ForCausalLM" => 8192,
            "Gemma3ForCausalLM" => 131072,
            "Phi3ForCausalLM" => 4096,
            "Ministral3ForCausalLM" => 262144,
            _ => 32768,
        });
        double eps = OptionalDouble("rms_norm_eps", ministral3 ? 1e-5 : 1e-6);
        bool tied = OptionalBool("tie_word_embeddings", outer is { } o && o.TryGetProperty("tie_word_embeddings", out var outerTie)
            && outerTie.ValueKind is JsonValueKind.True or JsonValueKind.False ? outerTie.GetBoolean() : gemma);
        bool attentionBias = architecture is "Qwen2ForCausalLM" or "Qwen2MoeForCausalLM" || OptionalBool("attention_bias", false);

        // Mixture of experts, routed as llama.cpp's architecture routes it: Mixtral (llama) and Qwen3-MoE divide the
        // top-k weights by their sum, Qwen2-MoE does not; a config asking otherwise would run otherwise in llama.cpp.
        int experts = 0, expertsUsed = 0, expertHidden = 0, sharedHidden = 0;
        bool normalizeExperts = false;
        if (architecture is "MixtralForCausalLM" or "Qwen2MoeForCausalLM" or "Qwen3MoeForCausalLM")
        {
            bool mixtral = architecture == "MixtralForCausalLM";
            experts = RequiredInt(mixtral ? "num_local_experts" : "num_experts");
            expertsUsed = RequiredInt("num_experts_per_tok");
            if (expertsUsed > experts)
                Fail($"\"num_experts_per_tok\" is {expertsUsed}, more than the {experts} experts");
            expertHidden = mixtral ? hidden : RequiredInt("moe_intermediate_size");
            normalizeExperts = architecture != "Qwen2MoeForCausalLM";
            if (!mixtral)
            {
                bool normalizeTopK = OptionalBool("norm_topk_prob", false);
                if (normalizeTopK != normalizeExperts)
                    Fail($"\"norm_topk_prob\" is {(normalizeTopK ? "true" : "false")}; llama.cpp's {(qwen3 ? "qwen3moe" : "qwen2moe")} {(normalizeExperts ? "normalises" : "does not normalise")} the routing weights");
                if (OptionalInt("decoder_sparse_step", 1) != 1)
                    Fail("\"decoder_sparse_step\" is not 1; only models whose every layer is sparse are supported");
                if (root.TryGetProperty("mlp_only_layers", out var dense) && dense.ValueKind == JsonValueKind.Array && dense.GetArrayLength() > 0)
                    Fail($"\"mlp_only_layers\" is {dense.GetRawText()}; only models whose every layer is sparse are supported");
            }
            if (architecture == "Qwen2MoeForCausalLM")
                sharedHidden = RequiredInt("shared_expert_intermediate_size");
        }

        if (!root.TryGetProperty("head_dim", out _) && architecture != "Qwen3ForCausalLM" && !gemma && !ministral3 && dim % heads != 0)
            Fail($"num_attention_heads {heads} does not divide hidden_size {dim} (and there is no head_dim)");
        if (heads % kvHeads != 0)
            Fail($"num_key_value_heads {kvHeads} does not divide num_attention_heads {heads}");
        if (headDim % 2 != 0)
            Fail($"head_dim {headDim} is odd; rotary embedding needs pairs");
        if (OptionalBool("mlp_bias", false))
            Fail("\"mlp_bias\": true is not supported (feed-forward biases)");
        // Gemma names its activation hidden_activation (older configs hidden_act); llama.cpp runs GELU's tanh form.
        string activationKey = gemma && root.TryGetProperty("hidden_activation", out _) ? "hidden_activation" : "hidden_act";
        if (root.TryGetProperty(activationKey, out var act) && act.ValueKind != JsonValueKind.Null
            && !(act.ValueKind == JsonValueKind.String && (gemma ? act.GetString() is "gelu_pytorch_tanh" : act.GetString() is "silu" or "swish")))
            Fail($"\"{activationKey}\" {act.GetRawText()} is not supported ({(gemma ? "gelu_pytorch_tanh" : "silu")})");
        // Phi-3 rotates the first partial_rotary_factor · hidden_size / heads values of each head (llama.cpp's converter's
        // rounding) and counts its rotary scaling from original_max_position_embeddings, which its converter requires.
        int ropeDimensions = headDim;
        int originalContext = 0;
        if (phi3)
        {
            double partial = OptionalDouble("partial_rotary_factor", 1.0);
            ropeDimensions = (int)(partial * dim) / heads;
            if (ropeDimensions % 2 != 0 || ropeDimensions < 2 || ropeDimensions > headDim)
                Fail($"partial_rotary_factor {partial} gives {ropeDimensions} rotating values of a head of {headDim}; expected an even number from 2 to {headDim}");
            originalContext = RequiredInt("original_max_position_embeddings");
        }
        // Rotary scaling, as llama.cpp's converter reads it: "linear" divides positions by the factor; "llama3" divides
        // each pair's frequency by a factor computed once (rope_freqs.weight); "yarn" is llama.cpp's YaRN; Phi-3's
        // "longrope" ("su") keeps both factor lists as tensors and an attention factor. "dynamic" (NTK) is refused:
        // llama.cpp's converter writes such a model unscaled and llama.cpp has no dynamic scaling to run it with.
        // The rotary parameters: transformers v5's rope_parameters (rope_theta inside; Gemma 3's per layer type, the sliding
        // layers' base in "sliding_attention") or the older rope_scaling beside rope_theta; a Ministral 3 config without
        // them takes Ministral3Config's.
        string ropeKey = "rope_scaling";
        JsonElement? rope = null;
        double? slidingTheta = null;
        if (root.TryGetProperty("rope_parameters", out var ropeParameters) && ropeParameters.ValueKind != JsonValueKind.Null)
            (ropeKey, rope) = ("rope_parameters", ropeParameters);
        else if (root.TryGetProperty("rope_scaling", out var ropeScaling) && ropeScaling.ValueKind != JsonValueKind.Null)
            rope = ropeScaling;
        else if (ministral3)
            (ropeKey, rope) = ("rope_parameters", Ministral3DefaultRope);
        if (ropeKey == "rope_parameters" && rope is { ValueKind: not JsonValueKind.Object })
            Fail($"{Key(ropeKey)} is {rope.Value.GetRawText()}; expected an object");
        if (rope is { ValueKind: JsonValueKind.Object } perType && (perType.TryGetProperty("full_attention", out var full) | perType.TryGetProperty("sliding_attention", out var local)))
        {
            if (!gemma3)
                Fail($"{Key(ropeKey)} per layer type is supported for Gemma 3 only");
            if (full.ValueKind != JsonValueKind.Object || local.ValueKind != JsonValueKind.Object)
                Fail($"{Key(ropeKey)} needs a \"full_attention\" and a \"sliding_attention\" object");
            if (local.TryGetProperty("rope_type", out var localType) && !(localType.ValueKind == JsonValueKind.String && localType.GetString() == "default"))
                Fail($"{Key(ropeKey)}.\"sliding_attention\".\"rope_type\" is {localType.GetRawText()}; Gemma 3's sliding layers rotate unscaled (default)");
            if (local.TryGetProperty("rope_theta", out var localTheta))
                slidingTheta = localTheta.ValueKind == JsonValueKind.Number && localTheta.TryGetDouble(out double lt) && double.IsFinite(lt) && lt > 0
                    ? lt : Fail<double>(file, $"{Key(ropeKey)}.\"sliding_attention\".\"rope_theta\" is {localTheta.GetRawText()}; expected a positive number");
            (ropeKey, rope) = (ropeKey + "\".\"full_attention", full);
        }
        double ropeTheta = rope is { ValueKind: JsonValueKind.Object } withTheta && withTheta.TryGetProperty("rope_theta", out var innerTheta)
            ? (innerTheta.ValueKind == JsonValueKind.Number && innerTheta.TryGetDouble(out double it) && double.IsFinite(it) && it > 0
                ? it : Fail<double>(file, $"{Key(ropeKey)}.\"rope_theta\" is {innerTheta.GetRawText()}; expected a positive number"))
            : OptionalDouble("rope_theta", gemma3 ? 1_000_000 : 10000);

        float linearFactor = 1f;
        bool llama3 = false, yarn = false, longRope = false;
        float betaFast = 32f, betaSlow = 1f, attentionFactor = 1f, yarnLogMultiplier = 0f, temperature = 0f;
        if (rope is JsonElement scaling)
        {
            // rope_parameters without a type are transformers v5's default rotation.
            string kind = scaling.ValueKind == JsonValueKind.Object
                && (scaling.TryGetProperty("rope_type", out var t) || scaling.TryGetProperty("type", out t))
                && t.ValueKind == JsonValueKind.String ? t.GetString()!
                : ropeKey.StartsWith("rope_parameters", StringComparison.Ordinal) ? "default" : scaling.GetRawText();
            double ScalingNumber(string key, double? fallback)
            {
                if (!scaling.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                    return fallback ?? Fail<double>(file, $"\"{ropeKey}\" of type \"{kind}\" has no \"{key}\"");
                if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double value) || !double.IsFinite(value) || value <= 0)
                    Fail($"\"{ropeKey}\".\"{key}\" is {v.GetRawText()}; expected a positive number");
                return value;
            }
            double? OptionalScalingNumber(string key)
            {
                if (!scaling.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                    return null;
                if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double value) || !double.IsFinite(value) || value < 0)
                    Fail($"\"{ropeKey}\".\"{key}\" is {v.GetRawText()}; expected a number ≥ 0");
                return value;
            }
            float[] Factors(string key)
            {
                if (!scaling.TryGetProperty(key, out var list) || list.ValueKind != JsonValueKind.Array)
                    Fail($"\"{ropeKey}\" of type \"{kind}\" has no \"{key}\" list");
                if (list.GetArrayLength() != ropeDimensions / 2)
                    Fail($"\"{ropeKey}\".\"{key}\" has {list.GetArrayLength()} values; the {ropeDimensions} rotating values of a head need {ropeDimensions / 2}");
                return [.. list.EnumerateArray().Select(v => v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d) && double.IsFinite(d) && d > 0
                    ? (float)d : Fail<float>(file, $"\"{ropeKey}\".\"{key}\" holds {v.GetRawText()}; expected positive numbers"))];
            }
            if (phi3 && kind is not ("default" or "longrope" or "su"))
                Fail($"\"{ropeKey}\" of type \"{kind}\" is not supported for Phi-3 (longrope, su)");
            if (gemma && kind == "yarn")
                Fail($"\"{ropeKey}\" of type \"{kind}\" is not supported for Gemma (default, linear)");
            if (ministral3 && kind != "yarn")
                Fail($"\"{ropeKey}\" of type \"{kind}\" is not supported for Ministral 3 (yarn, as llama.cpp's converter requires)");
            switch (kind)
            {
                case "default":
                    break;
                case "linear":
                    linearFactor = (float)ScalingNumber("factor", null);
                    break;
                case "llama3":
                    llama3 = true;
                    if (llama3DivisorsStored)
                        break; // the divisors are read with the weights
                    double low = ScalingNumber("low_freq_factor", 1.0), high = ScalingNumber("high_freq_factor", 4.0);
                    if (!(high > low))
                        Fail($"\"rope_scaling\": high_freq_factor {high} must exceed low_freq_factor {low}");
                    computedTensors.Add((TensorNames.RopeFrequencies, RopeScaling.Llama3Factors(headDim, (float)ropeTheta, ScalingNumber("factor", null), low, high,
                        (int)ScalingNumber("original_max_position_embeddings", 8192))));
                    break;
                case "yarn":
                    // Ministral 3's mscale and mscale_all_dim give transformers' attention factor get_mscale(s, mscale) /
                    // get_mscale(s, mscale_all_dim) (get_mscale(s) unless both are non-zero), which llama.cpp's mistral3
                    // computes from the latter with mscale 1; its queries take Llama 4's temperature.
                    foreach (string key in ministral3 ? (string[])["attention_factor"] : ["attention_factor", "mscale", "mscale_all_dim"])
                    {
                        if (scaling.TryGetProperty(key, out var extra) && extra.ValueKind != JsonValueKind.Null)
                            Fail($"\"{ropeKey}\".\"{key}\" is not supported (YaRN with llama.cpp's own attention factor, 1 + 0.1·ln(factor))");
                    }
                    if (ministral3)
                    {
                        double mscale = OptionalScalingNumber("mscale") ?? 0, mscaleAllDim = OptionalScalingNumber("mscale_all_dim") ?? 0;
                        if (mscale != 0 && mscaleAllDim != 0)
                        {
                            if (mscale != 1)
                                Fail($"\"{ropeKey}\".\"mscale\" is {mscale}; llama.cpp's mistral3 takes 1");
                            yarnLogMultiplier = (float)mscaleAllDim;
                        }
                        temperature = (float)(OptionalScalingNumber("llama_4_scaling_beta") ?? Fail<double>(file, $"\"{ropeKey}\" has no \"llama_4_scaling_beta\"; Ministral 3 needs it"));
                    }
                    if (scaling.TryGetProperty("truncate", out var truncate) && truncate.ValueKind == JsonValueKind.False)
                        Fail($"\"{ropeKey}\".\"truncate\": false is not supported (llama.cpp rounds YaRN's correction range outwards)");
                    yarn = true;
                    linearFactor = (float)ScalingNumber("factor", null);
                    originalContext = (int)ScalingNumber("original_max_position_embeddings", null);
                    betaFast = (float)ScalingNumber("beta_fast", 32);
                    betaSlow = (float)ScalingNumber("beta_slow", 1);
                    break;
                case "longrope" or "su" when phi3:
                    longRope = true;
                    // llama.cpp's converter: √(1 + ln(s) / ln(original)) for s = max_position_embeddings / original > 1.
                    double scale = (double)maxPositions / originalContext;
                    attentionFactor = scale > 1 ? (float)Math.Sqrt(1 + Math.Log(scale) / Math.Log(originalContext)) : 1f;
                    computedTensors.Add((TensorNames.RopeFactorsLong, Factors("long_factor")));
                    computedTensors.Add((TensorNames.RopeFactorsShort, Factors("short_factor")));
                    break;
                case "dynamic":
                    Fail($"\"{ropeKey}\" of type \"dynamic\" (NTK) is not supported: llama.cpp has no dynamic NTK scaling at runtime and its converter writes the model unscaled");
                    break;
                default:
                    Fail($"\"{ropeKey}\" of type \"{kind}\" is not supported (default, linear, llama3, yarn; longrope for Phi-3)");
                    break;
            }
        }

        // Sliding windows: Mistral's on every layer; Gemma 2's on even layers, Gemma 3's on five layers of six (the last
        // of each six global, with its own rotary base for the others); Qwen's, with use_sliding_window, on the layers
        // from max_window_layers on.
        int slidingWindow = 0, slidingPeriod = 0, firstSliding = 0;
        if (ministral3)
        {
            // Ministral3Config's window is null unless given; it slides on every layer, as Mistral's.
            if (root.TryGetProperty("sliding_window", out var ministralWindow) && ministralWindow.ValueKind != JsonValueKind.Null)
                slidingWindow = PositiveInt("sliding_window", ministralWindow);
        }
        else if (architecture == "MistralForCausalLM")
        {
            // MistralConfig's default is 4096 positions; null (Mistral 7B v0.2 on, Mistral Small 3) attends to every one.
            if (!root.TryGetProperty("sliding_window", out var mistralWindow))
                slidingWindow = 4096;
            else if (mistralWindow.ValueKind != JsonValueKind.Null)
                slidingWindow = PositiveInt("sliding_window", mistralWindow);
        }
        else if (gemma)
        {
            slidingWindow = OptionalInt("sliding_window", 4096);
            slidingPeriod = gemma3 ? OptionalInt("sliding_window_pattern", 6) : 2;
            if (root.TryGetProperty("layer_types", out var layerTypes) && layerTypes.ValueKind == JsonValueKind.Array)
            {
                var types = layerTypes.EnumerateArray().Select(t => t.ValueKind == JsonValueKind.String ? t.GetString() : null).ToList();
                var expected = Enumerable.Range(0, layers).Select(l => l % slidingPeriod < slidingPeriod - 1 ? "sliding_attention" : "full_attention");
                if (!types.SequenceEqual(expected))
                    Fail($"\"layer_types\" is {layerTypes.GetRawText()}; only every {slidingPeriod}-th layer global is supported");
            }
        }
        else if (qwen)
        {
            // transformers' Qwen2Config (Qwen3's, the MoEs' alike): sliding_window (default 4096; null: none) counts only
            // with use_sliding_window, and layer_types, if given, must be the layers from max_window_layers (default 28) on.
            int window = !OptionalBool("use_sliding_window", false) ? 0
                : !root.TryGetProperty("sliding_window", out var qwenWindow) ? 4096
                : qwenWindow.ValueKind == JsonValueKind.Null ? 0 : PositiveInt("sliding_window", qwenWindow);
            int first = 28;
            if (root.TryGetProperty("max_window_layers", out var maxWindowLayers) && maxWindowLayers.ValueKind != JsonValueKind.Null
                && !(maxWindowLayers.ValueKind == JsonValueKind.Number && maxWindowLayers.TryGetInt32(out first) && first >= 0))
                Fail($"{Key("max_window_layers")} is {maxWindowLayers.GetRawText()}; expected a layer count");
            if (root.TryGetProperty("layer_types", out var layerTypes) && layerTypes.ValueKind == JsonValueKind.Array)
            {
                var types = layerTypes.EnumerateArray().Select(t => t.ValueKind == JsonValueKind.String ? t.GetString() : null);
                var expected = Enumerable.Range(0, layers).Select(l => window > 0 && l >= first ? "sliding_attention" : "full_attention");
                if (!types.SequenceEqual(expected))
                    Fail($"\"layer_types\" is {layerTypes.GetRawText()}; only the layers from max_window_layers ({first}) on may slide, and only with use_sliding_window and a sliding_window");
            }
            if (window > 0 && first < layers)
                (slidingWindow, firstSliding) = (window, first);
        }
        // Phi-3's window is kept to be written back but not run: llama.cpp's phi3 disables it.
        int declaredWindow = phi3 && root.TryGetProperty("sliding_window", out var phiWindow) && phiWindow.ValueKind != JsonValueKind.Null
            ? PositiveInt("sliding_window", phiWindow) : 0;
        float? queryScale = gemma ? 1f / MathF.Sqrt((float)OptionalDouble("query_pre_attn_scalar", 256)) : null;
        float attentionCap = gemma ? (float)OptionalDouble("attn_logit_softcapping", gemma3 ? 0 : 50, nullIsFallback: false) : 0;
        float logitCap = gemma ? (float)OptionalDouble("final_logit_softcapping", gemma3 ? 0 : 30, nullIsFallback: false) : 0;

        var config = new ModelConfig
        {
            Architecture = ggufArch,
            Dim = dim,
            HiddenDim = hidden,
            LayerCount = layers,
            HeadCount = heads,
            KvHeadCount = kvHeads,
            HeadDim = headDim,
            VocabSize = vocab,
            ContextLength = maxPositions,
            RopeTheta = (float)ropeTheta,
            RopeStyle = qwen || gemma || phi3 ? RopeStyle.Neox : RopeStyle.Interleaved,
            RopeScalingFactor = linearFactor,
            RopeFrequencyFactors = llama3,
            Yarn = yarn,
            YarnBetaFast = betaFast,
            YarnBetaSlow = betaSlow,
            LongRope = longRope,
            RopeOriginalContext = originalContext,
            RopeAttentionFactor = attentionFactor,
            YarnLogMultiplier = yarnLogMultiplier,
            AttentionTemperatureScale = temperature,
            DeclaredSlidingWindow = declaredWindow,
            RmsNormEps = (float)eps,
            TiedEmbeddings = tied,
            AttentionBias = attentionBias,
            QkNorm = qwen3 || gemma3,
            SlidingWindow = slidingWindow,
            SlidingWindowPeriod = slidingPeriod,
            FirstSlidingLayer = firstSliding,
            SlidingRopeTheta = gemma3 ? (float)(slidingTheta ?? OptionalDouble("rope_local_base_freq", 10000)) : null,
            Activation = gemma ? FeedForwardActivation.GeluTanh : FeedForwardActivation.Silu,
            ScaleEmbedding = gemma,
            PostNorms = gemma,
            QueryScale = queryScale,
            AttentionSoftCap = attentionCap,
            FinalLogitSoftCap = logitCap,
            ExpertCount = experts,
            ExpertUsedCount = expertsUsed,
            ExpertHiddenDim = expertHidden,
            SharedExpertHiddenDim = sharedHidden,
            NormalizeExpertWeights = normalizeExperts,
        };
        return ropeDimensions == headDim ? config : config with { RopeDimensions = ropeDimensions };
    }

    /// <summary>
    /// The embedding rows llama.cpp's converter keeps of a Gemma 3 checkpoint whose tokenizer is tokenizer.json alone
    /// (no tokenizer.model), when fewer than config.json's vocab_size: it cuts the rows past the tokenizer.json's count,
    /// the entries of its model's vocab plus those of its added_tokens (an added token that repeats a vocab entry counted
    /// twice, as the converter counts it). Null when nothing is cut (another model, a SentencePiece tokenizer, a count
    /// that reaches the rows).
    /// </summary>
    private static int? Gemma3TokenizerJsonRows(string directory, ModelConfig config, Vocabulary vocabulary)
    {
        string json = Path.Combine(directory, "tokenizer.json");
        if (config.Architecture != "gemma3" || File.Exists(Path.Combine(directory, "tokenizer.model")) || !File.Exists(json))
            return null;
        int count;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(json), new JsonDocumentOptions { MaxDepth = 256 });
            var root = doc.RootElement;
            count = root.GetProperty("model").GetProperty("vocab").EnumerateObject().Count()
                + (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array ? added.GetArrayLength() : 0);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            throw new ModelFormatException(json, $"not a valid tokenizer.json: {e.Message}", e);
        }
        if (count >= config.VocabSize)
            return null;
        if (count < vocabulary.Count)
            throw new ModelFormatException(json, $"its {count} entries (vocab and added_tokens, as llama.cpp's converter counts them for Gemma 3) do not reach its highest token id {vocabulary.Count - 1}");
        return count;
    }

    /// <summary>Ministral3Config's rope_parameters when config.json gives none.</summary>
    private static readonly JsonElement Ministral3DefaultRope = JsonDocument.Parse("""
        {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 16.0, "original_max_position_embeddings": 16384, "beta_fast": 32.0,
         "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}
        """).RootElement.Clone();

    /// <summary>Gemma3TextConfig's defaults for the sizes a Gemma 3 config may leave out (Gemma 3 4B's text_config has no
    /// attention head counts and no vocab_size).</summary>
    private static readonly Dictionary<string, int> Gemma3TextDefaults = new(StringComparer.Ordinal)
    {
        ["vocab_size"] = 262_208,
        ["hidden_size"] = 2304,
        ["intermediate_size"] = 9216,
        ["num_hidden_layers"] = 26,
        ["num_attention_heads"] = 8,
        ["num_key_value_heads"] = 4,
    };

    /// <summary>True for the architectures whose Hugging Face norms multiply by (1 + w): Gemma's, whose weights a
    /// <see cref="Model"/> holds (as GGUF does) with the 1 added.</summary>
    internal static bool ShiftedNorms(ModelConfig config) => config.Architecture is "gemma2" or "gemma3";

    /// <summary>An F32 vector in an owned buffer.</summary>
    private static unsafe Tensor FloatTensor(string name, float[] values, List<IDisposable> owned)
    {
        var buffer = NativeBuffer.Allocate(values.Length * sizeof(float));
        owned.Add(buffer);
        values.CopyTo(new Span<float>(buffer.Pointer, values.Length));
        return new Tensor(name, GgmlType.F32, [values.Length], buffer, 0);
    }

    /// <summary>True for an RMSNorm weight's GGUF name.</summary>
    internal static bool IsNorm(string ggufName) => ggufName.EndsWith("norm.weight", StringComparison.Ordinal);

    /// <summary>An owned F32 copy of the 1-D <paramref name="tensor"/> with <paramref name="shift"/> added to every value.</summary>
    internal static Tensor ShiftNorm(Tensor tensor, float shift, List<IDisposable> owned)
    {
        var values = new float[tensor.ElementCount];
        Dequantize.Row(tensor.Type, tensor.Row(0), values);
        for (int i = 0; i < values.Length; i++)
            values[i] += shift;
        return FloatTensor(tensor.Name, values, owned);
    }

    [DoesNotReturn]
    private static T Fail<T>(string file, string problem) => throw new ModelFormatException(file, problem);

    /// <summary>Every tensor the config implies, in load order, with its shape; q/k entries carry their head count.</summary>
    internal static List<(string Name, long[] Shape, int PermuteHeads)> ExpectedTensors(ModelConfig c)
    {
        var list = new List<(string, long[], int)>();
        if (c.RopeFrequencyFactors)
            list.Add((TensorNames.RopeFrequencies, [c.HeadDim / 2], 0));
        if (c.LongRope)
        {
            list.Add((TensorNames.RopeFactorsLong, [c.RopeDimensions / 2], 0));
            list.Add((TensorNames.RopeFactorsShort, [c.RopeDimensions / 2], 0));
        }
        list.Add((TensorNames.TokenEmbedding, [c.VocabSize, c.Dim], 0));
        for (int l = 0; l < c.LayerCount; l++)
        {
            list.Add((TensorNames.AttentionNorm(l), [c.Dim], 0));
            list.Add((TensorNames.Query(l), [c.QDim, c.Dim], c.HeadCount));
            list.Add((TensorNames.Key(l), [c.KvDim, c.Dim], c.KvHeadCount));
            list.Add((TensorNames.Value(l), [c.KvDim, c.Dim], 0));
            if (c.AttentionBias)
            {
                list.Add((TensorNames.QueryBias(l), [c.QDim], c.HeadCount));
                list.Add((TensorNames.KeyBias(l), [c.KvDim], c.KvHeadCount));
                list.Add((TensorNames.ValueBias(l), [c.KvDim], 0));
            }
            if (c.QkNorm)
            {
                list.Add((TensorNames.QueryNorm(l), [c.HeadDim], 0));
                list.Add((TensorNames.KeyNorm(l), [c.HeadDim], 0));
            }
            list.Add((TensorNames.AttentionOutput(l), [c.Dim, c.QDim], 0));
            if (c.PostNorms)
                list.Add((TensorNames.PostAttentionNorm(l), [c.Dim], 0));
            list.Add((TensorNames.FeedForwardNorm(l), [c.Dim], 0));
            if (c.IsMixtureOfExperts)
            {
                list.Add((TensorNames.ExpertRouter(l), [c.ExpertCount, c.Dim], 0));
                list.Add((TensorNames.GateExperts(l), [c.ExpertCount, c.ExpertHiddenDim, c.Dim], 0));
                list.Add((TensorNames.UpExperts(l), [c.ExpertCount, c.ExpertHiddenDim, c.Dim], 0));
                list.Add((TensorNames.DownExperts(l), [c.ExpertCount, c.Dim, c.ExpertHiddenDim], 0));
                if (c.SharedExpertHiddenDim > 0)
                {
                    list.Add((TensorNames.SharedExpertGate(l), [c.Dim], 0));
                    list.Add((TensorNames.GateShared(l), [c.SharedExpertHiddenDim, c.Dim], 0));
                    list.Add((TensorNames.UpShared(l), [c.SharedExpertHiddenDim, c.Dim], 0));
                    list.Add((TensorNames.DownShared(l), [c.Dim, c.SharedExpertHiddenDim], 0));
                }
            }
            else
            {
                list.Add((TensorNames.Gate(l), [c.HiddenDim, c.Dim], 0));
                list.Add((TensorNames.Up(l), [c.HiddenDim, c.Dim], 0));
                list.Add((TensorNames.Down(l), [c.Dim, c.HiddenDim], 0));
            }
            if (c.PostNorms)
                list.Add((TensorNames.PostFeedForwardNorm(l), [c.Dim], 0));
        }
        list.Add((TensorNames.OutputNorm, [c.Dim], 0));
        if (!c.TiedEmbeddings)
            list.Add((TensorNames.Output, [c.VocabSize, c.Dim], 0));
        return list;
    }

    /// <summary>The tensors a config.json's rope scaling defines, not stored in the weights.</summary>
    internal static bool IsComputedFromConfig(string name) => name is TensorNames.RopeFrequencies or TensorNames.RopeFactorsLong or TensorNames.RopeFactorsShort;

    /// <summary>Phi-3's fused Hugging Face tensors: the suffix of each and the GGUF names of its parts, rows in order.</summary>
    private static readonly (string Suffix, Func<int, string>[] Parts)[] Phi3Fused =
    [
        ("self_attn.qkv_proj.weight", [TensorNames.Query, TensorNames.Key, TensorNames.Value]),
        ("mlp.gate_up_proj.weight", [TensorNames.Gate, TensorNames.Up]),
    ];

    /// <summary>The tensors <paramref name="config"/> implies, as views into the mapped safetensors files (owned copies
    /// where they change). Of a <paramref name="multimodal"/> checkpoint, the language model's under either of
    /// transformers' namings; the <paramref name="image"/> part's tensors are counted, never read.</summary>
    private static List<Tensor> ReadTensors(string directory, ModelConfig config, string? multimodal, List<IDisposable> owned, out (int Tensors, long Parameters) image)
    {
        bool phi3 = config.Architecture == "phi3";
        // GGUF name → (file, stored entry); Phi-3's fused tensors under their Hugging Face names.
        var stored = new Dictionary<string, (SafetensorsFile File, SafetensorsTensorInfo Info)>(StringComparer.Ordinal);
        // (stacked GGUF name, expert) → the routed expert's own 2-D tensor.
        var experts = new Dictionary<(string Name, int Expert), (SafetensorsFile File, SafetensorsTensorInfo Info)>();
        image = (0, 0);
        bool? newNames = null; // a multimodal checkpoint's naming: transformers 4.52's model.language_model.*, or language_model.model.*
        foreach (var file in OpenWeights(directory, owned))
        {
            foreach (var info in file.Tensors)
            {
                string name = info.Name;
                if (multimodal is not null)
                {
                    if (HuggingFaceNames.IsImagePart(name))
                    {
                        image = (image.Tensors + 1, image.Parameters + info.ElementCount);
                        continue;
                    }
                    if (!HuggingFaceNames.TryToTextModel(info.Name, out name, out bool? naming))
                        throw new ModelFormatException(file.Path, $"tensor '{info.Name}' is neither part of {multimodal}'s language model (language_model.model.…, model.language_model.…) nor of its vision tower or projector");
                    if (naming is bool n)
                    {
                        if (newNames is bool seen && seen != n)
                            throw new ModelFormatException(file.Path, $"tensor '{info.Name}' names the language model otherwise than the tensors before it (language_model.model.… and model.language_model.… mixed)");
                        newNames = n;
                    }
                }
                if (HuggingFaceNames.IsIgnored(name))
                    continue;
                string gguf = name;
                bool fused = phi3 && Phi3Fused.Any(f => name.EndsWith("." + f.Suffix, StringComparison.Ordinal));
                if (!fused && config.IsMixtureOfExperts && HuggingFaceNames.TryToGgufMixture(name, out gguf, out int expert))
                {
                    if (expert >= 0)
                    {
                        if (!experts.TryAdd((gguf, expert), (file, info)))
                            throw new ModelFormatException(file.Path, $"tensor '{info.Name}' is stored twice (also in {experts[(gguf, expert)].File.Path})");
                        continue;
                    }
                }
                else if (!fused && !HuggingFaceNames.TryToGguf(name, config.PostNorms, out gguf))
                {
                    throw new ModelFormatException(file.Path, $"tensor '{info.Name}' is not part of a {config.Architecture} model Squeeze knows");
                }
                if (!stored.TryAdd(gguf, (file, info)))
                    throw new ModelFormatException(file.Path, $"tensor '{info.Name}' is stored twice (also in {stored[gguf].File.Path})");
            }
        }

        // A tensor's name as the checkpoint stores it, for messages.
        string Stored(string textName) => multimodal is null ? textName : HuggingFaceNames.ToMultimodal(textName, newNames ?? false);
        bool permute = config.RopeStyle == RopeStyle.Interleaved;
        bool shifted = ShiftedNorms(config);
        var tensors = new List<Tensor>();
        var parts = phi3 ? Phi3Parts(directory, config, stored) : [];
        bool mixtral = config.IsMixtureOfExperts && config.Architecture == "llama";
        foreach (var (name, shape, heads) in ExpectedTensors(config).Where(e => !IsComputedFromConfig(e.Name)))
        {
            if (parts.Remove(name, out var part))
            {
                tensors.Add(part);
                continue;
            }
            if (TensorNames.IsExperts(name))
            {
                tensors.Add(StackExperts(directory, name, shape, mixtral, experts, owned));
                continue;
            }
            string hfName;
            if (!(config.IsMixtureOfExperts && HuggingFaceNames.TryToHuggingFaceMixture(name, mixtral, -1, out hfName)))
                HuggingFaceNames.TryToHuggingFace(name, config.PostNorms, out hfName);
            hfName = Stored(hfName);
            if (!stored.Remove(name, out var entry))
            {
                string why = name == TensorNames.Output ? " (config.json says tie_word_embeddings is false)" : "";
                throw new ModelFormatException(directory, $"tensor '{hfName}' is missing{why}");
            }
            var (file, info) = entry;
            if (!info.IsFloat)
                throw new ModelFormatException(file.Path, $"tensor '{hfName}' is {info.DType}; weights must be F32, F16 or BF16");
            // Qwen2-MoE's shared expert gate is a [1, dim] linear layer; llama.cpp's converter stores it as [dim].
            bool squeezed = name.EndsWith("ffn_gate_inp_shexp.weight", StringComparison.Ordinal) && info.Shape.SequenceEqual([1L, .. shape]);
            if (!info.Shape.SequenceEqual(shape) && !squeezed)
                throw new ModelFormatException(file.Path, $"tensor '{hfName}' has shape [{string.Join(", ", info.Shape)}] but config.json implies [{string.Join(", ", shape)}]");
            var tensor = file.GetTensor(info.Name, name);
            if (squeezed)
                tensor = new Tensor(name, tensor.Type, shape, tensor.Buffer, tensor.Offset);
            if (shifted && IsNorm(name))
                tensors.Add(ShiftNorm(tensor, 1f, owned));
            else
                tensors.Add(permute && heads > 0 ? RotaryOrder.Permute(tensor, heads, toInterleaved: true, owned) : tensor);
        }
        // A tied checkpoint may still store lm_head (a copy of the embedding); transformers ignores it, so do we.
        if (config.TiedEmbeddings)
            stored.Remove(TensorNames.Output);
        if (stored.Count > 0 || experts.Count > 0)
        {
            var (file, info) = stored.Count > 0 ? stored.Values.First() : experts.Values.First();
            throw new ModelFormatException(file.Path, $"tensor '{info.Name}' is not expected by config.json ({stored.Count} unexpected tensor(s))");
        }
        return tensors;
    }

    /// <summary>Phi-3's q, k, v and gate, up projections: views of the rows of each layer's stored qkv_proj and
    /// gate_up_proj (removed from <paramref name="stored"/>), checked against the shapes the config implies.</summary>
    private static Dictionary<string, Tensor> Phi3Parts(string directory, ModelConfig config,
        Dictionary<string, (SafetensorsFile File, SafetensorsTensorInfo Info)> stored)
    {
        var shapes = ExpectedTensors(config).ToDictionary(e => e.Name, e => e.Shape, StringComparer.Ordinal);
        var parts = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (int l = 0; l < config.LayerCount; l++)
        {
            foreach (var (suffix, partNames) in Phi3Fused)
            {
                string hfName = $"model.layers.{l}.{suffix}";
                var names = partNames.Select(p => p(l)).ToArray();
                long rows = names.Sum(n => shapes[n][0]), columns = shapes[names[0]][1];
                if (!stored.Remove(hfName, out var entry))
                    throw new ModelFormatException(directory, $"tensor '{hfName}' is missing");
                var (file, info) = entry;
                if (!info.IsFloat)
                    throw new ModelFormatException(file.Path, $"tensor '{hfName}' is {info.DType}; weights must be F32, F16 or BF16");
                if (!info.Shape.SequenceEqual([rows, columns]))
                    throw new ModelFormatException(file.Path, $"tensor '{hfName}' has shape [{string.Join(", ", info.Shape)}] but config.json implies [{rows}, {columns}]");
                var whole = file.GetTensor(info.Name, hfName);
                long firstRow = 0;
                foreach (string name in names)
                {
                    parts[name] = new Tensor(name, whole.Type, shapes[name], whole.Buffer, whole.Offset + firstRow * whole.RowBytes);
                    firstRow += shapes[name][0];
                }
            }
        }
        return parts;
    }

    /// <summary>The routed experts' 2-D tensors of one projection stacked into the 3-D tensor <paramref name="name"/>
    /// ([experts, rows, columns]) in an owned, mapped temporary file, as llama.cpp's converter stacks them; each is removed from
    /// <paramref name="experts"/>. They must all be there, of one float type and of the shape the config implies.</summary>
    private static Tensor StackExperts(string directory, string name, long[] shape, bool mixtral,
        Dictionary<(string Name, int Expert), (SafetensorsFile File, SafetensorsTensorInfo Info)> experts, List<IDisposable> owned)
    {
        int count = checked((int)shape[0]);
        long[] expertShape = [shape[1], shape[2]];
        var parts = new Tensor[count];
        for (int e = 0; e < count; e++)
        {
            HuggingFaceNames.TryToHuggingFaceMixture(name, mixtral, e, out string hfName);
            if (!experts.Remove((name, e), out var entry))
                throw new ModelFormatException(directory, $"tensor '{hfName}' is missing");
            var (file, info) = entry;
            if (!info.IsFloat)
                throw new ModelFormatException(file.Path, $"tensor '{hfName}' is {info.DType}; weights must be F32, F16 or BF16");
            if (!info.Shape.SequenceEqual(expertShape))
                throw new ModelFormatException(file.Path, $"tensor '{hfName}' has shape [{string.Join(", ", info.Shape)}] but config.json implies [{string.Join(", ", expertShape)}]");
            parts[e] = file.GetTensor(info.Name, name);
            if (parts[e].Type != parts[0].Type)
                throw new ModelFormatException(file.Path, $"tensor '{hfName}' is {parts[e].Type} but expert 0's is {parts[0].Type}; one projection's experts must share a type");
        }
        // Written to a mapped temporary file, not private memory: a Mixtral-8x7B's experts are most of its 90 GB.
        var buffer = NativeBuffer.MapTemporary(checked(parts[0].ByteLength * count), stream =>
        {
            foreach (var part in parts)
            {
                for (long r = 0; r < part.Rows; r++)
                    stream.Write(part.Row(r));
            }
        });
        owned.Add(buffer);
        return new Tensor(name, parts[0].Type, shape, buffer, 0);
    }

    private static List<SafetensorsFile> OpenWeights(string directory, List<IDisposable> owned)
    {
        var files = new List<SafetensorsFile>();
        string single = Path.Combine(directory, WeightsFile);
        if (File.Exists(single))
        {
            var f = SafetensorsFile.Open(single);
            owned.Add(f);
            files.Add(f);
            return files;
        }
        string index = Path.Combine(directory, WeightsIndexFile);
        if (!File.Exists(index))
        {
            string hint = File.Exists(Path.Combine(directory, "pytorch_model.bin")) ? "; pytorch_model.bin (PyTorch pickle) is not supported, convert it to safetensors" : "";
            throw new ModelFormatException(directory, $"no {WeightsFile} or {WeightsIndexFile}{hint}");
        }
        var weightMap = ReadWeightMap(index);
        foreach (string shard in weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
        {
            var f = SafetensorsFile.Open(Path.Combine(directory, shard));
            owned.Add(f);
            files.Add(f);
        }
        foreach (var (name, shard) in weightMap)
        {
            var file = files.First(f => Path.GetFileName(f.Path) == shard);
            if (!file.TryGetInfo(name, out _))
                throw new ModelFormatException(index, $"weight_map puts '{name}' in {shard}, which does not hold it");
        }
        return files;
    }

    private static Dictionary<string, string> ReadWeightMap(string index)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(index, "no \"weight_map\" object");
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                string? shard = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString() : null;
                // Shards must be plain file names inside the directory.
                if (string.IsNullOrEmpty(shard) || shard != Path.GetFileName(shard) || shard is "." or "..")
                    throw new ModelFormatException(index, $"weight_map entry '{entry.Name}' names {entry.Value.GetRawText()}, not a file in the checkpoint directory");
                if (!result.TryAdd(entry.Name, shard))
                    throw new ModelFormatException(index, $"weight_map names '{entry.Name}' twice");
            }
            return result;
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(index, $"not valid JSON: {e.Message}", e);
        }
    }

    private static Vocabulary ReadVocabulary(string directory)
    {
        string json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json))
            return VocabularyReader.FromTokenizerJson(json);
        string model = Path.Combine(directory, "tokenizer.model");
        if (File.Exists(model))
            return VocabularyReader.FromSentencePieceModel(model);
        throw new ModelFormatException(directory, $"no tokenizer found; looked for {json} and {model}");
    }
}
