using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Evaluation;

public class EvaluatorTests
{
    private static readonly EvaluationOptions Options = new() { ContextLength = 128, MaxChunks = 3, Threads = 2 };

    [Fact]
    public void Scoring_several_models_in_one_pass_equals_scoring_each_alone()
    {
        using var llama2c = ModelLoader.Load(SharedData.Stories260K);
        using var gguf = ModelLoader.Load(SharedData.Golden("stories260K-f32.gguf"));
        string text = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"));
        var together = Evaluator.EvaluateMany([llama2c, gguf], text, Options, baseModel: llama2c);
        var alone = Evaluator.Evaluate(gguf, text, Options, baseModel: llama2c);
        Assert.Equal(alone.Perplexity, together[1].Perplexity);
        Assert.Equal(alone.KlDivergence!.Mean, together[1].KlDivergence!.Mean);
        // The base scored as a model takes the base's own log-probabilities: no divergence from itself.
        Assert.Equal(together[0].Perplexity, together[0].KlDivergence!.BasePerplexity);
        Assert.Equal(0, together[0].KlDivergence!.Mean);
        Assert.Equal(100, together[0].KlDivergence!.SameTopTokenPercent);
        Assert.Equal(3 * 63, together[0].ScoredTokens);
    }

    [Fact]
    public void A_vocabulary_that_adds_no_BOS_is_evaluated_without_one_as_llama_cpp_does()
    {
        // llama.cpp's perplexity puts BOS at the start of each chunk only when the vocabulary asks for it (Qwen's do not,
        // and some have no BOS at all); Squeeze put BOS there always, and failed on a vocabulary without one.
        using var withBos = ModelLoader.Load(SharedData.Stories260K);
        var v = withBos.Vocabulary;
        var noBos = new Squeeze.Tokenizers.Vocabulary
        {
            Kind = v.Kind, Tokens = v.Tokens, Scores = v.Scores, Types = v.Types, Merges = v.Merges, PreTokenizer = v.PreTokenizer,
            BosId = -1, EosId = v.EosId, UnknownId = v.UnknownId, PaddingId = v.PaddingId, AddBos = false, AddSpacePrefix = v.AddSpacePrefix,
        };
        using var withoutBos = new Squeeze.Models.Model(withBos.Config, noBos, withBos.Tensors, "stories260K without BOS", []);
        string text = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"));
        var a = Evaluator.Evaluate(withBos, text, Options);
        var b = Evaluator.Evaluate(withoutBos, text, Options);
        Assert.Equal(a.ScoredTokens, b.ScoredTokens);
        Assert.True(double.IsFinite(b.Perplexity));
        Assert.NotEqual(a.Perplexity, b.Perplexity); // the chunks start from the text's own tokens, not from BOS
    }

    [Fact]
    public void Text_shorter_than_one_chunk_is_a_clear_error()
    {
        using var model = ModelLoader.Load(SharedData.Stories260K);
        var e = Assert.Throws<ArgumentException>(() => Evaluator.Evaluate(model, "Once upon a time.", Options));
        Assert.Contains("fewer than one chunk of 128", e.Message);
    }
}
