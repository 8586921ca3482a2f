using System.Text;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tokenizers;

namespace Squeeze.Generation;

/// <summary>One message of a conversation: a role ("system", "user", "assistant" …) and its text.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A model's chat template, applied without a Jinja engine, as llama.cpp's <c>llama_chat_apply_template</c> does: the
/// template's family is recognised by the markers it contains (or by its llama.cpp name, "chatml", "llama3" …), in
/// llama.cpp's order, and the messages are written in that family's format. Families llama.cpp recognises but Squeeze
/// does not write are refused by name, never written in another family's format.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>The llama.cpp names of the families Squeeze writes.</summary>
    public static IReadOnlyList<string> Families { get; } =
    [
        "chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "mistral-v1", "mistral-v3", "mistral-v3-tekken",
        "mistral-v7", "mistral-v7-tekken", "phi3", "phi4", "zephyr", "gemma", "llama3", "vicuna", "vicuna-orca", "llama4",
    ];

    // Families llama.cpp recognises that Squeeze does not write (refused by name).
    private static readonly HashSet<string> Unwritten = new(StringComparer.Ordinal)
    {
        "smolvlm", "chatglm4", "chatglm3", "falcon3", "glmedge", "monarch", "orion", "openchat", "deepseek", "deepseek2", "deepseek3",
        "command-r", "minicpm", "exaone3", "exaone4", "rwkv-world", "granite", "gigachat", "megrez", "yandex", "bailing", "dots1",
        "hunyuan-moe", "hunyuan-dense", "kimi-k2",
    };

    private ChatTemplate(string family) => Family = family;

    /// <summary>The llama.cpp name of the template's family ("chatml", "llama3" …).</summary>
    public string Family { get; }

    /// <summary>The template of family <paramref name="family"/> (one of <see cref="Families"/>).</summary>
    /// <exception cref="ArgumentException">Not a family Squeeze writes.</exception>
    public static ChatTemplate Named(string family)
        => Families.Contains(family) ? new ChatTemplate(family)
            : throw new ArgumentException($"chat template '{family}' is not one of {string.Join(", ", Families)}", nameof(family));

    /// <summary>The family of <paramref name="template"/> (a Jinja text or a family name) as llama.cpp's
    /// <c>llm_chat_detect_template</c> recognises it; null when llama.cpp would not recognise it either. A family
    /// llama.cpp knows and Squeeze does not write comes back by name with <paramref name="written"/> false.</summary>
    public static string? DetectFamily(string template, out bool written)
    {
        ArgumentNullException.ThrowIfNull(template);
        string? family = Detect(template);
        written = family is not null && Families.Contains(family);
        return family;
    }

    /// <summary>
    /// The chat template of <paramref name="model"/>, or of <paramref name="overrideTemplate"/> when given (a family name
    /// or a Jinja text). <see cref="ModelFormatException"/> naming the model when it has no template, or one whose family is
    /// not recognised or not written.
    /// </summary>
    public static ChatTemplate For(Model model, string? overrideTemplate = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        string? template = overrideTemplate ?? model.Vocabulary.ChatTemplate;
        if (template is null)
            throw new ModelFormatException(model.Source, "the model has no chat template (tokenizer_config.json chat_template, GGUF tokenizer.chat_template); name one of " + string.Join(", ", Families));
        string? family = DetectFamily(template, out bool written);
        if (family is null)
            throw new ModelFormatException(model.Source, $"its chat template is of no family Squeeze recognises (it starts \"{Excerpt(template)}\"); name one of {string.Join(", ", Families)}");
        if (!written)
            throw new ModelFormatException(model.Source, $"its chat template is llama.cpp's \"{family}\", which Squeeze does not write; name one of {string.Join(", ", Families)}");
        return new ChatTemplate(family);
    }

    /// <summary>The conversation as the model reads it, ending with the assistant's opening when
    /// <paramref name="addAssistant"/> (as llama.cpp's <c>add_ass</c>).</summary>
    public string Apply(IReadOnlyList<ChatMessage> messages, bool addAssistant = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var s = new StringBuilder();
        switch (Family)
        {
            case "chatml":
                foreach (var m in messages)
                    s.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
                if (addAssistant)
                    s.Append("<|im_start|>assistant\n");
                break;
            case "mistral-v7" or "mistral-v7-tekken":
                {
                    string space = Family == "mistral-v7" ? " " : "";
                    foreach (var m in messages)
                    {
                        if (m.Role == "system")
                            s.Append("[SYSTEM_PROMPT]").Append(space).Append(m.Content).Append("[/SYSTEM_PROMPT]");
                        else if (m.Role == "user")
                            s.Append("[INST]").Append(space).Append(m.Content).Append("[/INST]");
                        else
                            s.Append(space).Append(m.Content).Append("</s>");
                    }
                    break;
                }
            case "mistral-v1" or "mistral-v3" or "mistral-v3-tekken":
                {
                    string leading = Family == "mistral-v1" ? " " : "";
                    string trailing = Family == "mistral-v3-tekken" ? "" : " ";
                    bool inside = false;
                    foreach (var m in messages)
                    {
                        if (!inside)
                        {
                            s.Append(leading).Append("[INST]").Append(trailing);
                            inside = true;
                        }
                        if (m.Role == "system")
                        {
                            s.Append(m.Content).Append("\n\n");
                        }
                        else if (m.Role == "user")
                        {
                            s.Append(m.Content).Append(leading).Append("[/INST]");
                        }
                        else
                        {
                            s.Append(trailing).Append(Family == "mistral-v3" ? Trim(m.Content) : m.Content).Append("</s>");
                            inside = false;
                        }
                    }
                    break;
                }
            case "llama2" or "llama2-sys" or "llama2-sys-bos" or "llama2-sys-strip":
                {
                    bool system = Family != "llama2", bosInside = Family == "llama2-sys-bos", strip = Family == "llama2-sys-strip";
                    bool inside = true; // the first [INST] is written here; BOS comes from the tokenizer
                    s.Append("[INST] ");
                    foreach (var m in messages)
                    {
                        string content = strip ? Trim(m.Content) : m.Content;
                        if (!inside)
                        {
                            inside = true;
                            s.Append(bosInside ? "<s>[INST] " : "[INST] ");
                        }
                        if (m.Role == "system")
                        {
                            if (system)
                                s.Append("<<SYS>>\n").Append(content).Append("\n<</SYS>>\n\n");
                            else
                                s.Append(content).Append('\n');
                        }
                        else if (m.Role == "user")
                        {
                            s.Append(content).Append(" [/INST]");
                        }
                        else
                        {
                            s.Append(content).Append("</s>");
                            inside = false;
                        }
                    }
                    break;
                }
            case "phi3":
                foreach (var m in messages)
                    s.Append("<|").Append(m.Role).Append("|>\n").Append(m.Content).Append("<|end|>\n");
                if (addAssistant)
                    s.Append("<|assistant|>\n");
                break;
            case "phi4":
                foreach (var m in messages)
                    s.Append("<|im_start|>").Append(m.Role).Append("<|im_sep|>").Append(m.Content).Append("<|im_end|>");
                if (addAssistant)
                    s.Append("<|im_start|>assistant<|im_sep|>");
                break;
            case "zephyr":
                foreach (var m in messages)
                    s.Append("<|").Append(m.Role).Append("|>\n").Append(m.Content).Append("<|endoftext|>\n");
                if (addAssistant)
                    s.Append("<|assistant|>\n");
                break;
            case "gemma":
                {
                    string system = "";
                    foreach (var m in messages)
                    {
                        if (m.Role == "system")
                        {
                            system += Trim(m.Content); // Gemma has no system turn: it opens the next user turn
                            continue;
                        }
                        string role = m.Role == "assistant" ? "model" : m.Role;
                        s.Append("<start_of_turn>").Append(role).Append('\n');
                        if (system.Length > 0 && role != "model")
                        {
                            s.Append(system).Append("\n\n");
                            system = "";
                        }
                        s.Append(Trim(m.Content)).Append("<end_of_turn>\n");
                    }
                    if (addAssistant)
                        s.Append("<start_of_turn>model\n");
                    break;
                }
            case "llama3":
                foreach (var m in messages)
                    s.Append("<|start_header_id|>").Append(m.Role).Append("<|end_header_id|>\n\n").Append(Trim(m.Content)).Append("<|eot_id|>");
                if (addAssistant)
                    s.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                break;
            case "llama4":
                foreach (var m in messages)
                    s.Append("<|header_start|>").Append(m.Role).Append("<|header_end|>\n\n").Append(Trim(m.Content)).Append("<|eot|>");
                if (addAssistant)
                    s.Append("<|header_start|>assistant<|header_end|>\n\n");
                break;
            case "vicuna" or "vicuna-orca":
                foreach (var m in messages)
                {
                    if (m.Role == "system")
                        s.Append(Family == "vicuna-orca" ? "SYSTEM: " + m.Content + "\n" : m.Content + "\n\n");
                    else if (m.Role == "user")
                        s.Append("USER: ").Append(m.Content).Append('\n');
                    else if (m.Role == "assistant")
                        s.Append("ASSISTANT: ").Append(m.Content).Append("</s>\n");
                }
                if (addAssistant)
                    s.Append("ASSISTANT:");
                break;
            default:
                throw new InvalidOperationException($"family {Family} has no format");
        }
        return s.ToString();
    }

    /// <summary>The token ids of the conversation: <see cref="Apply"/>'s text with the special tokens in it recognised and
    /// BOS first when the vocabulary adds one, as llama.cpp's server tokenizes a chat prompt.</summary>
    public int[] Encode(Tokenizer tokenizer, IReadOnlyList<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return tokenizer.Encode(Apply(messages), tokenizer.Vocabulary.AddBos, parseSpecial: true);
    }

    // llm_chat_detect_template, in its order; the names of the families are llama.cpp's.
    private static string? Detect(string t)
    {
        if (Families.Contains(t) || Unwritten.Contains(t))
            return t;
        bool Has(string marker) => t.Contains(marker, StringComparison.Ordinal);
        if (Has("<|im_start|>"))
            return Has("<|im_sep|>") ? "phi4" : Has("<end_of_utterance>") ? "smolvlm" : "chatml";
        if (t.StartsWith("mistral", StringComparison.Ordinal) || Has("[INST]"))
        {
            if (Has("[SYSTEM_PROMPT]"))
                return "mistral-v7";
            if (Has("' [INST] ' + system_message") || Has("[AVAILABLE_TOOLS]"))
                return Has(" [INST]") ? "mistral-v1" : Has("\"[INST]\"") ? "mistral-v3-tekken" : "mistral-v3";
            return Has("content.strip()") ? "llama2-sys-strip"
                : Has("bos_token + '[INST]") ? "llama2-sys-bos"
                : Has("<<SYS>>") ? "llama2-sys"
                : "llama2";
        }
        if (Has("<|assistant|>") && Has("<|end|>"))
            return "phi3";
        if (Has("[gMASK]<sop>"))
            return "chatglm4";
        if (Has("<|assistant|>") && Has("<|user|>"))
            return Has("</s>") ? "falcon3" : "glmedge";
        if (Has("<|{{ item['role'] }}|>") && Has("<|begin_of_image|>"))
            return "glmedge";
        if (Has("<|user|>") && Has("<|endoftext|>"))
            return "zephyr";
        if (Has("bos_token + message['role']"))
            return "monarch";
        if (Has("<start_of_turn>"))
            return "gemma";
        if (Has("'\\n\\nAssistant: ' + eos_token"))
            return "orion";
        if (Has("GPT4 Correct "))
            return "openchat";
        if (Has("USER: ") && Has("ASSISTANT: "))
            return Has("SYSTEM: ") ? "vicuna-orca" : "vicuna";
        if (Has("### Instruction:") && Has("<|EOT|>"))
            return "deepseek";
        if (Has("<|START_OF_TURN_TOKEN|>") && Has("<|USER_TOKEN|>"))
            return "command-r";
        if (Has("<|start_header_id|>") && Has("<|end_header_id|>"))
            return "llama3";
        if (Has("[gMASK]sop"))
            return "chatglm3";
        if (Has("<用户>"))
            return "minicpm";
        if (Has("'Assistant: ' + message['content'] + eos_token"))
            return "deepseek2";
        if (Has("<｜Assistant｜>") && Has("<｜User｜>") && Has("<｜end▁of▁sentence｜>"))
            return "deepseek3";
        if (Has("[|system|]") && Has("[|assistant|]") && Has("[|endofturn|]"))
            return Has("[|tool|]") ? "exaone4" : "exaone3";
        if (Has("rwkv-world") || Has("{{- 'User: ' + message['content']|trim + '\\n\\n' -}}"))
            return "rwkv-world";
        if (Has("<|start_of_role|>"))
            return "granite";
        if (Has("message['role'] + additional_special_tokens[0] + message['content'] + additional_special_tokens[1]"))
            return "gigachat";
        if (Has("<|role_start|>"))
            return "megrez";
        if (Has(" Ассистент:"))
            return "yandex";
        if (Has("<role>ASSISTANT</role>") && Has("'HUMAN'"))
            return "bailing";
        if (Has("<|header_start|>") && Has("<|header_end|>"))
            return "llama4";
        if (Has("<|endofuserprompt|>"))
            return "dots1";
        if (Has("<|startoftext|>") && Has("<|extra_4|>"))
            return "hunyuan-moe";
        if (Has("<｜hy_place▁holder▁no▁2｜>") && Has("<｜hy_place▁holder▁no▁3｜>"))
            return "hunyuan-dense";
        if (Has("<|im_assistant|>assistant<|im_middle|>"))
            return "kimi-k2";
        return null;
    }

    // llama.cpp's trim: ASCII white space (isspace) at both ends.
    private static string Trim(string text) => text.Trim(' ', '\t', '\n', '\v', '\f', '\r');

    private static string Excerpt(string template)
    {
        string line = template.ReplaceLineEndings(" ");
        return line.Length <= 40 ? line : line[..40] + "…";
    }
}
