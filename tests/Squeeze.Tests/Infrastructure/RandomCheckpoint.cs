using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Squeeze.Tests.Infrastructure;

/// <summary>
/// A small randomly initialised Hugging Face checkpoint, described by its config: <see cref="Write"/> makes config.json,
/// model.safetensors (F32 or BF16, seeded) and copies the tokenizer files of a real model. Weights are scaled so that
/// activations keep their size through the layers and the logits are far from uniform (std ≈ <see cref="LogitScale"/>).
/// Written by hand from the Hugging Face conventions, independent of Squeeze's own writers.
/// </summary>
public sealed record RandomCheckpoint
{
    /// <summary>A Llama 2 (untied classifier, unscaled rotary embedding) with stories15M's SentencePiece tokenizer.</summary>
    public static RandomCheckpoint Llama2 => new()
    {
        Architecture = "LlamaForCausalLM",
        ModelType = "llama",
        VocabSize = 32000,
        TokenizerDirectory = SharedData.Path("models", "stories15M"),
    };

    /// <summary>transformers class: "LlamaForCausalLM", "Qwen3ForCausalLM" …</summary>
    public required string Architecture { get; init; }

    /// <summary>config.json's model_type: "llama", "qwen3" …</summary>
    public required string ModelType { get; init; }

    /// <summary>Embedding rows (config.json's vocab_size); may exceed the tokenizer's tokens, as Qwen's do.</summary>
    public required int VocabSize { get; init; }

    /// <summary>Folder whose tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model) are copied.</summary>
    public required string TokenizerDirectory { get; init; }

    public int HiddenSize { get; init; } = 64;

    public int IntermediateSize { get; init; } = 128;

    public int Layers { get; init; } = 2;

    public int Heads { get; init; } = 4;

    public int KvHeads { get; init; } = 2;

    /// <summary>Values per head; written as head_dim when set.</summary>
    public int? HeadDim { get; init; }

    public int MaxPositions { get; init; } = 2048;

    public double RopeTheta { get; init; } = 10000;

    public double RmsNormEps { get; init; } = 1e-5;

    public bool TieWordEmbeddings { get; init; }

    /// <summary>q, k and v biases (Qwen2's).</summary>
    public bool AttentionBias { get; init; }

    /// <summary>Per-head RMSNorm of q and k (Qwen3's).</summary>
    public bool QkNorm { get; init; }

    /// <summary>Gemma 2 and 3: RMSNorm on both sides of each sub-layer (pre_feedforward_layernorm,
    /// post_feedforward_layernorm; post_attention_layernorm then norms the attention's output), and norm weights
    /// that multiply by (1 + w), drawn around 0 instead of 1.</summary>
    public bool GemmaNorms { get; init; }

    /// <summary>Phi-3's layout: q, k and v in one self_attn.qkv_proj (rows in that order), gate and up in one
    /// mlp.gate_up_proj.</summary>
    public bool FusedProjections { get; init; }

    /// <summary>Routed experts of every layer (0: a dense feed-forward): Mixtral's block_sparse_moe.experts.E.w1/w2/w3
    /// and num_local_experts for MixtralForCausalLM, else Qwen-MoE's mlp.experts.E.gate_proj/up_proj/down_proj and
    /// num_experts; each with its router (…gate.weight).</summary>
    public int Experts { get; init; }

    /// <summary>Experts each token is routed to (num_experts_per_tok).</summary>
    public int ExpertsUsed { get; init; }

    /// <summary>Qwen-MoE's moe_intermediate_size: one routed expert's width (Mixtral's is intermediate_size).</summary>
    public int ExpertIntermediateSize { get; init; }

    /// <summary>Qwen2-MoE's shared_expert_intermediate_size (0: no shared expert): mlp.shared_expert.* and its
    /// [1, hidden] mlp.shared_expert_gate.</summary>
    public int SharedExpertIntermediateSize { get; init; }

    /// <summary>Standard deviation of the router's weights times √hidden: how far apart the experts' probabilities are.</summary>
    public double RouterScale { get; init; } = 2;

    private bool Mixtral => Architecture == "MixtralForCausalLM";

    /// <summary>config.json's hidden_act.</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>config.json's rope_scaling object, or null.</summary>
    public JsonObject? RopeScaling { get; init; }

    /// <summary>Further config.json keys (e.g. sliding_window), written as given.</summary>
    public IReadOnlyDictionary<string, JsonNode?> ExtraConfig { get; init; } = new Dictionary<string, JsonNode?>();

    /// <summary>tokenizer_config.json written instead of the tokenizer directory's (Phi-3's added tokens), or null.</summary>
    public JsonObject? TokenizerConfig { get; init; }

    /// <summary>Store the weights as BF16 (rounded to nearest even) instead of F32.</summary>
    public bool BFloat16 { get; init; }

    /// <summary>q and k projections are this many times larger than the others, so attention scores spread (std ≈ this
    /// squared) and the attention, and with it the rotary positions, shape the logits.</summary>
    public double QueryKeyScale { get; init; } = 2;

    /// <summary>Standard deviation the logits have at initialisation.</summary>
    public double LogitScale { get; init; } = 3;

    public int Seed { get; init; } = 42;

    /// <summary>Keys left out of config.json (of text_config for a multimodal checkpoint), so that transformers' defaults apply.</summary>
    public IReadOnlyList<string> OmittedKeys { get; init; } = [];

    /// <summary>The multimodal class (e.g. "Gemma3ForConditionalGeneration") whose language model this checkpoint is, or
    /// null for a text model: config.json nests the text model's settings under text_config beside a vision_config, the
    /// text model's tensors are named as <see cref="NewMultimodalNames"/> says, and a few small vision-tower and
    /// projector tensors lie beside them.</summary>
    public string? Multimodal { get; init; }

    /// <summary>config.json's top-level model_type of a <see cref="Multimodal"/> checkpoint ("gemma3", "mistral3").</summary>
    public string MultimodalModelType { get; init; } = "";

    /// <summary>transformers ≥ 4.52's names (model.language_model.*, lm_head.weight, model.vision_tower.*) instead of
    /// language_model.model.*, language_model.lm_head.weight and vision_tower.*.</summary>
    public bool NewMultimodalNames { get; init; }

    private int ResolvedHeadDim => HeadDim ?? HiddenSize / Heads;

    /// <summary>Writes the checkpoint into <paramref name="directory"/> (created) and returns it.</summary>
    public string Write(string directory)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "config.json"), Config().ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        foreach (string name in new[] { "tokenizer.json", "tokenizer_config.json", "tokenizer.model" })
        {
            string source = Path.Combine(TokenizerDirectory, name);
            if (File.Exists(source) && !(name == "tokenizer_config.json" && TokenizerConfig is not null))
                File.Copy(source, Path.Combine(directory, name));
        }
        if (TokenizerConfig is not null)
            File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), TokenizerConfig.ToJsonString());
        WriteSafetensors(Path.Combine(directory, "model.safetensors"));
        return directory;
    }

    /// <summary>config.json as transformers writes it for this class (a multimodal one: the text model's under text_config).</summary>
    public JsonObject Config()
    {
        var text = TextConfig();
        if (Multimodal is null)
            return text;
        text.Remove("architectures");
        return new JsonObject
        {
            ["architectures"] = new JsonArray(Multimodal),
            ["model_type"] = MultimodalModelType,
            ["text_config"] = text,
            ["vision_config"] = new JsonObject
            {
                ["hidden_size"] = VisionWidth,
                ["image_size"] = 16,
                ["patch_size"] = 4,
                ["num_hidden_layers"] = 1,
                ["num_attention_heads"] = 2,
                ["model_type"] = "siglip_vision_model",
            },
            ["mm_tokens_per_image"] = 4,
            ["image_token_index"] = VocabSize - 1,
            ["torch_dtype"] = BFloat16 ? "bfloat16" : "float32",
        };
    }

    private const int VisionWidth = 16;

    /// <summary>The text model's config.json.</summary>
    private JsonObject TextConfig()
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray(Architecture),
            ["model_type"] = ModelType,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = Layers,
            ["num_attention_heads"] = Heads,
            ["num_key_value_heads"] = KvHeads,
            ["vocab_size"] = VocabSize,
            ["max_position_embeddings"] = MaxPositions,
            ["rope_theta"] = RopeTheta,
            ["rms_norm_eps"] = RmsNormEps,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["hidden_act"] = HiddenAct,
            ["attention_bias"] = AttentionBias,
            ["rope_scaling"] = RopeScaling?.DeepClone(),
            ["torch_dtype"] = BFloat16 ? "bfloat16" : "float32",
        };
        if (HeadDim is int headDim)
            config["head_dim"] = headDim;
        if (Experts > 0)
        {
            config[Mixtral ? "num_local_experts" : "num_experts"] = Experts;
            config["num_experts_per_tok"] = ExpertsUsed;
            if (!Mixtral)
                config["moe_intermediate_size"] = ExpertIntermediateSize;
            if (SharedExpertIntermediateSize > 0)
                config["shared_expert_intermediate_size"] = SharedExpertIntermediateSize;
        }
        foreach (var (key, value) in ExtraConfig)
            config[key] = value?.DeepClone();
        foreach (string key in OmittedKeys)
            config.Remove(key);
        return config;
    }

    /// <summary>Every stored tensor as the checkpoint names it: <see cref="Tensors"/>, and for a multimodal checkpoint
    /// under its naming, with the image part's tensors after them.</summary>
    public IEnumerable<(string Name, long[] Shape, double Std, bool Norm)> StoredTensors()
    {
        if (Multimodal is null)
        {
            foreach (var t in Tensors())
                yield return t;
            yield break;
        }
        foreach (var (name, shape, std, norm) in Tensors())
        {
            string stored = name == "lm_head.weight"
                ? (NewMultimodalNames ? name : "language_model." + name)
                : (NewMultimodalNames ? "model.language_model." : "language_model.model.") + name["model.".Length..];
            yield return (stored, shape, std, norm);
        }
        string vision = NewMultimodalNames ? "model.vision_tower.vision_model." : "vision_tower.vision_model.";
        string projector = NewMultimodalNames ? "model.multi_modal_projector." : "multi_modal_projector.";
        yield return (vision + "embeddings.patch_embedding.weight", [VisionWidth, 3, 4, 4], 0.1, false);
        yield return (vision + "embeddings.position_embedding.weight", [16, VisionWidth], 0.1, false);
        yield return (vision + "post_layernorm.weight", [VisionWidth], 0.1, true);
        yield return (projector + "mm_input_projection_weight", [VisionWidth, HiddenSize], 0.1, false);
        yield return (projector + "mm_soft_emb_norm.weight", [VisionWidth], 0.1, true);
    }

    /// <summary>Every tensor with its Hugging Face name, shape and the standard deviation of its random values
    /// (norm weights are 1 + N(0, 0.1²), or N(0, 0.1²) for Gemma's (1 + w) norms).</summary>
    public IEnumerable<(string Name, long[] Shape, double Std, bool Norm)> Tensors()
    {
        int dim = HiddenSize, qDim = Heads * ResolvedHeadDim, kvDim = KvHeads * ResolvedHeadDim, hidden = IntermediateSize;
        // Embedding rows of std s give logits of std s·√dim when tied; a separate lm_head gets that scale instead.
        double embeddingStd = TieWordEmbeddings ? LogitScale / Math.Sqrt(dim) : 1;
        yield return ("model.embed_tokens.weight", [VocabSize, dim], embeddingStd, false);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            yield return (p + "input_layernorm.weight", [dim], 0.1, true);
            if (FusedProjections)
            {
                yield return (p + "self_attn.qkv_proj.weight", [qDim + 2 * kvDim, dim], QueryKeyScale / Math.Sqrt(dim), false);
            }
            else
            {
                yield return (p + "self_attn.q_proj.weight", [qDim, dim], QueryKeyScale / Math.Sqrt(dim), false);
                yield return (p + "self_attn.k_proj.weight", [kvDim, dim], QueryKeyScale / Math.Sqrt(dim), false);
                yield return (p + "self_attn.v_proj.weight", [kvDim, dim], 1 / Math.Sqrt(dim), false);
            }
            if (AttentionBias)
            {
                yield return (p + "self_attn.q_proj.bias", [qDim], 0.1, false);
                yield return (p + "self_attn.k_proj.bias", [kvDim], 0.1, false);
                yield return (p + "self_attn.v_proj.bias", [kvDim], 0.1, false);
            }
            if (QkNorm)
            {
                yield return (p + "self_attn.q_norm.weight", [ResolvedHeadDim], 0.1, true);
                yield return (p + "self_attn.k_norm.weight", [ResolvedHeadDim], 0.1, true);
            }
            yield return (p + "self_attn.o_proj.weight", [dim, qDim], 1 / Math.Sqrt(qDim), false);
            yield return (p + "post_attention_layernorm.weight", [dim], 0.1, true);
            if (GemmaNorms)
            {
                yield return (p + "pre_feedforward_layernorm.weight", [dim], 0.1, true);
                yield return (p + "post_feedforward_layernorm.weight", [dim], 0.1, true);
            }
            if (Experts > 0)
            {
                foreach (var tensor in MixtureOfExperts(p))
                    yield return tensor;
                continue;
            }
            if (FusedProjections)
            {
                yield return (p + "mlp.gate_up_proj.weight", [2 * hidden, dim], 1 / Math.Sqrt(dim), false);
            }
            else
            {
                yield return (p + "mlp.gate_proj.weight", [hidden, dim], 1 / Math.Sqrt(dim), false);
                yield return (p + "mlp.up_proj.weight", [hidden, dim], 1 / Math.Sqrt(dim), false);
            }
            yield return (p + "mlp.down_proj.weight", [dim, hidden], 1 / Math.Sqrt(hidden), false);
        }
        yield return ("model.norm.weight", [dim], 0.1, true);
        if (!TieWordEmbeddings)
            yield return ("lm_head.weight", [VocabSize, dim], LogitScale / Math.Sqrt(dim), false);
    }

    // One layer's router, routed experts (each its own 2-D tensors, as transformers stores them) and shared expert.
    private IEnumerable<(string Name, long[] Shape, double Std, bool Norm)> MixtureOfExperts(string p)
    {
        int dim = HiddenSize, hidden = Mixtral ? IntermediateSize : ExpertIntermediateSize;
        string block = Mixtral ? "block_sparse_moe." : "mlp.";
        yield return (p + block + "gate.weight", [Experts, dim], RouterScale / Math.Sqrt(dim), false);
        for (int e = 0; e < Experts; e++)
        {
            string x = $"{p}{block}experts.{e}.";
            yield return (x + (Mixtral ? "w1.weight" : "gate_proj.weight"), [hidden, dim], 1 / Math.Sqrt(dim), false);
            yield return (x + (Mixtral ? "w2.weight" : "down_proj.weight"), [dim, hidden], 1 / Math.Sqrt(hidden), false);
            yield return (x + (Mixtral ? "w3.weight" : "up_proj.weight"), [hidden, dim], 1 / Math.Sqrt(dim), false);
        }
        if (SharedExpertIntermediateSize > 0)
        {
            int shared = SharedExpertIntermediateSize;
            yield return (p + "mlp.shared_expert.gate_proj.weight", [shared, dim], 1 / Math.Sqrt(dim), false);
            yield return (p + "mlp.shared_expert.up_proj.weight", [shared, dim], 1 / Math.Sqrt(dim), false);
            yield return (p + "mlp.shared_expert.down_proj.weight", [dim, shared], 1 / Math.Sqrt(shared), false);
            yield return (p + "mlp.shared_expert_gate.weight", [1, dim], 1 / Math.Sqrt(dim), false);
        }
    }

    /// <summary>safetensors: 8-byte little-endian header length, the JSON header (padded with spaces to 8 bytes), the data.</summary>
    private void WriteSafetensors(string path)
    {
        var tensors = StoredTensors().ToList();
        int elementBytes = BFloat16 ? 2 : 4;
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        foreach (var (name, shape, _, _) in tensors)
        {
            long bytes = shape.Aggregate(1L, (a, b) => a * b) * elementBytes;
            header[name] = new JsonObject
            {
                ["dtype"] = BFloat16 ? "BF16" : "F32",
                ["shape"] = new JsonArray([.. shape.Select(s => (JsonNode)s)]),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(length, padded);
        stream.Write(length);
        stream.Write(json);
        for (int i = json.Length; i < padded; i++)
            stream.WriteByte((byte)' ');
        var random = new Random(Seed);
        var row = new byte[1 << 16];
        foreach (var (_, shape, std, norm) in tensors)
        {
            long count = shape.Aggregate(1L, (a, b) => a * b);
            int filled = 0;
            for (long i = 0; i < count; i++)
            {
                float value = (float)((norm && !GemmaNorms ? 1 : 0) + std * Gaussian(random));
                if (BFloat16)
                {
                    uint bits = BitConverter.SingleToUInt32Bits(value);
                    BinaryPrimitives.WriteUInt16LittleEndian(row.AsSpan(filled), (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16));
                }
                else
                {
                    BinaryPrimitives.WriteSingleLittleEndian(row.AsSpan(filled), value);
                }
                filled += elementBytes;
                if (filled == row.Length)
                {
                    stream.Write(row);
                    filled = 0;
                }
            }
            stream.Write(row, 0, filled);
        }
    }

    private static double Gaussian(Random random)
        => Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
}
