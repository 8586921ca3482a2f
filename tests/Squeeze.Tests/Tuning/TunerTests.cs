using System.Runtime.InteropServices;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Kernels;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Formats;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tuning;
using Squeeze.Weights;

namespace Squeeze.Tests.Tuning;

public class TunerTests
{
    [Theory]
    [InlineData(1, 3, 8, 1)]
    [InlineData(5, 17, 13, 2)]
    [InlineData(64, 288, 131, 2)]
    [InlineData(7, 768, 33, 3)]
    public void Dense_product_matches_the_reference(int m, int k, int n, int threads)
    {
        var random = new Random(m * 1000 + k);
        float[] a = Values(random, m * k), b = Values(random, n * k), expected = new float[m * n], actual = new float[m * n];
        LinearAlgebra.MultiplyTransposedReference(a, b, m, k, n, expected);
        LinearAlgebra.MultiplyTransposed(a, b, m, k, n, actual, threads);
        for (int i = 0; i < expected.Length; i++)
            Assert.Equal(expected[i], actual[i], 1e-4f * (1 + Math.Abs(expected[i])) * MathF.Sqrt(k));
        var single = new float[m * n];
        LinearAlgebra.MultiplyTransposed(a, b, m, k, n, single, 1);
        Assert.Equal(single, actual);
    }

    [Fact]
    public void Graph_runs_the_model_as_the_runtime_does()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        AssertGraphMatchesRuntime(model, SampleTokens(model, 48));
    }

    [Fact]
    public void Graph_runs_biases_qk_norms_neox_pairs_and_an_untied_classifier_as_the_runtime_does()
    {
        using var model = SyntheticQwen3(seed: 3);
        AssertGraphMatchesRuntime(model, Enumerable.Range(0, 20).Select(i => (i * 7 + 1) % model.Config.VocabSize).ToArray());
    }

    [Fact]
    public void Gradients_match_finite_differences()
    {
        using var original = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var compressed = Uniform(original, bits: 3);
        CheckGradients(original, compressed, SampleTokens(original, 40));
    }

    [Fact]
    public void Gradients_of_qk_norms_and_biased_layers_match_finite_differences()
    {
        using var original = SyntheticQwen3(seed: 3);
        using var compressed = Uniform(original, bits: 3);
        CheckGradients(original, compressed, Enumerable.Range(0, 24).Select(i => (i * 5 + 2) % original.Config.VocabSize).ToArray());
    }

    [Theory]
    [InlineData(TuningScope.Norms)]
    [InlineData(TuningScope.Weights)]
    public void Tuning_lowers_the_kld_on_text_it_did_not_see_keeps_sizes_and_is_deterministic(TuningScope scope)
    {
        using var original = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var compressed = Uniform(original, bits: 3);
        string calibration = File.ReadAllText(SharedData.Path("corpora", "tinystories-calib.txt"))[..60_000];
        var options = new TuningOptions { Scope = scope, ContextLength = 128, Tokens = 128 * 24, Epochs = 3, ChunksPerStep = 4, LearningRate = 0.01, Threads = 2 };
        var result = Tuner.Tune(original, compressed, calibration, options);
        Assert.True(result.BestStep > 0 && result.HeldOutKldAfter < result.HeldOutKldBefore, $"{result.HeldOutKldBefore} → {result.HeldOutKldAfter}");
        Assert.Equal(3 * 6, result.Steps);
        Assert.Equal(2 * original.Config.LayerCount + 1, result.Norms.Count);
        Assert.Equal(scope == TuningScope.Weights ? compressed.Weights.Count : 0, result.Weights.Count);
        foreach (var w in result.Weights.Cast<UniformWeight>())
        {
            var before = (UniformWeight)compressed.Weight(w.Name);
            Assert.Equal((before.Scheme, before.StoredBytes), (w.Scheme, w.StoredBytes));
            Assert.True(before.Codes.SequenceEqual(w.Codes));
            Assert.False(before.Scales.SequenceEqual(w.Scales));
        }

        using var tuned = Tuner.Apply(compressed, result);
        Assert.Equal(compressed.TensorBytes, tuned.TensorBytes);
        string eval = File.ReadAllText(SharedData.Path("corpora", "tinystories-eval.txt"))[..40_000];
        var evalOptions = new EvaluationOptions { ContextLength = 128, Threads = 2 };
        double kldBefore = Evaluator.Evaluate(compressed, eval, evalOptions, original).KlDivergence!.Mean;
        double kldAfter = Evaluator.Evaluate(tuned, eval, evalOptions, original).KlDivergence!.Mean;
        Assert.True(kldAfter < 0.97 * kldBefore, $"eval KLD {kldBefore} → {kldAfter}");

        var again = Tuner.Tune(original, compressed, calibration, options);
        foreach (var (name, values) in result.Norms)
            Assert.Equal(values, again.Norms[name]);
        for (int i = 0; i < result.Weights.Count; i++)
            Assert.Equal(result.Weights[i].Decode(), again.Weights[i].Decode());
    }

    [Fact]
    public void Nothing_better_than_the_given_model_keeps_it()
    {
        using var original = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        string calibration = File.ReadAllText(SharedData.Path("corpora", "tinystories-calib.txt"))[..20_000];
        // The model against itself: KLD 0, no step can lower it.
        using var same = Uniform(original, bits: 8);
        using var teacher = same.WithWeights([]);
        var result = Tuner.Tune(teacher, same, calibration, new TuningOptions { ContextLength = 64, Tokens = 64 * 4, Epochs = 1, Threads = 1 });
        Assert.Equal(0, result.BestStep);
        Assert.Empty(result.Weights);
        Assert.Equal(0.003 / 9, result.LearningRate, 12); // started over twice
        foreach (var (name, values) in result.Norms)
            Assert.Equal(Transformer.ReadVector(original, name, values.Length), values);
    }

    [Fact]
    public void A_first_step_too_large_starts_over_smaller_as_if_started_there()
    {
        using var original = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var compressed = Uniform(original, bits: 3);
        string calibration = File.ReadAllText(SharedData.Path("corpora", "tinystories-calib.txt"))[..40_000];
        var options = new TuningOptions { ContextLength = 128, Tokens = 128 * 12, Epochs = 1, ChunksPerStep = 4, LearningRate = 3, Threads = 2 };
        var result = Tuner.Tune(original, compressed, calibration, options);
        Assert.True(result.LearningRate < options.LearningRate, $"step size {result.LearningRate}");
        var direct = Tuner.Tune(original, compressed, calibration, options with { LearningRate = result.LearningRate, Restarts = 0 });
        Assert.Equal((result.BestStep, result.HeldOutKldBefore, result.HeldOutKldAfter), (direct.BestStep, direct.HeldOutKldBefore, direct.HeldOutKldAfter));
        foreach (var (name, values) in result.Norms)
            Assert.Equal(values, direct.Norms[name]);
        Assert.Equal(result.Weights.Count, direct.Weights.Count);
        for (int i = 0; i < result.Weights.Count; i++)
            Assert.Equal(result.Weights[i].Decode(), direct.Weights[i].Decode());
    }

    [Fact]
    public void Tunable_weights_decode_as_the_weights_they_build()
    {
        var random = new Random(5);
        int rows = 12, columns = 48;
        var values = Values(random, rows * columns);
        var uniform = UniformWeight.Encode("u", values, rows, columns, new UniformScheme(3, 16, symmetric: false));
        var symmetric = UniformWeight.Encode("s", values, rows, columns, new UniformScheme(4, 48, symmetric: true));
        var codebook = Enumerable.Range(0, 16 * 4).Select(_ => HalfConversions.F32ToF16((float)random.NextDouble() - 0.5f)).ToArray();
        var indices = Enumerable.Range(0, rows * columns / 4).Select(_ => (ushort)random.Next(16)).ToArray();
        var scales = Enumerable.Range(0, rows).Select(_ => HalfConversions.F32ToF16(0.5f + (float)random.NextDouble())).ToArray();
        var vectors = new VectorCodebookWeight("v", rows, columns, 4, 4, codebook, indices, scales);
        bool[] hot = Enumerable.Range(0, rows).Select(r => r % 3 == 0).ToArray();
        var split = new RowSplitWeight("split", hot, UniformWeight.Encode("h", values.AsSpan(0, 4 * columns), 4, columns, new UniformScheme(5, 16, false)),
            new VectorCodebookWeight("c", 8, columns, 4, 4, codebook, indices[..(8 * columns / 4)], null));
        foreach (LinearWeight weight in new LinearWeight[] { uniform, symmetric, vectors, split })
        {
            var tunable = TunableWeight.For(weight)!;
            var dense = new float[rows * columns];
            tunable.Decode(dense);
            Assert.Equal(weight.Decode(), dense);
            for (int i = 0; i < tunable.Values.Length; i++)
                tunable.Values[i] += tunable.Units[i] * 0.37f;
            tunable.Decode(dense);
            var built = tunable.Build();
            Assert.Equal((weight.GetType(), weight.Scheme, weight.StoredBytes), (built.GetType(), built.Scheme, built.StoredBytes));
            Assert.Equal(built.Decode(), dense);
            Assert.NotEqual(weight.Decode(), dense);
        }
        Assert.Null(TunableWeight.For(BlockWeight.Float16("f", values, rows, columns)));
    }

    [Fact]
    public void Bad_input_is_refused_with_what_is_wrong()
    {
        using var original = ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer);
        using var other = SyntheticQwen3(seed: 1);
        var e = Assert.Throws<ArgumentException>(() => Tuner.Tune(original, other, "Once upon a time"));
        Assert.Contains("not a compression of", e.Message);
        e = Assert.Throws<ArgumentException>(() => Tuner.Tune(original, original, "Once upon a time there was a cat.", new TuningOptions { ContextLength = 64 }));
        Assert.Contains("whole chunks of 64", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Tuner.Tune(original, original, "text", new TuningOptions { LearningRate = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tuner.Tune(original, original, "text", new TuningOptions { Restarts = -1 }));
    }

    private static void AssertGraphMatchesRuntime(Model model, int[] tokens)
    {
        int vocab = model.Config.VocabSize;
        var teacher = RuntimeLogProbs(model, tokens);
        var graph = new TuningGraph(model, tokens.Length, threads: 2, tuneWeights: false);
        // KL against the runtime's own distributions is ~0 only when every position's logits agree.
        double kl = graph.Forward(tokens, teacher, 0, tokens.Length);
        Assert.True(kl / tokens.Length < 1e-6, $"mean KL {kl / tokens.Length} between the graph and the runtime");
        // A teacher that differs does register.
        var shifted = new float[teacher.Length];
        for (int t = 0; t < tokens.Length; t++)
            LogSoftmax.Compute(teacher.AsSpan(t * vocab, vocab).ToArray().Select((v, i) => v + (i % 3)).ToArray(), shifted.AsSpan(t * vocab, vocab));
        Assert.True(graph.Forward(tokens, shifted, 0, tokens.Length) / tokens.Length > 0.05);
    }

    private static void CheckGradients(Model original, Model compressed, int[] tokens)
    {
        var teacher = RuntimeLogProbs(original, tokens);
        var graph = new TuningGraph(compressed, tokens.Length, threads: 2, tuneWeights: true);
        Assert.Equal(compressed.Weights.Count, graph.Tunables.Count);
        graph.Forward(tokens, teacher, 1, tokens.Length);
        graph.Backward(1f);
        var random = new Random(7);
        double Loss() => graph.Forward(tokens, teacher, 1, tokens.Length);
        // Norm weights, three entries of each.
        for (int n = 0; n < graph.Norms.Count; n++)
        {
            var values = graph.Norms[n].Values;
            for (int probe = 0; probe < 3; probe++)
            {
                int i = random.Next(values.Length);
                AssertCentralDifference(values, i, graph.Norms[n].Gradient[i], Loss, () => { }, $"{graph.Norms[n].Name}[{i}]");
            }
        }
        // Weight parameters: the gradient through the dense weight's. A step of 1% of the value is far above f16's
        // rounding (0.05%), which the decoding applies.
        foreach (var (weight, denseGradient) in graph.Tunables)
        {
            var parameterGradient = new float[weight.Values.Length];
            weight.Backward(denseGradient, parameterGradient);
            for (int probe = 0; probe < 3; probe++)
            {
                int i = random.Next(weight.Values.Length);
                AssertCentralDifference(weight.Values, i, parameterGradient[i], Loss, graph.Refresh, $"{weight.Original.Name} parameter {i}");
            }
        }
    }

    private static void AssertCentralDifference(float[] values, int i, double analytic, Func<double> loss, Action refresh, string what)
    {
        float saved = values[i], h = 1e-2f * Math.Max(0.05f, Math.Abs(saved));
        values[i] = saved + h;
        refresh();
        double plus = loss();
        values[i] = saved - h;
        refresh();
        double minus = loss();
        values[i] = saved;
        refresh();
        double step = HalfConversions.F16ToF32(HalfConversions.F32ToF16(saved + h)) - HalfConversions.F16ToF32(HalfConversions.F32ToF16(saved - h));
        double numeric = (plus - minus) / (step == 0 ? 2 * h : step);
        Assert.True(Math.Abs(numeric - analytic) <= 0.04 * Math.Abs(numeric) + 1e-4 * (1 + Math.Abs(plus)), $"{what}: backward {analytic}, central difference {numeric}");
    }

    private static float[] RuntimeLogProbs(Model model, int[] tokens)
    {
        int vocab = model.Config.VocabSize;
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = 1, ContextLength = tokens.Length, BatchSize = tokens.Length });
        var logits = runtime.Forward(tokens, tokens.Length);
        var logProbs = new float[tokens.Length * vocab];
        for (int t = 0; t < tokens.Length; t++)
            LogSoftmax.Compute(logits.Slice(t * vocab, vocab), logProbs.AsSpan(t * vocab, vocab));
        return logProbs;
    }

    private static int[] SampleTokens(Model model, int count)
    {
        var tokens = model.Tokenizer.Encode(File.ReadAllText(SharedData.Path("corpora", "tinystories-calib.txt"))[..2000], addBos: true);
        return tokens[..count];
    }

    /// <summary>Every linear weight in uniform codes of <paramref name="bits"/> bits, one group per row.</summary>
    private static Model Uniform(Model model, int bits)
    {
        var weights = new List<LinearWeight>();
        foreach (var t in model.Tensors.Where(t => t.Shape.Length == 2))
            weights.Add(UniformWeight.Encode(t, new UniformScheme(bits, (int)t.Columns, symmetric: false)));
        return model.WithWeights(weights);
    }

    private static float[] Values(Random random, int count) => Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();

    /// <summary>A small random Qwen3-style model in memory: q/k/v biases, per-head q/k norms, NeoX pairs, grouped
    /// queries, a head width other than dim / heads, and a separate classifier.</summary>
    private static unsafe Model SyntheticQwen3(int seed)
    {
        var config = new ModelConfig
        {
            Architecture = "qwen3", Dim = 16, HiddenDim = 24, LayerCount = 2, HeadCount = 4, KvHeadCount = 2, HeadDim = 8, VocabSize = 12,
            ContextLength = 64, RopeTheta = 10000f, RopeStyle = RopeStyle.Neox, AttentionBias = true, QkNorm = true, TiedEmbeddings = false,
        };
        var random = new Random(seed);
        var tensors = new List<Tensor>();
        var owned = new List<IDisposable>();
        void Add(string name, long[] shape, float mean, float spread)
        {
            long count = shape.Aggregate(1L, (a, b) => a * b);
            var buffer = NativeBuffer.Allocate(4 * count);
            owned.Add(buffer);
            var span = new Span<float>(buffer.Pointer, (int)count);
            for (int i = 0; i < span.Length; i++)
                span[i] = mean + spread * (float)(random.NextDouble() * 2 - 1);
            tensors.Add(new Tensor(name, GgmlType.F32, shape, buffer, 0));
        }
        int d = config.Dim, q = config.QDim, kv = config.KvDim, h = config.HiddenDim;
        Add(TensorNames.TokenEmbedding, [config.VocabSize, d], 0, 1);
        Add(TensorNames.Output, [config.VocabSize, d], 0, 0.5f);
        Add(TensorNames.OutputNorm, [d], 1, 0.3f);
        for (int l = 0; l < config.LayerCount; l++)
        {
            Add(TensorNames.AttentionNorm(l), [d], 1, 0.3f);
            Add(TensorNames.FeedForwardNorm(l), [d], 1, 0.3f);
            Add(TensorNames.QueryNorm(l), [config.HeadDim], 1, 0.3f);
            Add(TensorNames.KeyNorm(l), [config.HeadDim], 1, 0.3f);
            Add(TensorNames.Query(l), [q, d], 0, 0.4f);
            Add(TensorNames.Key(l), [kv, d], 0, 0.4f);
            Add(TensorNames.Value(l), [kv, d], 0, 0.4f);
            Add(TensorNames.QueryBias(l), [q], 0, 0.2f);
            Add(TensorNames.KeyBias(l), [kv], 0, 0.2f);
            Add(TensorNames.ValueBias(l), [kv], 0, 0.2f);
            Add(TensorNames.AttentionOutput(l), [d, q], 0, 0.4f);
            Add(TensorNames.Gate(l), [h, d], 0, 0.4f);
            Add(TensorNames.Up(l), [h, d], 0, 0.4f);
            Add(TensorNames.Down(l), [d, h], 0, 0.4f);
        }
        return new Model(config, FormatTestHelpers.InlineVocabulary(config.VocabSize), tensors, "synthetic-qwen3", owned);
    }
}
