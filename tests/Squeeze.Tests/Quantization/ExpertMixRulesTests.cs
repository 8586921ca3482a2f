using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;

namespace Squeeze.Tests.Quantization;

/// <summary>llama-quantize's rules for expert models, planned from shapes alone: the router stays F32, 8-expert models
/// bump attn_v and attn_k to Q8_0 and attn_output to Q5_K, and a stacked ffn_down follows ffn_down's rule by the layer in
/// its name (so a layer's routed and shared down projections get the same type).</summary>
public class ExpertMixRulesTests
{
    private static bool MoreBits(int i, int n) => i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;

    [Fact]
    public void Mixtral_8x7B_shape_gets_llama_cpps_types()
    {
        var config = new ModelConfig
        {
            Architecture = "llama", Dim = 4096, HiddenDim = 14336, LayerCount = 32, HeadCount = 32, KvHeadCount = 8, HeadDim = 128,
            VocabSize = 32000, ContextLength = 32768, ExpertCount = 8, ExpertUsedCount = 2, ExpertHiddenDim = 14336, NormalizeExpertWeights = true,
        };
        var tensors = new List<(string, long[], GgmlType)> { (TensorNames.TokenEmbedding, [32000, 4096], GgmlType.BF16), (TensorNames.Output, [32000, 4096], GgmlType.BF16) };
        for (int l = 0; l < 32; l++)
        {
            tensors.Add((TensorNames.Query(l), [4096, 4096], GgmlType.BF16));
            tensors.Add((TensorNames.Key(l), [1024, 4096], GgmlType.BF16));
            tensors.Add((TensorNames.Value(l), [1024, 4096], GgmlType.BF16));
            tensors.Add((TensorNames.AttentionOutput(l), [4096, 4096], GgmlType.BF16));
            tensors.Add((TensorNames.ExpertRouter(l), [8, 4096], GgmlType.BF16));
            tensors.Add((TensorNames.GateExperts(l), [8, 14336, 4096], GgmlType.BF16));
            tensors.Add((TensorNames.UpExperts(l), [8, 14336, 4096], GgmlType.BF16));
            tensors.Add((TensorNames.DownExperts(l), [8, 4096, 14336], GgmlType.BF16));
        }
        var plan = QuantizationMix.Plan(config, tensors, QuantizationMix.Q4_K_M, [], pure: false);
        for (int l = 0; l < 32; l++)
        {
            Assert.Equal(GgmlType.Q8_0, plan[TensorNames.Value(l)].Type);
            Assert.Equal(GgmlType.Q8_0, plan[TensorNames.Key(l)].Type);
            Assert.Equal(GgmlType.Q4_K, plan[TensorNames.Query(l)].Type);
            Assert.Equal(GgmlType.Q5_K, plan[TensorNames.AttentionOutput(l)].Type);
            Assert.False(plan[TensorNames.ExpertRouter(l)].Quantized);
            Assert.Equal(GgmlType.F32, plan[TensorNames.ExpertRouter(l)].Type);
            Assert.Equal(GgmlType.Q4_K, plan[TensorNames.GateExperts(l)].Type);
            Assert.Equal(MoreBits(l, 32) ? GgmlType.Q6_K : GgmlType.Q4_K, plan[TensorNames.DownExperts(l)].Type);
        }
        // Q3_K_L has no 8-expert attn_output rule: the mix default stays (not the dense Q5_K bump).
        Assert.Equal(GgmlType.Q3_K, QuantizationMix.Plan(config, tensors, QuantizationMix.Q3_K_L, [], pure: false)[TensorNames.AttentionOutput(0)].Type);
    }

    [Fact]
    public void Qwen2_moe_shape_gives_routed_and_shared_down_the_same_rule()
    {
        var config = new ModelConfig
        {
            Architecture = "qwen2moe", Dim = 2048, HiddenDim = 5632, LayerCount = 24, HeadCount = 16, KvHeadCount = 16, HeadDim = 128,
            VocabSize = 151936, ContextLength = 8192, AttentionBias = true, RopeStyle = RopeStyle.Neox,
            ExpertCount = 60, ExpertUsedCount = 4, ExpertHiddenDim = 2560, SharedExpertHiddenDim = 5632,
        };
        var tensors = new List<(string, long[], GgmlType)> { (TensorNames.TokenEmbedding, [151936, 2048], GgmlType.BF16), (TensorNames.Output, [151936, 2048], GgmlType.BF16) };
        for (int l = 0; l < 24; l++)
        {
            tensors.Add((TensorNames.Value(l), [2048, 2048], GgmlType.BF16));
            tensors.Add((TensorNames.AttentionOutput(l), [2048, 2048], GgmlType.BF16));
            tensors.Add((TensorNames.DownExperts(l), [60, 2048, 2560], GgmlType.BF16)); // Qwen2-57B-A14B's width (1408 would fall back)
            tensors.Add((TensorNames.DownShared(l), [2048, 5632], GgmlType.BF16));
            tensors.Add((TensorNames.SharedExpertGate(l), [2048], GgmlType.BF16));
        }
        var plan = QuantizationMix.Plan(config, tensors, QuantizationMix.Q4_K_M, [], pure: false);
        for (int l = 0; l < 24; l++)
        {
            var expected = MoreBits(l, 24) ? GgmlType.Q6_K : GgmlType.Q4_K;
            Assert.Equal(expected, plan[TensorNames.DownExperts(l)].Type);
            Assert.Equal(expected, plan[TensorNames.DownShared(l)].Type);
            Assert.Equal(expected, plan[TensorNames.Value(l)].Type); // not 8 experts: the dense attn_v rule
            Assert.Equal(GgmlType.Q4_K, plan[TensorNames.AttentionOutput(l)].Type);
            Assert.False(plan[TensorNames.SharedExpertGate(l)].Quantized);
        }
    }
}
