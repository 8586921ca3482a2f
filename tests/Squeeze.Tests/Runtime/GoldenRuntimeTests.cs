using System.Text;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Models;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Squeeze.Tests.Runtime;

/// <summary>The runtime against llama.cpp's figures for the real stories15M model (shared/golden/README.md).</summary>
public class GoldenRuntimeTests(ITestOutputHelper output)
{
    private const string GoldenContinuation =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. One day, she saw a big, red ball in the sky. It was the sun! She thought it was so pretty.\n" +
        "Lily wanted to play with the ball, but it was too high up in the sky. She tried to jump and reach it, but she couldn't. Then, she had an idea. She would use a stick to knock the ball down.";

    [Fact]
    public void Llama2c_and_gguf_checkpoints_give_the_same_logits()
    {
        using var llama2c = ModelLoader.Load(SharedData.Stories15M);
        using var gguf = ModelLoader.Load(SharedData.Golden("stories15M-f32.gguf"));
        int[] tokens = llama2c.Tokenizer.Encode("Once upon a time, there was a little dog named Max. He liked to run.", addBos: true);
        Assert.Equal(tokens, gguf.Tokenizer.Encode("Once upon a time, there was a little dog named Max. He liked to run.", addBos: true));
        var a = Logits(llama2c, tokens);
        var b = Logits(gguf, tokens);
        LogitAssert.Close(a, b, tolerance: 1e-4f, output);
    }

    [Fact]
    public void Batched_prompt_and_one_token_decoding_agree()
    {
        using var model = ModelLoader.Load(SharedData.Stories15M);
        int[] tokens = model.Tokenizer.Encode("Tom and Sue went to the park. They saw a big tree.", addBos: true);
        var batched = Logits(model, tokens);
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = 2, BatchSize = 1 });
        var stepwise = runtime.Forward(tokens, logitCount: tokens.Length).ToArray();
        LogitAssert.Close(batched, stepwise, tolerance: 1e-4f, output);
    }

    [Fact]
    public void Perplexity_on_tinystories_eval_matches_llama_cpp()
    {
        using var model = ModelLoader.Load(SharedData.Golden("stories15M-f32.gguf"));
        string text = File.ReadAllText(SharedData.Corpus("tinystories-eval.txt"));
        var result = Evaluator.Evaluate(model, text, new EvaluationOptions { ContextLength = 256, Threads = 2 });
        output.WriteLine($"perplexity {result.Perplexity:0.0000} over {result.Chunks} chunks, {result.ScoredTokens} tokens; llama.cpp 6.4990");
        Assert.Equal(192, result.Chunks);
        Assert.Equal(24384, result.ScoredTokens);
        Assert.InRange(result.Perplexity, 6.4990 * 0.999, 6.4990 * 1.001);
    }

    [Fact]
    public void Greedy_generation_reproduces_the_golden_continuation()
    {
        using var model = ModelLoader.Load(SharedData.Stories15M);
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = 2 });
        var tokens = Generator.Generate(runtime, "Once upon a time", 100, new Sampler(new SamplingOptions { Temperature = 0 }));
        Assert.Equal(100, tokens.Count);
        var bytes = tokens.SelectMany(t => model.Tokenizer.TokenBytes(t)).ToArray();
        string text = "Once upon a time" + Encoding.UTF8.GetString(bytes);
        output.WriteLine(text);
        // The 100th token is a newline, which the golden README's paragraph cannot show.
        Assert.EndsWith("\n", text);
        Assert.Equal(GoldenContinuation, text[..^1]);
    }

    internal static float[] Logits(Model model, int[] tokens)
    {
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = 2 });
        return runtime.Forward(tokens, logitCount: tokens.Length).ToArray();
    }
}

/// <summary>Compares logit arrays and prints the first differences and the largest one on failure.</summary>
internal static class LogitAssert
{
    public static void Close(float[] expected, float[] actual, float tolerance, ITestOutputHelper output)
    {
        Assert.Equal(expected.Length, actual.Length);
        float max = 0;
        int shown = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            float d = Math.Abs(expected[i] - actual[i]);
            if (!(d <= tolerance) && shown++ < 5)
                output.WriteLine($"[{i}] expected {expected[i]} actual {actual[i]}");
            max = Math.Max(max, float.IsNaN(d) ? float.PositiveInfinity : d);
        }
        output.WriteLine($"max |difference| {max}");
        Assert.True(max <= tolerance, $"logits differ by up to {max} (tolerance {tolerance})");
    }
}
