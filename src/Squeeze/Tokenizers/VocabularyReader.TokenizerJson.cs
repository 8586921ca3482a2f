using System.Text.Json;
using Squeeze.Tensors;

namespace Squeeze.Tokenizers;

public static partial class VocabularyReader
{
    /// <summary>Largest vocabulary accepted from JSON (real ones: up to ~260k).</summary>
    private const int MaxJsonVocabulary = 1 << 22;

    /// <summary>
    /// Parses a Hugging Face <c>tokenizer.json</c> holding a BPE model, and optionally its <c>tokenizer_config.json</c>.
    /// </summary>
    /// <remarks>
    /// Byte-level BPE (a ByteLevel pre-tokenizer or decoder) becomes <see cref="TokenizerKind.BytePairEncoding"/> with the
    /// merges in rank order and <see cref="Vocabulary.PreTokenizer"/> named from the Split regex ("gpt-2" when there is none).
    /// Llama-2-style BPE (byte_fallback, or a ▁ Replace/Prepend normalizer, or a Metaspace pre-tokenizer) becomes
    /// <see cref="TokenizerKind.SentencePiece"/>: a SentencePiece merge of the highest-scoring pair then equals a BPE merge of
    /// the lowest-ranked rule when each token's score is minus the rank of the first merge that produces it; tokens no merge
    /// produces score 0 (single characters, bytes, specials: never or always whole) or, when longer, below every merge.
    /// Added tokens are <see cref="TokenType.Control"/> when special, else <see cref="TokenType.UserDefined"/>.
    /// </remarks>
    internal static Vocabulary FromTokenizerJson(ReadOnlySpan<byte> json, ReadOnlySpan<byte> config, string name)
    {
        json = SkipUtf8Bom(json);
        config = SkipUtf8Bom(config);
        try
        {
            using JsonDocument document = JsonDocument.Parse(json.ToArray(), new JsonDocumentOptions { MaxDepth = 256 });
            using JsonDocument? configDocument = config.IsEmpty ? null : JsonDocument.Parse(config.ToArray());
            return FromTokenizerJson(document.RootElement, configDocument?.RootElement, name);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new ModelFormatException(name, "not a valid tokenizer.json: " + e.Message, e);
        }
    }

    private static ReadOnlySpan<byte> SkipUtf8Bom(ReadOnlySpan<byte> data)
        => data.StartsWith("\uFEFF"u8) ? data[3..] : data;

    private static Vocabulary FromTokenizerJson(JsonElement root, JsonElement? config, string name)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(name, "no \"model\" object");
        string? modelType = GetString(model, "type");
        if (modelType is not null and not "BPE")
            throw new ModelFormatException(name, $"model type \"{modelType}\" is not supported (only BPE)");
        if (!model.TryGetProperty("vocab", out JsonElement vocab) || vocab.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(name, "model has no \"vocab\" object");

        // Tokens by id: the model's vocabulary, then the added tokens (which may repeat or extend it).
        var byId = new Dictionary<int, string>();
        foreach (JsonProperty entry in vocab.EnumerateObject())
        {
            int id = entry.Value.GetInt32();
            if (id is < 0 or >= MaxJsonVocabulary)
                throw new ModelFormatException(name, $"token \"{entry.Name}\" has id {id} outside 0..{MaxJsonVocabulary - 1}");
            if (!byId.TryAdd(id, entry.Name))
                throw new ModelFormatException(name, $"id {id} is given to both \"{byId[id]}\" and \"{entry.Name}\"");
        }
        var added = new Dictionary<int, bool>(); // id -> special
        if (root.TryGetProperty("added_tokens", out JsonElement addedTokens) && addedTokens.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement token in addedTokens.EnumerateArray())
            {
                int id = token.GetProperty("id").GetInt32();
                string content = token.GetProperty("content").GetString() ?? throw new ModelFormatException(name, $"added token {id} has no content");
                if (id is < 0 or >= MaxJsonVocabulary)
                    throw new ModelFormatException(name, $"added token \"{content}\" has id {id} outside 0..{MaxJsonVocabulary - 1}");
                if (byId.TryGetValue(id, out string? existing) && existing != content)
                    throw new ModelFormatException(name, $"added token {id} \"{content}\" differs from the vocabulary's \"{existing}\"");
                byId[id] = content;
                added[id] = token.TryGetProperty("special", out JsonElement special) && special.ValueKind == JsonValueKind.True;
            }
        }
        if (byId.Count == 0)
            throw new ModelFormatException(name, "empty vocabulary");
        int count = byId.Keys.Max() + 1;
        var tokens = new string[count];
        var types = new TokenType[count];
        for (int id = 0; id < count; id++)
        {
            if (byId.TryGetValue(id, out string? piece))
            {
                tokens[id] = piece;
                types[id] = added.TryGetValue(id, out bool special) ? (special ? TokenType.Control : TokenType.UserDefined) : TokenType.Normal;
            }
            else
            {
                tokens[id] = Vocabulary.PaddingPiece(id); // a hole in the ids: never produced, as llama.cpp's converter names it
                types[id] = TokenType.Unused;
            }
        }
        var ids = new Dictionary<string, int>(count, StringComparer.Ordinal);
        for (int id = 0; id < count; id++)
            ids.TryAdd(tokens[id], id);

        var merges = new List<(string Left, string Right)>();
        if (model.TryGetProperty("merges", out JsonElement mergeArray) && mergeArray.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement merge in mergeArray.EnumerateArray())
            {
                if (merge.ValueKind == JsonValueKind.String)
                {
                    string rule = merge.GetString()!;
                    int space = rule.Length > 1 ? rule.IndexOf(' ', 1) : -1;
                    if (space < 0)
                        throw new ModelFormatException(name, $"merge {merges.Count} \"{rule}\" is not \"left right\"");
                    merges.Add((rule[..space], rule[(space + 1)..]));
                }
                else if (merge.ValueKind == JsonValueKind.Array && merge.GetArrayLength() == 2)
                {
                    merges.Add((merge[0].GetString() ?? "", merge[1].GetString() ?? ""));
                }
                else
                {
                    throw new ModelFormatException(name, $"merge {merges.Count} is neither \"left right\" nor [left, right]");
                }
            }
        }

        bool byteFallback = model.TryGetProperty("byte_fallback", out JsonElement fallback) && fallback.ValueKind == JsonValueKind.True;
        var normalizers = Components(root, "normalizer", "normalizers");
        var preTokenizers = Components(root, "pre_tokenizer", "pretokenizers");
        var decoders = Components(root, "decoder", "decoders");
        bool metaspace = preTokenizers.Any(p => GetString(p, "type") == "Metaspace");
        bool replacesSpace = normalizers.Any(n => GetString(n, "type") == "Replace" && GetString(n, "content") == "\u2581");
        bool byteLevel = preTokenizers.Concat(decoders).Any(p => GetString(p, "type") == "ByteLevel");

        int unknownId = GetString(model, "unk_token") is string unk && ids.TryGetValue(unk, out int u) ? u : -1;
        int bosId = SpecialId(config, "bos_token", ids);
        int eosId = SpecialId(config, "eos_token", ids);
        int padId = SpecialId(config, "pad_token", ids);
        int templateBos = TemplateFirstSpecial(root, ids);
        if (bosId < 0)
            bosId = templateBos;
        bool? addBosConfig = config is JsonElement c && c.TryGetProperty("add_bos_token", out JsonElement addBosElement)
            && addBosElement.ValueKind is JsonValueKind.True or JsonValueKind.False ? addBosElement.GetBoolean() : null;

        if (byteFallback || metaspace || replacesSpace)
        {
            // Llama-2-style: SentencePiece pieces with ▁ for spaces and <0xNN> byte tokens.
            bool prepend = normalizers.Any(n => GetString(n, "type") == "Prepend" && GetString(n, "prepend") == "\u2581")
                || preTokenizers.Any(p => GetString(p, "type") == "Metaspace"
                    && (GetString(p, "prepend_scheme") is "always" or "first"
                        || (p.TryGetProperty("add_prefix_space", out JsonElement aps) && aps.ValueKind == JsonValueKind.True)));
            var scores = new float[count];
            var scored = new bool[count];
            for (int rank = 0; rank < merges.Count; rank++)
            {
                if (ids.TryGetValue(merges[rank].Left + merges[rank].Right, out int result) && !scored[result])
                {
                    scores[result] = -rank;
                    scored[result] = true;
                }
            }
            for (int id = 0; id < count; id++)
            {
                if (types[id] == TokenType.Normal && TryParseByteToken(tokens[id], out _))
                    types[id] = TokenType.Byte;
                if (id == unknownId)
                    types[id] = TokenType.Unknown;
                bool singleCodePoint = tokens[id].Length == 1 || (tokens[id].Length == 2 && char.IsSurrogatePair(tokens[id], 0));
                if (!scored[id] && types[id] == TokenType.Normal && !singleCodePoint)
                    scores[id] = -merges.Count - id; // reachable by no merge: below all of them
            }
            if (bosId < 0 && ids.TryGetValue("<s>", out int s))
                bosId = s;
            if (eosId < 0 && ids.TryGetValue("</s>", out int e))
                eosId = e;
            return new Vocabulary
            {
                Kind = TokenizerKind.SentencePiece,
                Tokens = tokens,
                Scores = scores,
                Types = types,
                BosId = bosId,
                EosId = eosId,
                UnknownId = unknownId,
                PaddingId = padId,
                AddBos = addBosConfig ?? (templateBos >= 0 || bosId >= 0),
                AddSpacePrefix = prepend,
            };
        }

        if (!byteLevel)
            throw new ModelFormatException(name, "BPE model is neither byte-level (ByteLevel pre-tokenizer/decoder) nor SentencePiece-style (byte_fallback, Metaspace, ▁ normalizer)");
        if (preTokenizers.Any(p => GetString(p, "type") == "ByteLevel" && p.TryGetProperty("add_prefix_space", out JsonElement aps) && aps.ValueKind == JsonValueKind.True))
            throw new ModelFormatException(name, "ByteLevel add_prefix_space is not supported");
        string? pre = null;
        foreach (JsonElement p in preTokenizers)
        {
            if (GetString(p, "type") == "Split" && p.TryGetProperty("pattern", out JsonElement pattern) && GetString(pattern, "Regex") is string regex)
                pre = PreTokenizer.NameForPattern(regex) ?? throw new ModelFormatException(name, $"pre-tokenizer regex is not one of gpt-2, llama-bpe, qwen2: {regex}");
        }
        if (pre is null)
        {
            bool gpt2Regex = preTokenizers.Any(p => GetString(p, "type") == "ByteLevel"
                && !(p.TryGetProperty("use_regex", out JsonElement useRegex) && useRegex.ValueKind == JsonValueKind.False));
            pre = gpt2Regex ? "gpt-2" : throw new ModelFormatException(name, "byte-level BPE without a pre-tokenizer regex is not supported");
        }
        var rules = new string[merges.Count];
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (left.Length == 0 || right.Length == 0 || left.IndexOf(' ', 1) >= 0)
                throw new ModelFormatException(name, $"merge {rank} [\"{left}\", \"{right}\"] cannot be written as \"left right\"");
            rules[rank] = left + " " + right;
        }
        return new Vocabulary
        {
            Kind = TokenizerKind.BytePairEncoding,
            Tokens = tokens,
            Scores = new float[count],
            Types = types,
            Merges = rules,
            PreTokenizer = pre,
            BosId = bosId,
            EosId = eosId,
            UnknownId = unknownId,
            PaddingId = padId,
            AddBos = addBosConfig ?? templateBos >= 0,
            AddSpacePrefix = false,
        };
    }

    /// <summary>The component <paramref name="property"/> of the root, flattened through "Sequence" lists.</summary>
    private static List<JsonElement> Components(JsonElement root, string property, string listName)
    {
        var result = new List<JsonElement>();
        if (root.TryGetProperty(property, out JsonElement element))
            Flatten(element, listName, result, 0);
        return result;
    }

    private static void Flatten(JsonElement element, string listName, List<JsonElement> result, int depth)
    {
        if (element.ValueKind != JsonValueKind.Object || depth > 16)
            return;
        result.Add(element);
        if (element.TryGetProperty(listName, out JsonElement list) && list.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement item in list.EnumerateArray())
                Flatten(item, listName, result, depth + 1);
        }
    }

    private static string? GetString(JsonElement element, string property)
        => element.ValueKind == JsonValueKind.Object && element.TryGetProperty(property, out JsonElement value) && value.ValueKind == JsonValueKind.String
            ? value.GetString() : null;

    /// <summary>The id of tokenizer_config.json's <paramref name="property"/> ("&lt;s&gt;" or {"content": "&lt;s&gt;"}), or -1.</summary>
    private static int SpecialId(JsonElement? config, string property, Dictionary<string, int> ids)
    {
        if (config is not JsonElement c || c.ValueKind != JsonValueKind.Object || !c.TryGetProperty(property, out JsonElement value))
            return -1;
        string? text = value.ValueKind == JsonValueKind.String ? value.GetString() : GetString(value, "content");
        return text is not null && ids.TryGetValue(text, out int id) ? id : -1;
    }

    /// <summary>The special token a TemplateProcessing post-processor puts first in a single sequence (Llama 3's BOS), or -1.</summary>
    private static int TemplateFirstSpecial(JsonElement root, Dictionary<string, int> ids)
    {
        foreach (JsonElement processor in Components(root, "post_processor", "processors"))
        {
            if (GetString(processor, "type") != "TemplateProcessing" || !processor.TryGetProperty("single", out JsonElement single)
                || single.ValueKind != JsonValueKind.Array || single.GetArrayLength() == 0)
                continue;
            if (single[0].TryGetProperty("SpecialToken", out JsonElement special) && GetString(special, "id") is string text && ids.TryGetValue(text, out int id))
                return id;
        }
        return -1;
    }
}
