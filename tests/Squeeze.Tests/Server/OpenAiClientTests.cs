using System.Text;
using OpenAI.Chat;
using Squeeze.Generation;
using Squeeze.Tests.Cli;
using Squeeze.Tests.Infrastructure;
using ChatMessage = OpenAI.Chat.ChatMessage;

#pragma warning disable OPENAI001 // ChatCompletionOptions.Seed is marked experimental

namespace Squeeze.Tests.Server;

/// <summary>
/// <c>squeeze serve</c> through the <c>OpenAI</c> .NET client (2.15.0): completions, chat, streaming, models; several
/// requests at once, batched into one forward pass, give the tokens <c>squeeze generate</c> gives with the same seed.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class OpenAiClientTests(ServerFixture server)
{
    private static readonly string[] Prompts = ["Once upon a time", "The little dog", "Lily and Ben went to the park. They", "One day, a big"];

    [Fact]
    public void A_completion_is_what_squeeze_generate_prints_with_the_same_seed()
    {
        var cli = CliRunner.Run("generate", SharedData.Stories15M, "--tokenizer", SharedData.Stories15MTokenizerModel, "-p", Prompts[0], "-n", "24",
            "--temp", "0.8", "--top-p", "0.95", "--seed", "7", "--ctx", "256", "--threads", "2", "--json");
        Assert.True(cli.ExitCode == 0, cli.Stderr);
        var (status, body) = server.Completion($$"""{"model": "stories15M.bin", "prompt": "{{Prompts[0]}}", "max_tokens": 24, "temperature": 0.8, "top_p": 0.95, "seed": 7}""");
        Assert.Equal(200, status);
        var choice = body.GetProperty("choices")[0];
        Assert.Equal(cli.Json.GetProperty("text").GetString(), Prompts[0] + choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(24, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(cli.Json.GetProperty("promptTokens").GetInt32(), body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public async Task Concurrent_completions_are_batched_and_each_is_what_it_would_be_alone()
    {
        using var model = ServerFixture.LoadStories();
        var expected = Prompts.Select((p, i) => ServerFixture.Generate(model, model.Tokenizer.Encode(p, addBos: true), 32,
            new SamplingOptions { Temperature = 0.9f, TopP = 0.9f, Seed = 100 + i })).ToArray();
        // eight requests at once (two per prompt) for four sequences: batched, and some queued
        var tasks = Enumerable.Range(0, 8).Select(r => Task.Run(() => server.Completion(
            $$"""{"prompt": "{{Prompts[r % 4]}}", "max_tokens": 32, "temperature": 0.9, "top_p": 0.9, "seed": {{100 + r % 4}}}"""))).ToArray();
        var results = await Task.WhenAll(tasks);
        for (int r = 0; r < results.Length; r++)
        {
            Assert.Equal(200, results[r].Status);
            Assert.Equal(expected[r % 4], results[r].Body.GetProperty("choices")[0].GetProperty("text").GetString());
        }
        await server.WaitForIdle();
    }

    [Fact]
    public async Task A_streamed_completion_is_the_whole_one_in_pieces()
    {
        var whole = server.Completion("""{"prompt": "The little dog", "max_tokens": 20, "temperature": 0.7, "seed": 3}""").Body;
        var (pieces, finish) = await server.StreamCompletion("""{"prompt": "The little dog", "max_tokens": 20, "temperature": 0.7, "seed": 3, "stream": true}""");
        Assert.True(pieces.Count >= 10);
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), string.Concat(pieces));
        Assert.Equal("length", finish);
    }

    [Fact]
    public async Task Chat_answers_in_the_template_as_generate_would_and_streams_the_same()
    {
        using var model = ServerFixture.LoadStories();
        var messages = new Squeeze.Generation.ChatMessage[] { new("system", "You tell stories."), new("user", "Tell me about a cat.") };
        var prompt = ChatTemplate.Named("chatml").Encode(model.Tokenizer, messages);
        string expected = ServerFixture.Generate(model, prompt, 24, new SamplingOptions { Temperature = 0.8f, TopP = 0.95f, Seed = 11 });

        var chat = server.Client.GetChatClient("stories15M.bin");
        ChatMessage[] request = [new SystemChatMessage("You tell stories."), new UserChatMessage("Tell me about a cat.")];
        var options = new ChatCompletionOptions { Temperature = 0.8f, TopP = 0.95f, Seed = 11, MaxOutputTokenCount = 24 };
        ChatCompletion completion = await chat.CompleteChatAsync(request, options);
        Assert.Equal(expected, completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(prompt.Length, completion.Usage.InputTokenCount);
        Assert.Equal(24, completion.Usage.OutputTokenCount);

        var streamed = new StringBuilder();
        ChatFinishReason? finish = null;
        int updates = 0;
        await foreach (var update in chat.CompleteChatStreamingAsync(request, options))
        {
            updates++;
            foreach (var part in update.ContentUpdate)
                streamed.Append(part.Text);
            finish ??= update.FinishReason;
        }
        Assert.True(updates > 10);
        Assert.Equal(expected, streamed.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
    }

    [Fact]
    public async Task Stop_texts_end_the_answer_before_them()
    {
        var chat = server.Client.GetChatClient("stories15M.bin");
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 40 };
        string full = (await chat.CompleteChatAsync([new UserChatMessage("Once upon a time")], options)).Value.Content[0].Text;
        int cut = full.IndexOf(' ', 10);
        Assert.True(cut > 0, full);
        string stop = full.Substring(cut, 4);
        options.StopSequences.Add(stop);
        var stopped = (await chat.CompleteChatAsync([new UserChatMessage("Once upon a time")], options)).Value;
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], stopped.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);

        var streamed = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("Once upon a time")], options))
        {
            foreach (var part in update.ContentUpdate)
                streamed.Append(part.Text);
        }
        Assert.Equal(stopped.Content[0].Text, streamed.ToString());
    }

    [Fact]
    public async Task Models_lists_the_model_with_its_size()
    {
        var models = (await server.Client.GetOpenAIModelClient().GetModelsAsync()).Value;
        var model = Assert.Single(models);
        Assert.Equal("stories15M.bin", model.Id);
        Assert.Equal("squeeze", model.OwnedBy);
        string health = await server.Http.GetStringAsync(new Uri(server.Server.Address, "health"));
        Assert.Equal("""{"status":"ok"}""", health);
    }
}
