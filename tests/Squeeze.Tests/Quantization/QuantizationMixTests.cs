using Squeeze.Formats.Gguf;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Quantization;

/// <summary>Named mixes give llama.cpp's per-tensor types: compared with the golden stories15M files, the golden README's
/// per-kind lists, and the README's file sizes of every mix.</summary>
public class QuantizationMixTests(ITestOutputHelper output)
{
    private static Model LoadStories() => GgufModelReader.Load(SharedData.Golden("stories15M-f32.gguf"));

    [Theory]
    [InlineData("stories15M-Q8_0.gguf", "Q8_0", true, false)]
    [InlineData("stories15M-Q8_0.gguf", "Q8_0", false, false)]
    [InlineData("stories15M-Q4_0-imatrix.gguf", "Q4_0", false, true)]
    [InlineData("stories15M-Q4_K_M-imatrix.gguf", "Q4_K_M", false, true)]
    public void Plan_matches_the_types_llama_cpp_chose(string goldenFile, string mixName, bool pure, bool hasImportance)
    {
        using var model = LoadStories();
        using var golden = GgufFile.Open(SharedData.Golden(goldenFile));
        var plan = QuantizationMix.Plan(model, QuantizationMix.Parse(mixName), [], pure, hasImportance);
        Assert.Equal(golden.TensorInfos.Count, plan.Tensors.Count);
        int mismatches = 0;
        foreach (var info in golden.TensorInfos)
        {
            var planned = plan[info.Name];
            output.WriteLine($"{planned}   llama.cpp: {info.Type}");
            if (planned.Type != info.Type)
                mismatches++;
        }
        Assert.Equal(0, mismatches);
    }

    // README: "Types chosen per tensor kind" (stories15M: 6 layers, 288-wide rows, ffn_down 768 wide, tied embeddings).
    [Theory]
    [InlineData("Q4_K_M", false)]
    [InlineData("Q4_K_M", true)]
    [InlineData("Q4_0", false)]
    [InlineData("Q3_K_M", false)]
    [InlineData("Q3_K_S", false)]
    [InlineData("Q3_K_S", true)]
    [InlineData("Q2_K", true)]
    [InlineData("Q2_K", false)]
    public void Plan_matches_the_readme_types_per_tensor_kind(string mixName, bool hasImportance)
    {
        using var model = LoadStories();
        var plan = QuantizationMix.Plan(model, QuantizationMix.Parse(mixName), [], pure: false, hasImportance);
        foreach (var t in plan.Tensors)
            output.WriteLine(t.ToString());
        GgmlType[] Kind(string kind) => plan.Tensors.Where(t => t.Name.EndsWith(kind, StringComparison.Ordinal)).Select(t => t.Type).ToArray();
        void All(string kind, params GgmlType[] allowed)
        {
            var types = Kind(kind);
            Assert.NotEmpty(types);
            Assert.All(types, t => Assert.Contains(t, allowed));
        }
        All("token_embd.weight", GgmlType.Q8_0);
        All("_norm.weight", GgmlType.F32);
        switch (mixName)
        {
            case "Q4_K_M":
                All("attn_q.weight", GgmlType.Q5_0); All("attn_k.weight", GgmlType.Q5_0); All("attn_output.weight", GgmlType.Q5_0);
                All("ffn_gate.weight", GgmlType.Q5_0); All("ffn_up.weight", GgmlType.Q5_0);
                // use_more_bits(i, 6) picks layers 2 and 5: Q6_K there (Q8_0 after the 288 fallback for attn_v).
                Assert.Equal([GgmlType.Q5_0, GgmlType.Q5_0, GgmlType.Q8_0, GgmlType.Q5_0, GgmlType.Q5_0, GgmlType.Q8_0], Kind("attn_v.weight"));
                Assert.Equal([GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K, GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K], Kind("ffn_down.weight"));
                break;
            case "Q4_0":
                foreach (var k in new[] { "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight" })
                    All(k, GgmlType.Q4_0);
                break;
            case "Q3_K_M":
                All("attn_q.weight", GgmlType.IQ4_NL); All("attn_k.weight", GgmlType.IQ4_NL);
                All("ffn_gate.weight", GgmlType.IQ4_NL); All("ffn_up.weight", GgmlType.IQ4_NL);
                All("attn_output.weight", GgmlType.Q5_0);
                Assert.Equal([GgmlType.Q5_1, GgmlType.Q5_1, GgmlType.Q5_0, GgmlType.Q5_0, GgmlType.Q5_0, GgmlType.Q5_0], Kind("attn_v.weight"));
                All("ffn_down.weight", GgmlType.Q4_K);
                break;
            default: // Q3_K_S and Q2_K
                foreach (var k in new[] { "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight" })
                    All(k, GgmlType.IQ4_NL);
                All("ffn_down.weight", GgmlType.Q3_K);
                break;
        }
    }

    // README's byte counts of every stories15M mix. A file differs from another only in its tensor data (the metadata
    // has the same size; imatrix files carry the same extra keys), so size = reference file + padded data difference.
    [Theory]
    [InlineData("Q8_0", false, false, 16_879_328)]
    [InlineData("Q6_K", false, false, 16_557_920)]
    [InlineData("Q6_K", false, true, 16_558_144)]
    [InlineData("Q5_K_M", false, false, 15_040_736)]
    [InlineData("Q5_K_M", false, true, 15_040_960)]
    [InlineData("Q5_0", false, false, 14_639_840)]
    [InlineData("Q5_0", false, true, 14_640_064)]
    [InlineData("Q4_K_M", false, false, 14_650_208)]
    [InlineData("Q4_K_M", false, true, 14_650_432)]
    [InlineData("Q4_K_S", false, false, 14_494_688)]
    [InlineData("Q4_K_S", false, true, 14_494_912)]
    [InlineData("Q4_0", false, false, 13_893_344)]
    [InlineData("Q4_0", false, true, 13_893_568)]
    [InlineData("Q3_K_M", false, false, 14_028_128)]
    [InlineData("Q3_K_S", false, false, 13_717_088)]
    [InlineData("Q3_K_S", false, true, 13_717_312)]
    [InlineData("Q2_K", false, true, 13_717_312)]
    [InlineData("Q4_0", true, false, 9_285_344)]
    public void Planned_sizes_match_the_readme(string mixName, bool pure, bool hasImportance, long readmeBytes)
    {
        using var model = LoadStories();
        string referenceFile = hasImportance ? "stories15M-Q4_K_M-imatrix.gguf" : "stories15M-Q8_0.gguf";
        using var reference = GgufFile.Open(SharedData.Golden(referenceFile));
        var referencePlan = QuantizationMix.Plan(model, hasImportance ? QuantizationMix.Q4_K_M : QuantizationMix.Q8_0, [], pure: !hasImportance, hasImportance);
        var plan = QuantizationMix.Plan(model, QuantizationMix.Parse(mixName), [], pure, hasImportance);
        long predicted = new FileInfo(reference.Path).Length + PaddedData(plan, reference.Alignment) - PaddedData(referencePlan, reference.Alignment);
        output.WriteLine($"{mixName} pure={pure} imatrix={hasImportance}: predicted {predicted:N0}, README {readmeBytes:N0}, fallbacks {plan.FallbackCount}");
        Assert.Equal(readmeBytes, predicted);
    }

    private static long PaddedData(QuantizationPlan plan, int alignment) => plan.Tensors.Sum(t => (t.ByteLength + alignment - 1) / alignment * alignment);

    [Fact]
    public void Pure_gives_every_matrix_the_default_type_and_keeps_norms_f32()
    {
        using var model = LoadStories();
        var plan = QuantizationMix.Plan(model, QuantizationMix.Q4_0, [], pure: true);
        Assert.All(plan.Tensors, t => Assert.Equal(t.Shape.Length == 1 ? GgmlType.F32 : GgmlType.Q4_0, t.Type));
    }

    [Fact]
    public void Pure_k_quant_on_288_wide_rows_falls_back_and_says_so()
    {
        using var model = LoadStories();
        var plan = QuantizationMix.Plan(model, QuantizationMix.Q4_K_S, [], pure: true);
        Assert.Equal(GgmlType.Q5_0, plan["blk.0.attn_q.weight"].Type);
        Assert.Contains("fallback Q5_0", plan["blk.0.attn_q.weight"].Reason);
        Assert.Equal(GgmlType.Q4_K, plan["blk.0.ffn_down.weight"].Type); // 768 wide
        Assert.Equal(plan.Tensors.Count(t => t.Quantized) - 6, plan.FallbackCount);
    }

    [Fact]
    public void F16_and_f32_mixes_convert_every_matrix()
    {
        using var model = LoadStories();
        var f16 = QuantizationMix.Plan(model, QuantizationMix.F16, [], pure: false);
        Assert.All(f16.Tensors, t => Assert.Equal(t.Shape.Length == 1 ? GgmlType.F32 : GgmlType.F16, t.Type));
        var f32 = QuantizationMix.Plan(model, QuantizationMix.F32, [], pure: false);
        Assert.All(f32.Tensors, t => Assert.Equal(GgmlType.F32, t.Type));
    }

    [Fact]
    public void Overrides_apply_first_match_and_fall_back_when_needed()
    {
        using var model = LoadStories();
        var plan = QuantizationMix.Plan(model, QuantizationMix.Q4_0,
            [TensorTypeOverride.Parse(@"blk\.0\.attn_q=Q8_0"), TensorTypeOverride.Parse("attn_q=Q6_K"), new TensorTypeOverride("ffn_down", GgmlType.Q6_K)], pure: false);
        Assert.Equal(GgmlType.Q8_0, plan["blk.0.attn_q.weight"].Type);
        Assert.Contains("--tensor-type", plan["blk.0.attn_q.weight"].Reason);
        Assert.Equal(GgmlType.Q8_0, plan["blk.1.attn_q.weight"].Type); // Q6_K on 288 columns -> Q8_0
        Assert.Contains("fallback Q8_0", plan["blk.1.attn_q.weight"].Reason);
        Assert.Equal(GgmlType.Q6_K, plan["blk.3.ffn_down.weight"].Type); // 768 columns fit Q6_K
        Assert.Equal(GgmlType.Q4_0, plan["blk.3.attn_k.weight"].Type);
    }

    [Fact]
    public void An_override_that_matches_nothing_is_an_error()
    {
        using var model = LoadStories();
        var e = Assert.Throws<ArgumentException>(() => QuantizationMix.Plan(model, QuantizationMix.Q4_0, [TensorTypeOverride.Parse("attn_qkv=Q8_0")], pure: false));
        Assert.Contains("attn_qkv", e.Message);
        // A norm is not quantizable, so matching only norms is matching nothing.
        Assert.Throws<ArgumentException>(() => QuantizationMix.Plan(model, QuantizationMix.Q4_0, [TensorTypeOverride.Parse("attn_norm=Q8_0")], pure: false));
        Assert.Throws<ArgumentException>(() => TensorTypeOverride.Parse("attn_q"));
        Assert.Throws<ArgumentException>(() => TensorTypeOverride.Parse("attn_q=Q9_9"));
        Assert.Throws<ArgumentException>(() => TensorTypeOverride.Parse("(=Q8_0"));
    }

    [Fact]
    public void Unknown_mix_names_are_rejected_with_the_known_list()
    {
        var e = Assert.Throws<ArgumentException>(() => QuantizationMix.Parse("Q7_K"));
        Assert.Contains("Q4_K_M", e.Message);
        Assert.Same(QuantizationMix.Q4_K_M, QuantizationMix.Parse("q4_k_m"));
    }

    // A 32-layer, 4096-wide llama with untied output and grouped-query attention 4 (Llama-3-8B-like), planned from
    // shapes alone: llama.cpp's layer order is numeric (blk.10 after blk.9), and use_more_bits picks 16 of 32 layers.
    [Fact]
    public void Layer_rules_follow_llama_cpp_order_and_use_more_bits_on_a_large_model()
    {
        var config = new ModelConfig
        {
            Architecture = "llama", Dim = 4096, HiddenDim = 14336, LayerCount = 32, HeadCount = 32, KvHeadCount = 8,
            HeadDim = 128, VocabSize = 128256, ContextLength = 8192,
        };
        var tensors = new List<(string, long[], GgmlType)>
        {
            (TensorNames.TokenEmbedding, [128256, 4096], GgmlType.F32),
            (TensorNames.Output, [128256, 4096], GgmlType.F32),
            (TensorNames.OutputNorm, [4096], GgmlType.F32),
        };
        for (int l = 0; l < 32; l++)
        {
            tensors.Add((TensorNames.Value(l), [1024, 4096], GgmlType.F32));
            tensors.Add((TensorNames.Down(l), [4096, 14336], GgmlType.F32));
            tensors.Add((TensorNames.AttentionOutput(l), [4096, 4096], GgmlType.F32));
            tensors.Add((TensorNames.AttentionNorm(l), [4096], GgmlType.F32));
        }
        static bool MoreBits(int i) => i < 4 || i >= 28 || (i - 4) % 3 == 2;
        var q4km = QuantizationMix.Plan(config, tensors, QuantizationMix.Q4_K_M, [], pure: false);
        for (int l = 0; l < 32; l++)
        {
            Assert.Equal(MoreBits(l) ? GgmlType.Q6_K : GgmlType.Q4_K, q4km[TensorNames.Value(l)].Type);
            Assert.Equal(MoreBits(l) ? GgmlType.Q6_K : GgmlType.Q4_K, q4km[TensorNames.Down(l)].Type);
        }
        Assert.Equal(16, Enumerable.Range(0, 32).Count(MoreBits));
        Assert.Equal(GgmlType.Q6_K, q4km[TensorNames.Output].Type);
        Assert.Equal(GgmlType.Q4_K, q4km[TensorNames.TokenEmbedding].Type);
        Assert.Equal(0, q4km.FallbackCount);

        var q2k = QuantizationMix.Plan(config, tensors, QuantizationMix.Q2_K, [], pure: false);
        Assert.Equal(GgmlType.Q4_K, q2k[TensorNames.Value(7)].Type); // gqa 4
        Assert.Equal(GgmlType.Q3_K, q2k[TensorNames.AttentionOutput(7)].Type);
        var q3km = QuantizationMix.Plan(config, tensors, QuantizationMix.Q3_K_M, [], pure: false);
        Assert.Equal(GgmlType.Q5_K, q3km[TensorNames.Value(1)].Type);
        Assert.Equal(GgmlType.Q4_K, q3km[TensorNames.Value(2)].Type);
        Assert.Equal(GgmlType.Q5_K, q3km[TensorNames.Down(1)].Type); // first 32/16 = 2 layers
        Assert.Equal(GgmlType.Q4_K, q3km[TensorNames.Down(2)].Type);
        var q4ks = QuantizationMix.Plan(config, tensors, QuantizationMix.Q4_K_S, [], pure: false);
        Assert.Equal(GgmlType.Q5_K, q4ks[TensorNames.Value(3)].Type);
        Assert.Equal(GgmlType.Q4_K, q4ks[TensorNames.Value(4)].Type);
        Assert.Equal(GgmlType.Q5_K, q4ks[TensorNames.Down(3)].Type);
        Assert.Equal(GgmlType.Q4_K, q4ks[TensorNames.Down(4)].Type);
        var q40 = QuantizationMix.Plan(config, tensors, QuantizationMix.Q4_0, [], pure: false, hasImportance: true);
        Assert.Equal(GgmlType.Q4_1, q40[TensorNames.Down(3)].Type);
        Assert.Equal(GgmlType.Q4_0, q40[TensorNames.Down(4)].Type);
        Assert.Equal(GgmlType.Q6_K, q40[TensorNames.Output].Type);
    }
}
