using System.Text.Encodings.Web;
using System.Text.Json;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Formats.HuggingFace;

/// <summary>
/// Writes a <see cref="Model"/> as a Hugging Face checkpoint directory that <see cref="HuggingFaceReader"/> and
/// transformers read: <c>config.json</c> (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM,
/// Gemma2ForCausalLM or Gemma3ForCausalLM), <c>model.safetensors</c> with Hugging Face tensor names (q/k rows in
/// rotate-half order, Gemma's norm weights with the 1 taken off again; the file's metadata is
/// <c>{"format": "pt"}</c>), and the tokenizer (<see cref="WriteTokenizer"/>): <c>tokenizer.model</c> for a SentencePiece
/// vocabulary, <c>tokenizer.json</c> for a byte-level BPE one (Llama 3, Qwen 2.5/3, GPT-2; with fewer tokens than
/// vocab_size when the embedding has more rows than the tokenizer, as Qwen's checkpoints have), and <c>tokenizer_config.json</c>.
/// A model with Llama 3's rope scaling is refused: it holds the divisors (<see cref="TensorNames.RopeFrequencies"/>), not
/// the rope_scaling parameters transformers computes them from (the native format writes it).
/// Everything is written into a temporary directory beside the destination, which is then renamed into place.
/// </summary>
public static class HuggingFaceWriter
{
    /// <summary>The full path of a model directory to write, which must not exist or be empty (this writer's and the
    /// native format's rule; callers check it before long work).</summary>
    /// <exception cref="IOException">The destination exists and is not empty.</exception>
    public static string CheckDestination(string directory)
    {
        string target = Path.GetFullPath(directory);
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"{target} already exists and is not empty; refusing to overwrite it");
        return target;
    }

    /// <summary>Writes <paramref name="model"/> to <paramref name="directory"/>, which must not exist or be empty.</summary>
    /// <exception cref="NotSupportedException">A tensor is block-quantized, the model has no Hugging Face equivalent, or
    /// its byte-level vocabulary has a token a tokenizer.json cannot say.</exception>
    /// <exception cref="IOException">The destination exists and is not empty.</exception>
    /// <returns>The list of files written, relative to <paramref name="directory"/>.</returns>
    public static IReadOnlyList<string> Write(Model model, string directory)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var config = model.Config;
        string architecture = HuggingFaceArchitecture(config);
        if (config.RopeFrequencyFactors)
            throw new NotSupportedException($"{model.Source}: {TensorNames.RopeFrequencies} (Llama 3 rope scaling) holds divisors, not the rope_scaling parameters transformers computes them from (the native format holds them)");
        if (architecture == "Phi3ForCausalLM")
            throw new NotSupportedException($"{model.Source}: Phi-3's fused qkv_proj and gate_up_proj are not written to a Hugging Face checkpoint (GGUF and the native format hold Phi-3)");
        var quantized = model.Tensors.FirstOrDefault(t => !SafetensorsDTypes.TryFromGgmlType(t.Type, out _));
        if (quantized is not null)
            throw new NotSupportedException($"{model.Source}: tensor '{quantized.Name}' is {quantized.Type}; a Hugging Face checkpoint holds only F32, F16 and BF16 weights, dequantize first");

        string target = CheckDestination(directory);
        string parent = Path.GetDirectoryName(target.TrimEnd(Path.DirectorySeparatorChar)) ?? ".";
        Directory.CreateDirectory(parent);
        string temp = Path.Combine(parent, $".{Path.GetFileName(target.TrimEnd(Path.DirectorySeparatorChar))}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        var owned = new List<IDisposable>();
        try
        {
            var files = new List<string>();
            WriteWeights(model, Path.Combine(temp, HuggingFaceReader.WeightsFile), owned);
            files.Add(HuggingFaceReader.WeightsFile);
            WriteJson(Path.Combine(temp, HuggingFaceReader.ConfigFile), w => WriteConfig(w, model, architecture, TorchDtype(model)));
            files.Add(HuggingFaceReader.ConfigFile);
            files.AddRange(WriteTokenizer(model.Vocabulary, model.Source, temp));

            if (Directory.Exists(target))
                Directory.Delete(target); // empty, checked above
            Directory.Move(temp, target);
            return files;
        }
        catch
        {
            if (Directory.Exists(temp))
                Directory.Delete(temp, recursive: true);
            throw;
        }
        finally
        {
            foreach (var d in owned)
                d.Dispose();
        }
    }

    /// <summary>The transformers class name for a config ("LlamaForCausalLM" …).</summary>
    internal static string HuggingFaceArchitecture(ModelConfig c) => c.Architecture switch
    {
        "llama" when c.IsMixtureOfExperts && !c.QkNorm && c.SlidingWindow == 0 => "MixtralForCausalLM",
        "qwen2moe" when c.AttentionBias && !c.QkNorm => "Qwen2MoeForCausalLM",
        "qwen3moe" when c.QkNorm => "Qwen3MoeForCausalLM",
        "llama" when !c.QkNorm => c.SlidingWindow > 0 ? "MistralForCausalLM" : "LlamaForCausalLM",
        "gemma2" when !c.QkNorm => "Gemma2ForCausalLM",
        "gemma3" when c.QkNorm => "Gemma3ForCausalLM",
        "qwen2" when c.AttentionBias && !c.QkNorm => "Qwen2ForCausalLM",
        "qwen3" when c.QkNorm => "Qwen3ForCausalLM",
        "phi3" when !c.QkNorm && !c.AttentionBias => "Phi3ForCausalLM",
        "mistral3" when !c.QkNorm && !c.AttentionBias => "Ministral3ForCausalLM",
        _ => throw new NotSupportedException($"architecture \"{c.Architecture}\" (attention bias {c.AttentionBias}, q/k norm {c.QkNorm}) has no Hugging Face class Squeeze writes"),
    };

    private static void WriteWeights(Model model, string path, List<IDisposable> owned)
    {
        var config = model.Config;
        // Heads of the tensors whose rows carry rotary pairs.
        var rotary = HuggingFaceReader.ExpectedTensors(config).Where(e => e.PermuteHeads > 0).ToDictionary(e => e.Name, e => e.PermuteHeads, StringComparer.Ordinal);
        bool permute = config.RopeStyle == RopeStyle.Interleaved;
        bool shifted = HuggingFaceReader.ShiftedNorms(config);
        var writer = new SafetensorsWriter();
        writer.Metadata["format"] = "pt";
        foreach (var tensor in model.Tensors)
        {
            if (!HuggingFaceNames.TryToHuggingFace(tensor.Name, config.PostNorms, out string hfName))
                throw new NotSupportedException($"{model.Source}: tensor '{tensor.Name}' has no Hugging Face name");
            var t = shifted && HuggingFaceReader.IsNorm(tensor.Name) ? HuggingFaceReader.ShiftNorm(tensor, -1f, owned)
                : permute && rotary.TryGetValue(tensor.Name, out int heads) ? RotaryOrder.Permute(tensor, heads, toInterleaved: false, owned)
                : tensor;
            writer.Add(t, hfName);
        }
        writer.Write(path);
    }

    /// <summary>Writes config.json with the keys <see cref="HuggingFaceReader.ReadConfig(string)"/> reads back to an equal
    /// ModelConfig; Llama 3's rope scaling as <c>{"rope_type": "llama3"}</c> alone, for the native format, whose weights
    /// file holds the divisors (<see cref="TensorNames.RopeFrequencies"/>).</summary>
    internal static void WriteConfig(string path, Model model, string torchDtype) => WriteJson(path, w => WriteConfig(w, model, HuggingFaceArchitecture(model.Config), torchDtype));

    private static void WriteConfig(Utf8JsonWriter w, Model model, string architecture, string torchDtype)
    {
        var c = model.Config;
        var v = model.Vocabulary;
        w.WriteStartArray("architectures");
        w.WriteStringValue(architecture);
        w.WriteEndArray();
        w.WriteString("model_type", architecture switch
        {
            "MistralForCausalLM" => "mistral",
            "Gemma3ForCausalLM" => "gemma3_text",
            "MixtralForCausalLM" => "mixtral",
            "Qwen2MoeForCausalLM" => "qwen2_moe",
            "Qwen3MoeForCausalLM" => "qwen3_moe",
            "Ministral3ForCausalLM" => "ministral3",
            _ => c.Architecture,
        });
        w.WriteNumber("hidden_size", c.Dim);
        w.WriteNumber("intermediate_size", c.HiddenDim);
        w.WriteNumber("num_hidden_layers", c.LayerCount);
        if (c.IsMixtureOfExperts)
        {
            w.WriteNumber(architecture == "MixtralForCausalLM" ? "num_local_experts" : "num_experts", c.ExpertCount);
            w.WriteNumber("num_experts_per_tok", c.ExpertUsedCount);
            if (architecture != "MixtralForCausalLM")
            {
                w.WriteNumber("moe_intermediate_size", c.ExpertHiddenDim);
                w.WriteBoolean("norm_topk_prob", c.NormalizeExpertWeights);
            }
            if (c.SharedExpertHiddenDim > 0)
                w.WriteNumber("shared_expert_intermediate_size", c.SharedExpertHiddenDim);
        }
        w.WriteNumber("num_attention_heads", c.HeadCount);
        w.WriteNumber("num_key_value_heads", c.KvHeadCount);
        w.WriteNumber("head_dim", c.HeadDim);
        w.WriteNumber("vocab_size", c.VocabSize);
        w.WriteNumber("max_position_embeddings", c.ContextLength);
        w.WriteNumber("rope_theta", c.RopeTheta);
        if (c.Architecture == "phi3")
        {
            w.WriteNumber("original_max_position_embeddings", c.RopeOriginalContext);
            w.WriteNumber("partial_rotary_factor", (double)c.RopeDimensions * c.HeadCount / c.Dim);
        }
        if (c.LongRope)
        {
            // Phi-3's factor lists, from the tensors the model holds them in.
            w.WriteStartObject("rope_scaling");
            w.WriteString("type", "longrope");
            foreach (var (key, name) in (ReadOnlySpan<(string, string)>)[("long_factor", TensorNames.RopeFactorsLong), ("short_factor", TensorNames.RopeFactorsShort)])
            {
                var values = new float[c.RopeDimensions / 2];
                Dequantize.Row(model[name].Type, model[name].Row(0), values);
                w.WriteStartArray(key);
                foreach (float value in values)
                    w.WriteNumberValue(value);
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        else if (c.Yarn)
        {
            w.WriteStartObject("rope_scaling");
            w.WriteString("rope_type", "yarn");
            w.WriteNumber("factor", c.RopeScalingFactor);
            w.WriteNumber("original_max_position_embeddings", c.RopeOriginalContext);
            w.WriteNumber("beta_fast", c.YarnBetaFast);
            w.WriteNumber("beta_slow", c.YarnBetaSlow);
            if (c.YarnLogMultiplier != 0)
            {
                w.WriteNumber("mscale", 1);
                w.WriteNumber("mscale_all_dim", c.YarnLogMultiplier);
            }
            if (c.Architecture == "mistral3")
                w.WriteNumber("llama_4_scaling_beta", c.AttentionTemperatureScale);
            w.WriteEndObject();
        }
        else if (c.RopeFrequencyFactors)
        {
            // The native format's: the divisors are stored with the weights, not the parameters they were computed from.
            w.WriteStartObject("rope_scaling");
            w.WriteString("rope_type", "llama3");
            w.WriteEndObject();
        }
        else if (c.RopeScalingFactor != 1f)
        {
            w.WriteStartObject("rope_scaling");
            w.WriteString("rope_type", "linear");
            w.WriteNumber("factor", c.RopeScalingFactor);
            w.WriteEndObject();
        }
        else
        {
            w.WriteNull("rope_scaling");
        }
        w.WriteNumber("rms_norm_eps", c.RmsNormEps);
        w.WriteBoolean("tie_word_embeddings", c.TiedEmbeddings);
        if (c.Activation == FeedForwardActivation.GeluTanh)
            w.WriteString("hidden_activation", "gelu_pytorch_tanh");
        else
            w.WriteString("hidden_act", "silu");
        if (c.SlidingWindow > 0)
            w.WriteNumber("sliding_window", c.SlidingWindow);
        if (c.SlidingWindow > 0 && c.Architecture is "qwen2" or "qwen3" or "qwen2moe" or "qwen3moe")
        {
            w.WriteBoolean("use_sliding_window", true);
            w.WriteNumber("max_window_layers", c.FirstSlidingLayer);
        }
        if (c.DeclaredSlidingWindow > 0)
            w.WriteNumber("sliding_window", c.DeclaredSlidingWindow);
        if (c.SlidingWindowPeriod > 0 && c.Architecture == "gemma3")
            w.WriteNumber("sliding_window_pattern", c.SlidingWindowPeriod);
        if (c.SlidingRopeTheta is float slidingTheta)
            w.WriteNumber("rope_local_base_freq", slidingTheta);
        if (c.QueryScale is float queryScale)
            w.WriteNumber("query_pre_attn_scalar", 1.0 / ((double)queryScale * queryScale));
        if (c.Architecture is "gemma2" or "gemma3")
        {
            void Cap(string key, float cap)
            {
                if (cap > 0)
                    w.WriteNumber(key, cap);
                else
                    w.WriteNull(key);
            }
            Cap("attn_logit_softcapping", c.AttentionSoftCap);
            Cap("final_logit_softcapping", c.FinalLogitSoftCap);
        }
        if (c.Architecture != "qwen2")
            w.WriteBoolean("attention_bias", c.AttentionBias);
        w.WriteBoolean("mlp_bias", false);
        if (v.BosId >= 0)
            w.WriteNumber("bos_token_id", v.BosId);
        if (v.EosId >= 0)
            w.WriteNumber("eos_token_id", v.EosId);
        w.WriteString("torch_dtype", torchDtype);
    }

    private static string TorchDtype(Model model) => model[TensorNames.TokenEmbedding].Type switch
    {
        GgmlType.F16 => "float16",
        GgmlType.BF16 => "bfloat16",
        _ => "float32",
    };

    /// <summary>
    /// Writes the tokenizer files of <paramref name="v"/> (of the model at <paramref name="source"/>, which refusals name)
    /// into <paramref name="directory"/> and returns their names: a
    /// SentencePiece vocabulary as <c>tokenizer.model</c> (<see cref="SentencePieceModelWriter"/>), a byte-level BPE one as
    /// <c>tokenizer.json</c> (<see cref="TokenizerJsonWriter"/>); either with <c>tokenizer_config.json</c> (BOS, EOS,
    /// unknown and padding tokens by text, add_bos_token, the chat template) — what
    /// <see cref="VocabularyReader"/> and transformers read back.
    /// </summary>
    /// <exception cref="NotSupportedException">A byte-level vocabulary a tokenizer.json cannot hold (<see cref="TokenizerJsonWriter.Write"/>).</exception>
    internal static List<string> WriteTokenizer(Vocabulary v, string source, string directory)
    {
        bool sentencePiece = v.Kind == TokenizerKind.SentencePiece;
        string tokenizerFile = sentencePiece ? "tokenizer.model" : "tokenizer.json";
        using (var stream = File.Create(Path.Combine(directory, tokenizerFile)))
        {
            if (sentencePiece)
                stream.Write(SentencePieceModelWriter.Serialize(v));
            else
                TokenizerJsonWriter.Write(v, source, stream);
        }
        WriteJson(Path.Combine(directory, "tokenizer_config.json"), w =>
        {
            w.WriteString("tokenizer_class", sentencePiece ? "LlamaTokenizer" : "PreTrainedTokenizerFast");
            void Special(string key, int id)
            {
                if (id >= 0)
                    w.WriteString(key, v.Tokens[id]);
                else
                    w.WriteNull(key);
            }
            Special("bos_token", v.BosId);
            Special("eos_token", v.EosId);
            Special("unk_token", v.UnknownId);
            Special("pad_token", v.PaddingId);
            w.WriteBoolean("add_bos_token", v.AddBos);
            w.WriteBoolean("add_eos_token", false);
            if (sentencePiece)
            {
                w.WriteBoolean("add_prefix_space", v.AddSpacePrefix);
                w.WriteBoolean("legacy", true);
            }
            else
            {
                w.WriteBoolean("clean_up_tokenization_spaces", false); // decode gives the tokens' bytes, as Squeeze's does
            }
            if (v.ChatTemplate is { } template)
                w.WriteString("chat_template", template);
        });
        return [tokenizerFile, "tokenizer_config.json"];
    }

    private static void WriteJson(string path, Action<Utf8JsonWriter> body)
    {
        using var stream = File.Create(path);
        // Unescaped non-ASCII and < > ' +: chat templates and special tokens stay readable.
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        w.WriteStartObject();
        body(w);
        w.WriteEndObject();
    }
}
