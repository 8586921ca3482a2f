using System.Globalization;
using System.Text.Json;
using Squeeze.Generation;

namespace Squeeze.Server;

/// <summary>A request the server refuses: the HTTP status and a one-line message for the OpenAI error body.</summary>
internal sealed class RequestException(int status, string message) : Exception(message)
{
    /// <summary>The HTTP status to answer with (4xx).</summary>
    public int Status { get; } = status;
}

/// <summary>
/// A <c>/v1/completions</c> or <c>/v1/chat/completions</c> body, read strictly: every field the OpenAI API defines is
/// either honoured or refused by name when it asks for what the server does not do (n &gt; 1, log-probabilities, tools);
/// a field the API does not define, a value of the wrong type or out of the API's range is a 400 naming it.
/// </summary>
internal sealed record OpenAiRequest
{
    // Fields accepted and ignored: they change nothing in a single local model's answer.
    private static readonly HashSet<string> Ignored = new(StringComparer.Ordinal)
    {
        "user", "store", "metadata", "service_tier", "parallel_tool_calls", "safety_identifier", "prompt_cache_key",
    };

    private static readonly HashSet<string> Common = new(StringComparer.Ordinal)
    {
        "model", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream", "stream_options", "presence_penalty",
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    };

    private static readonly HashSet<string> CompletionOnly = new(StringComparer.Ordinal) { "prompt", "echo", "best_of", "suffix" };

    private static readonly HashSet<string> ChatOnly = new(StringComparer.Ordinal)
    {
        "messages", "max_completion_tokens", "response_format", "tools", "tool_choice", "functions", "function_call", "modalities", "audio",
        "reasoning_effort", "prediction", "web_search_options",
    };

    /// <summary>The model name the client asked for, or null.</summary>
    public string? Model { get; init; }

    /// <summary>A completion's prompt text, or null for a chat or a prompt of token ids.</summary>
    public string? Prompt { get; init; }

    /// <summary>A completion's prompt as token ids, or null.</summary>
    public int[]? PromptTokens { get; init; }

    /// <summary>A chat's messages, or null for a completion.</summary>
    public IReadOnlyList<ChatMessage>? Messages { get; init; }

    /// <summary>Tokens to generate at most; null for the server's limit.</summary>
    public int? MaxTokens { get; init; }

    /// <summary>How to sample.</summary>
    public required SamplingParameters Sampling { get; init; }

    /// <summary>Texts that end the answer (not included in it).</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Whether to answer with server-sent events.</summary>
    public bool Stream { get; init; }

    /// <summary>Whether a stream ends with a chunk carrying the token counts.</summary>
    public bool IncludeUsage { get; init; }

    /// <summary>Reads a body; <paramref name="chat"/> for <c>/v1/chat/completions</c>. <paramref name="vocabularySize"/>
    /// bounds logit_bias's and the prompt's token ids.</summary>
    /// <exception cref="RequestException">What is wrong with the body, in one line.</exception>
    public static OpenAiRequest Parse(ReadOnlyMemory<byte> body, bool chat, int vocabularySize)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw Bad("the body is not valid JSON: " + OneLine(e.Message));
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Bad("the body must be a JSON object");
            var fields = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                string name = property.Name;
                if (!Common.Contains(name) && !Ignored.Contains(name) && !(chat ? ChatOnly : CompletionOnly).Contains(name))
                    throw Bad($"unknown field '{name}'");
                if (!fields.TryAdd(name, property.Value))
                    throw Bad($"field '{name}' is given twice");
            }
            JsonElement? Get(string name) => fields.TryGetValue(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

            foreach (string refused in new[] { "tools", "functions", "audio", "prediction", "web_search_options" })
            {
                if (Get(refused) is not null)
                    throw Bad($"'{refused}' is not supported by this server");
            }
            if (Get("tool_choice") is { } toolChoice && !(toolChoice.ValueKind == JsonValueKind.String && toolChoice.GetString() == "none"))
                throw Bad("'tool_choice' is not supported by this server (only \"none\")");
            if (Get("function_call") is { } functionCall && !(functionCall.ValueKind == JsonValueKind.String && functionCall.GetString() == "none"))
                throw Bad("'function_call' is not supported by this server (only \"none\")");
            if (Get("response_format") is { } format && !(format.ValueKind == JsonValueKind.Object && format.TryGetProperty("type", out var type)
                && type.ValueKind == JsonValueKind.String && type.GetString() == "text" && format.EnumerateObject().Count() == 1))
                throw Bad("'response_format' must be {\"type\": \"text\"}: JSON output is not supported by this server");
            if (Get("modalities") is { } modalities && !(modalities.ValueKind == JsonValueKind.Array && modalities.EnumerateArray().All(m => m.ValueKind == JsonValueKind.String && m.GetString() == "text")))
                throw Bad("'modalities' must be [\"text\"]");
            if (Get("reasoning_effort") is { } effort && effort.ValueKind != JsonValueKind.String)
                throw Bad("'reasoning_effort' must be a string");
            if (Get("n") is { } n && Integer(n, "n", 1, 128) != 1)
                throw Bad("'n' must be 1: this server returns one choice");
            if (Get("best_of") is { } bestOf && Integer(bestOf, "best_of", 1, 128) != 1)
                throw Bad("'best_of' must be 1");
            if (Get("echo") is { } echo && Boolean(echo, "echo"))
                throw Bad("'echo' is not supported by this server");
            if (Get("suffix") is { } suffix && (suffix.ValueKind != JsonValueKind.String || suffix.GetString()!.Length > 0))
                throw Bad("'suffix' is not supported by this server");
            if (Get("logprobs") is { } logprobs && (logprobs.ValueKind is JsonValueKind.True || (logprobs.ValueKind == JsonValueKind.Number && Integer(logprobs, "logprobs", 0, 20) > 0)))
                throw Bad("'logprobs' is not supported by this server");
            else if (Get("logprobs") is { } lp && lp.ValueKind is not (JsonValueKind.False or JsonValueKind.Number))
                throw Bad("'logprobs' must be a boolean or a number");
            if (Get("top_logprobs") is { } topLogprobs && Integer(topLogprobs, "top_logprobs", 0, 20) > 0)
                throw Bad("'top_logprobs' is not supported by this server");

            string? model = null;
            if (Get("model") is { } m)
                model = m.ValueKind == JsonValueKind.String ? m.GetString() : throw Bad("'model' must be a string");

            string? prompt = null;
            int[]? promptTokens = null;
            List<ChatMessage>? messages = null;
            if (chat)
            {
                var list = Get("messages") ?? throw Bad("'messages' is required");
                messages = ReadMessages(list);
            }
            else
            {
                var p = Get("prompt") ?? throw Bad("'prompt' is required");
                (prompt, promptTokens) = ReadPrompt(p, vocabularySize);
            }

            int? maxTokens = null;
            foreach (string key in chat ? new[] { "max_completion_tokens", "max_tokens" } : ["max_tokens"])
            {
                if (Get(key) is { } value)
                    maxTokens ??= Integer(value, key, 1, int.MaxValue);
            }
            float temperature = Get("temperature") is { } t ? Number(t, "temperature", 0, 2) : 1f;
            float topP = Get("top_p") is { } tp ? Number(tp, "top_p", 0, 1) : 1f;
            if (topP == 0)
                throw Bad("'top_p' must be above 0");
            int seed = Get("seed") is { } s ? Integer(s, "seed", int.MinValue, int.MaxValue) : Random.Shared.Next();
            float presence = Get("presence_penalty") is { } pp ? Number(pp, "presence_penalty", -2, 2) : 0f;
            float frequency = Get("frequency_penalty") is { } fp ? Number(fp, "frequency_penalty", -2, 2) : 0f;
            var bias = new Dictionary<int, float>();
            if (Get("logit_bias") is { } lb)
            {
                if (lb.ValueKind != JsonValueKind.Object)
                    throw Bad("'logit_bias' must be an object of token ids to numbers");
                foreach (var entry in lb.EnumerateObject())
                {
                    if (!int.TryParse(entry.Name, NumberStyles.None, CultureInfo.InvariantCulture, out int id) || id >= vocabularySize)
                        throw Bad($"'logit_bias' key '{Clip(entry.Name)}' is not a token id below {vocabularySize}");
                    bias[id] = Number(entry.Value, "logit_bias", -100, 100);
                }
            }
            var stop = new List<string>();
            if (Get("stop") is { } st)
            {
                if (st.ValueKind == JsonValueKind.String)
                    stop.Add(st.GetString()!);
                else if (st.ValueKind == JsonValueKind.Array && st.GetArrayLength() <= 4 && st.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String))
                    stop.AddRange(st.EnumerateArray().Select(x => x.GetString()!));
                else
                    throw Bad("'stop' must be a string or an array of at most 4 strings");
                if (stop.Any(x => x.Length == 0 || x.Length > 256))
                    throw Bad("each 'stop' text must have 1 to 256 characters");
            }
            bool stream = Get("stream") is { } sm && Boolean(sm, "stream");
            bool includeUsage = false;
            if (Get("stream_options") is { } so)
            {
                if (so.ValueKind != JsonValueKind.Object)
                    throw Bad("'stream_options' must be an object");
                foreach (var option in so.EnumerateObject())
                {
                    if (option.Name == "include_usage")
                        includeUsage = option.Value.ValueKind != JsonValueKind.Null && Boolean(option.Value, "stream_options.include_usage");
                    else if (option.Name != "include_obfuscation")
                        throw Bad($"unknown field 'stream_options.{Clip(option.Name)}'");
                }
            }
            return new OpenAiRequest
            {
                Model = model,
                Prompt = prompt,
                PromptTokens = promptTokens,
                Messages = messages,
                MaxTokens = maxTokens,
                Sampling = new SamplingParameters
                {
                    Sampler = new SamplingOptions { Temperature = temperature, TopP = topP, Seed = seed },
                    PresencePenalty = presence,
                    FrequencyPenalty = frequency,
                    LogitBias = bias,
                },
                Stop = stop,
                Stream = stream,
                IncludeUsage = includeUsage,
            };
        }
    }

    private static List<ChatMessage> ReadMessages(JsonElement list)
    {
        if (list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0)
            throw Bad("'messages' must be a non-empty array");
        var messages = new List<ChatMessage>();
        foreach (var message in list.EnumerateArray())
        {
            int i = messages.Count;
            if (message.ValueKind != JsonValueKind.Object)
                throw Bad($"messages[{i}] must be an object");
            string? role = null;
            string? content = null;
            foreach (var field in message.EnumerateObject())
            {
                switch (field.Name)
                {
                    case "role":
                        role = field.Value.ValueKind == JsonValueKind.String ? field.Value.GetString() : throw Bad($"messages[{i}].role must be a string");
                        break;
                    case "content":
                        content = Content(field.Value, i);
                        break;
                    case "name":
                        break;
                    case "refusal" or "tool_calls" or "function_call" or "audio" when field.Value.ValueKind == JsonValueKind.Null:
                        break;
                    default:
                        throw Bad($"unknown field 'messages[{i}].{Clip(field.Name)}'");
                }
            }
            role = role switch
            {
                null => throw Bad($"messages[{i}].role is required"),
                "developer" => "system",
                "system" or "user" or "assistant" => role,
                _ => throw Bad($"messages[{i}].role '{Clip(role)}' is not system, developer, user or assistant"),
            };
            if (content is null && role != "assistant")
                throw Bad($"messages[{i}].content is required");
            messages.Add(new ChatMessage(role, content ?? ""));
        }
        return messages;
    }

    private static string? Content(JsonElement content, int i)
    {
        if (content.ValueKind == JsonValueKind.Null)
            return null;
        if (content.ValueKind == JsonValueKind.String)
            return content.GetString();
        if (content.ValueKind != JsonValueKind.Array)
            throw Bad($"messages[{i}].content must be a string or an array of text parts");
        var text = new System.Text.StringBuilder();
        foreach (var part in content.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                throw Bad($"messages[{i}].content parts must be objects with a 'type'");
            if (type.GetString() != "text" || !part.TryGetProperty("text", out var value) || value.ValueKind != JsonValueKind.String)
                throw Bad($"messages[{i}].content part of type '{Clip(type.GetString()!)}' is not supported (only text)");
            text.Append(value.GetString());
        }
        return text.ToString();
    }

    private static (string?, int[]?) ReadPrompt(JsonElement prompt, int vocabularySize)
    {
        if (prompt.ValueKind == JsonValueKind.String)
            return (prompt.GetString(), null);
        if (prompt.ValueKind == JsonValueKind.Array)
        {
            var items = prompt.EnumerateArray().ToList();
            if (items.Count == 1 && items[0].ValueKind == JsonValueKind.String)
                return (items[0].GetString(), null);
            if (items.Count > 0 && items.All(x => x.ValueKind == JsonValueKind.Number))
                return (null, [.. items.Select(x => Integer(x, "prompt", 0, vocabularySize - 1))]);
            if (items.Count > 1 && items.All(x => x.ValueKind is JsonValueKind.String or JsonValueKind.Array))
                throw Bad("'prompt' must be one prompt: this server answers one per request");
        }
        throw Bad("'prompt' must be a string or an array of token ids");
    }

    private static int Integer(JsonElement value, string name, int min, int max)
    {
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out long v))
            throw Bad($"'{name}' must be an integer");
        if (v < min || v > max)
            throw Bad($"'{name}' {v} is outside {min}..{max}");
        return (int)v;
    }

    private static float Number(JsonElement value, string name, double min, double max)
    {
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double v) || !double.IsFinite(v))
            throw Bad($"'{name}' must be a number");
        if (v < min || v > max)
            throw Bad($"'{name}' {v.ToString(CultureInfo.InvariantCulture)} is outside {min.ToString(CultureInfo.InvariantCulture)}..{max.ToString(CultureInfo.InvariantCulture)}");
        return (float)v;
    }

    private static bool Boolean(JsonElement value, string name)
        => value.ValueKind is JsonValueKind.True or JsonValueKind.False ? value.GetBoolean() : throw Bad($"'{name}' must be true or false");

    private static RequestException Bad(string message) => new(400, message);

    private static string Clip(string text) => OneLine(text.Length <= 40 ? text : text[..40] + "…");

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
