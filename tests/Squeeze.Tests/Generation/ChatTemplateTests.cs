using System.Text;
using LLama;
using Squeeze.Formats;
using Squeeze.Formats.Gguf;
using Squeeze.Generation;
using Squeeze.Tensors;
using Squeeze.Tests.Cli;
using Squeeze.Tests.Formats.HuggingFace;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tokenizers;

namespace Squeeze.Tests.Generation;

/// <summary>
/// Chat templates as llama.cpp's <c>llama_chat_apply_template</c> applies them: the family recognised from the
/// template's markers, the messages written in that family's format. llama.cpp (through LLamaSharp's
/// <see cref="LLamaTemplate"/>, which calls <c>llama_chat_apply_template</c> on a template text) is the judge.
/// </summary>
public sealed class ChatTemplateTests(Llama3Checkpoint llama3) : IClassFixture<Llama3Checkpoint>
{
    private static readonly ChatMessage[][] Conversations =
    [
        [new("user", "Hello there")],
        [new("system", "You are terse."), new("user", "  What is 2+2? \n")],
        [new("system", "Be kind."), new("user", "Hi"), new("assistant", " Hello! How can I help?"), new("user", "Tell me a story.")],
        [new("user", "Ünïcödé ✓ and\nnew lines"), new("assistant", "ok"), new("user", "again")],
    ];

    private static string RealTemplate(string name)
        => VocabularyReader.FromTokenizerJson(SharedData.Path("tokenizers", "hf", name, "tokenizer.json")).ChatTemplate
            ?? throw new InvalidOperationException($"{name}: no chat template");

    // Templates of each written family as llama.cpp recognises them: the two real ones, Jinja fragments carrying each
    // family's markers (as in llama.cpp's tests), and the family names.
    public static TheoryData<string, string> Templates()
    {
        var data = new TheoryData<string, string>
        {
            { "real:qwen3", "chatml" },
            { "real:llama3", "llama3" },
            { "{% if message['role'] == 'system' %}<<SYS>>{% endif %}[INST] {{ content }} [/INST]", "llama2-sys" },
            { "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}<<SYS>>", "llama2-sys-strip" },
            { "{{ bos_token + '[INST] ' }}<<SYS>>", "llama2-sys-bos" },
            { "[INST] {{ content }} [/INST]", "llama2" },
            { "{{ '[INST] ' }}[AVAILABLE_TOOLS]{{ '[/INST]' }}", "mistral-v3" },
            { "{{ ' [INST] ' + system_message }}", "mistral-v1" },
            { "{{ \"[INST]\" }}[AVAILABLE_TOOLS]", "mistral-v3-tekken" },
            { "[SYSTEM_PROMPT][INST]", "mistral-v7" },
            { "{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>' + '\\n'}}{{ '<|assistant|>\\n' }}", "phi3" },
            { "<|im_start|>{{ role }}<|im_sep|>", "phi4" },
            { "{{ '<|user|>\\n' + content + '<|endoftext|>' }}", "zephyr" },
            { "<start_of_turn>{{ role }}\n{{ content | trim }}<end_of_turn>", "gemma" },
            { "{{ 'USER: ' + content }}{{ 'ASSISTANT: ' }}", "vicuna" },
            { "{{ 'SYSTEM: ' }}{{ 'USER: ' + content }}{{ 'ASSISTANT: ' }}", "vicuna-orca" },
            { "<|header_start|>{{ role }}<|header_end|>", "llama4" },
        };
        foreach (string family in ChatTemplate.Families)
            data.Add(family, family);
        return data;
    }

    [Theory]
    [MemberData(nameof(Templates))]
    public void Each_family_is_recognised_and_written_as_llama_cpp_writes_it(string template, string family)
    {
        if (template.StartsWith("real:", StringComparison.Ordinal))
            template = RealTemplate(template[5..]);
        Assert.Equal(family, ChatTemplate.DetectFamily(template, out bool written));
        Assert.True(written);
        var chat = ChatTemplate.Named(family);
        foreach (var conversation in Conversations)
        {
            foreach (bool addAssistant in new[] { true, false })
                Assert.Equal(LlamaCppApply(template, conversation, addAssistant), chat.Apply(conversation, addAssistant));
        }
    }

    [Fact]
    public void The_real_tokenizers_carry_their_templates_and_end_of_turn_tokens()
    {
        var qwen = VocabularyReader.FromTokenizerJson(SharedData.Path("tokenizers", "hf", "qwen3", "tokenizer.json"));
        Assert.StartsWith("{%- if tools %}", qwen.ChatTemplate, StringComparison.Ordinal);
        Assert.Equal("<|im_end|>", qwen.Tokens[qwen.EotId]);
        Assert.True(qwen.EndsGeneration(qwen.EotId));
        var llama = VocabularyReader.FromTokenizerJson(SharedData.Path("tokenizers", "hf", "llama3", "tokenizer.json"));
        Assert.Equal("<|eot_id|>", llama.Tokens[llama.EotId]);
        Assert.Equal("<|begin_of_text|>", llama.Tokens[llama.BosId]);
    }

    [Fact]
    public void A_converted_GGUF_carries_the_template_and_special_ids_where_llama_cpp_reads_them()
    {
        using var model = ModelLoader.Load(llama3.HuggingFace);
        using var file = GgufFile.Open(llama3.Gguf);
        Assert.Equal(model.Vocabulary.ChatTemplate, file.GetString("tokenizer.chat_template"));
        using var back = ModelLoader.Load(llama3.Gguf);
        Assert.Equal(model.Vocabulary.ChatTemplate, back.Vocabulary.ChatTemplate);
        Assert.Equal(model.Vocabulary.EotId, back.Vocabulary.EotId);

        using var judge = LlamaCpp.Load(llama3.Gguf, vocabOnly: true);
        Assert.Equal(model.Vocabulary.ChatTemplate, judge.ChatTemplate);
        Assert.Equal(model.Vocabulary.BosId, (int?)judge.Vocabulary.BOS);
        Assert.Equal(model.Vocabulary.EosId, (int?)judge.Vocabulary.EOS);
        Assert.Equal(model.Vocabulary.EotId, (int?)judge.Vocabulary.EOT);
        Assert.Equal(model.Vocabulary.AddBos, judge.Vocabulary.ShouldAddBOS);

        // The chat prompt's tokens: llama.cpp's own template text, tokenized by llama.cpp as its server does.
        var chat = ChatTemplate.For(back);
        Assert.Equal("llama3", chat.Family);
        foreach (var conversation in Conversations)
        {
            string text = LlamaCppApply(judge.ChatTemplate!, conversation, addAssistant: true);
            Assert.Equal(judge.Tokenize(text, addSpecial: true, parseSpecial: true), chat.Encode(back.Tokenizer, conversation));
        }
    }

    [Fact]
    public void A_model_without_a_template_or_with_an_unknown_one_is_refused_in_one_line_naming_it()
    {
        using var stories = ModelLoader.Load(SharedData.Stories15M, SharedData.Stories15MTokenizerModel);
        var none = Assert.Throws<ModelFormatException>(() => ChatTemplate.For(stories));
        Assert.Contains(SharedData.Stories15M, none.Message, StringComparison.Ordinal);
        Assert.Contains("no chat template", none.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', none.Message);

        var unknown = Assert.Throws<ModelFormatException>(() => ChatTemplate.For(stories, "{% for m in messages %}{{ m.content }}\n{% endfor %}"));
        Assert.Contains("no family Squeeze recognises", unknown.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', unknown.Message);
        var unwritten = Assert.Throws<ModelFormatException>(() => ChatTemplate.For(stories, "GPT4 Correct User"));
        Assert.Contains("\"openchat\"", unwritten.Message, StringComparison.Ordinal);
        Assert.Equal("chatml", ChatTemplate.For(stories, "chatml").Family);
    }

    [Fact]
    public void Generate_chat_answers_in_the_template_and_refuses_a_model_without_one()
    {
        var result = CliRunner.Run("generate", llama3.Gguf, "--chat", "--system", "Be brief.", "-p", "Hi", "-n", "4", "--temp", "0", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        using var model = ModelLoader.Load(llama3.Gguf);
        var prompt = ChatTemplate.For(model).Encode(model.Tokenizer, [new("system", "Be brief."), new("user", "Hi")]);
        Assert.Equal(prompt.Length, result.Json.GetProperty("promptTokens").GetInt32());

        var refused = CliRunner.Run("generate", SharedData.Stories15M, "--tokenizer", SharedData.Stories15MTokenizerModel, "--chat", "-p", "Hi", "-n", "2");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("no chat template", refused.Stderr, StringComparison.Ordinal);
    }

    private static string LlamaCppApply(string template, ChatMessage[] conversation, bool addAssistant)
    {
        LlamaCpp.EnsureLoaded();
        var t = new LLamaTemplate(template) { AddAssistant = addAssistant };
        foreach (var m in conversation)
            t.Add(m.Role, m.Content);
        return Encoding.UTF8.GetString(t.Apply());
    }
}
