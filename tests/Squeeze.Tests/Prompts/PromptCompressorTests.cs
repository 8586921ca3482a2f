using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Prompts;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Prompts;

/// <summary>stories15M and a runtime on it with a context of 256 (once for the class), and a prompt of two real stories
/// from the evaluation text: longer than the context, so scoring runs in windows.</summary>
public sealed class PromptFixture : IDisposable
{
    public PromptFixture()
    {
        Model = ModelLoader.Load(SharedData.Stories15M);
        Runtime = new Transformer(Model, new RuntimeOptions { Threads = 2, ContextLength = 256 });
        var stories = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")).Split("\n\n\n\n", StringSplitOptions.RemoveEmptyEntries);
        Prompt = stories[2].Trim() + "\n" + stories[3].Trim();
    }

    public Model Model { get; }

    public Transformer Runtime { get; }

    public string Prompt { get; }

    public void Dispose()
    {
        Runtime.Dispose();
        Model.Dispose();
    }
}

public sealed class PromptCompressorTests(PromptFixture fixture) : IClassFixture<PromptFixture>
{
    private PromptCompressionResult Compress(PromptCompressionMethod method, double ratio, string? question = null, int seed = 42, IProgress<StageProgress>? progress = null)
        => PromptCompressor.Compress(fixture.Runtime, fixture.Prompt, new PromptCompressionOptions { Method = method, Ratio = ratio, Question = question, Seed = seed }, progress);

    [Theory]
    [InlineData(PromptCompressionMethod.LlmLingua, 3)]
    [InlineData(PromptCompressionMethod.LlmLingua, 5)]
    [InlineData(PromptCompressionMethod.SelectiveContext, 3)]
    [InlineData(PromptCompressionMethod.SelectiveContext, 5)]
    [InlineData(PromptCompressionMethod.Extractive, 3)]
    [InlineData(PromptCompressionMethod.Extractive, 5)]
    [InlineData(PromptCompressionMethod.KeepFirst, 3)]
    [InlineData(PromptCompressionMethod.KeepLast, 3)]
    [InlineData(PromptCompressionMethod.Random, 3)]
    [InlineData(PromptCompressionMethod.Random, 5)]
    public void Each_method_hits_its_ratio_keeping_the_prompts_characters_in_order(PromptCompressionMethod method, double ratio)
    {
        var result = Compress(method, ratio);

        Assert.Equal(fixture.Model.Tokenizer.Encode(fixture.Prompt, addBos: false).Length, result.OriginalTokens);
        Assert.True(result.OriginalTokens > 256, "the prompt must be longer than the context, so scoring runs in windows");
        Assert.InRange(result.Ratio, ratio * 0.93, ratio * 1.07);
        Assert.Equal(method, result.Method);
        Assert.Equal(method is PromptCompressionMethod.KeepFirst or PromptCompressionMethod.KeepLast or PromptCompressionMethod.Random, result.ScoredTokens == 0);
        // nothing is rewritten: the kept text's characters (spaces aside) are a subsequence of the prompt's
        string original = new([.. fixture.Prompt.Where(c => !char.IsWhiteSpace(c))]);
        int at = 0;
        foreach (char c in result.Text.Where(c => !char.IsWhiteSpace(c)))
        {
            at = original.IndexOf(c, at) + 1;
            Assert.True(at > 0, $"'{c}' of the compressed prompt is not in the prompt in order:\n{result.Text}");
        }
    }

    [Fact]
    public void The_baselines_keep_the_ends_they_name()
    {
        var first = Compress(PromptCompressionMethod.KeepFirst, 4);
        var last = Compress(PromptCompressionMethod.KeepLast, 4);
        Assert.StartsWith(first.Text, fixture.Prompt, StringComparison.Ordinal);
        Assert.EndsWith(last.Text.TrimStart(), fixture.Prompt, StringComparison.Ordinal);
    }

    [Fact]
    public void The_same_seed_keeps_the_same_tokens_and_another_seed_others()
    {
        Assert.Equal(Compress(PromptCompressionMethod.Random, 3, seed: 7).Text, Compress(PromptCompressionMethod.Random, 3, seed: 7).Text);
        Assert.NotEqual(Compress(PromptCompressionMethod.Random, 3, seed: 7).Text, Compress(PromptCompressionMethod.Random, 3, seed: 8).Text);
        Assert.Equal(Compress(PromptCompressionMethod.LlmLingua, 3).Text, Compress(PromptCompressionMethod.LlmLingua, 3).Text);
    }

    [Theory]
    [InlineData(PromptCompressionMethod.LlmLingua)]
    [InlineData(PromptCompressionMethod.Extractive)]
    public void A_question_changes_what_is_kept(PromptCompressionMethod method)
    {
        const string question = "What did Lily get from her grandma?";
        var without = Compress(method, 3);
        var with = Compress(method, 3, question);
        Assert.NotEqual(without.Text, with.Text);
        Assert.InRange(with.Ratio, 3 * 0.93, 3 * 1.07);
        Assert.True(with.ScoredTokens > 0);
    }

    [Fact]
    public void Llmlingua_keeps_the_last_words_whole_and_picks_its_tail_share_among_those_given()
    {
        PromptCompressionResult With(params double[] shares) => PromptCompressor.Compress(fixture.Runtime, fixture.Prompt,
            new PromptCompressionOptions { Ratio = 4, TailShares = shares });

        // the whole budget to the tail (but what rounding to whole words leaves): the longest end of the prompt kept
        // whole; a smaller tail leaves room for words from before it
        var all = With(1);
        var half = With(0.5);
        int budget = (int)Math.Round(all.OriginalTokens / 4.0);
        Assert.True(Suffix(all.Text) > Suffix(half.Text) && Suffix(half.Text) >= 80, $"{Suffix(all.Text)} and {Suffix(half.Text)} characters of the prompt's end");
        Assert.True(fixture.Model.Tokenizer.Encode(fixture.Prompt[^Suffix(all.Text)..], addBos: false).Length >= budget - 8);
        // with several shares, one of them is taken (the one the prompt's own end preferred), at a higher cost
        var chosen = With(0.5, 1);
        Assert.Contains(chosen.Text, new[] { half.Text, all.Text });
        Assert.True(chosen.ScoredTokens > half.ScoredTokens);
    }

    // characters at the end of the prompt that text ends with
    private int Suffix(string text)
    {
        int n = 0;
        while (n < text.Length && n < fixture.Prompt.Length && text[^(n + 1)] == fixture.Prompt[^(n + 1)])
            n++;
        return n;
    }

    [Fact]
    public void Ratio_one_keeps_the_prompt()
    {
        const string prompt = "Tom had a red ball. He liked to throw it high.";
        var result = PromptCompressor.Compress(fixture.Runtime, prompt, new PromptCompressionOptions { Ratio = 1 });
        Assert.Equal(prompt, result.Text);
        Assert.Equal(1, result.Ratio);
    }

    [Fact]
    public void Progress_names_each_stage_of_llmlingua()
    {
        var stages = new List<StageProgress>();
        Compress(PromptCompressionMethod.LlmLingua, 5, progress: new SynchronousProgress<StageProgress>(stages.Add));
        Assert.Equal(["tail share", "budget controller", "token pruning"], stages.Select(s => s.Stage).Distinct());
        Assert.All(stages, s => Assert.Equal(3, s.Count));
        Assert.Equal([1, 2, 3], stages.Select(s => s.Number).Distinct());
        Assert.All(stages.GroupBy(s => s.Stage), g => Assert.Equal(g.Last().Total, g.Last().Done));
    }

    [Fact]
    public void A_cancelled_token_stops_the_work()
    {
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => PromptCompressor.Compress(fixture.Runtime, fixture.Prompt, new PromptCompressionOptions { Ratio = 3 }, null, cancelled.Token));
        Assert.Equal(default, fixture.Runtime.Cancellation);
    }

    [Theory]
    [InlineData("", 2, "the prompt is empty")]
    [InlineData(" \n\t ", 2, "the prompt is empty")]
    [InlineData("PK\u0003\u0004 binary", 2, "the prompt is not text: control character U+0003 at character 2")]
    [InlineData("Once upon a time.", 0.5, "the ratio must be a number of at least 1, not 0.5")]
    [InlineData("Once upon a time.", double.NaN, "the ratio must be a number of at least 1, not NaN")]
    [InlineData("Once upon a time.", 2, "the tail shares must be one or more numbers from 0 to 1, not [0.5, 1.5]", 1.5)]
    [InlineData("Once upon a time.", 2, "the tail shares must be one or more numbers from 0 to 1, not []", -1.0)]
    public void Bad_input_is_one_line_naming_the_problem(string prompt, double ratio, string message, double tailShare = 0.7)
    {
        double[] shares = tailShare < 0 ? [] : tailShare > 1 ? [0.5, tailShare] : [tailShare];
        var e = Assert.ThrowsAny<ArgumentException>(() => PromptCompressor.Compress(fixture.Runtime, prompt, new PromptCompressionOptions { Ratio = ratio, TailShares = shares }));
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Method_names_round_trip_and_an_unknown_one_lists_them()
    {
        foreach (var method in Enum.GetValues<PromptCompressionMethod>())
            Assert.Equal(method, PromptCompressionOptions.Parse(PromptCompressionOptions.Name(method)));
        var e = Assert.Throws<ArgumentException>(() => PromptCompressionOptions.Parse("lingua"));
        Assert.StartsWith("unknown prompt compression method 'lingua' (one of llmlingua, selective-context, extractive, keep-first, keep-last, random)", e.Message, StringComparison.Ordinal);
    }
}
