using System.Text.Json;
using Squeeze.Tensors;

namespace Squeeze.Formats.Native;

/// <summary>
/// Strict accessors over one scheme object: every key a scheme needs is read through here, a missing key, a key of the
/// wrong kind or out of range is an error naming the tensor and the key, and <see cref="EnsureAllRead"/> refuses keys
/// nobody read (a newer writer's key is never silently ignored).
/// </summary>
public sealed class NativeSchemeReader
{
    private readonly JsonElement root;
    private readonly string path, name;
    private readonly HashSet<string> read = new(StringComparer.Ordinal) { "scheme" };

    internal NativeSchemeReader(JsonElement root, string path, string name)
    {
        this.root = root;
        this.path = path;
        this.name = name;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("scheme", out var s) || s.ValueKind != JsonValueKind.String)
            throw Fail($"scheme {root.GetRawText()} is not a JSON object with a \"scheme\" string");
        Scheme = s.GetString()!;
    }

    /// <summary>The <c>"scheme"</c> string.</summary>
    public string Scheme { get; }

    /// <summary>The integer at <paramref name="key"/>; a <see cref="ModelFormatException"/> when it is missing or outside [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public int Int(string key, int min, int max) => checked((int)Long(key, min, max));

    /// <summary>The integer at <paramref name="key"/>; a <see cref="ModelFormatException"/> when it is missing or outside [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public long Long(string key, long min, long max)
    {
        var e = Get(key, JsonValueKind.Number);
        if (!e.TryGetInt64(out long value) || value < min || value > max)
            throw Fail($"\"{key}\" is {e.GetRawText()}; it must be an integer in {min}..{max}");
        return value;
    }

    /// <summary>The boolean at <paramref name="key"/>; a <see cref="ModelFormatException"/> when it is missing or not true/false.</summary>
    public bool Bool(string key)
    {
        if (!root.TryGetProperty(key, out var e))
            throw Fail($"\"{key}\" is missing");
        read.Add(key);
        return e.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Fail($"\"{key}\" is {e.GetRawText()}, not true or false"),
        };
    }

    /// <summary>The string at <paramref name="key"/>; a <see cref="ModelFormatException"/> when it is missing or, with <paramref name="allowed"/> values given, none of them.</summary>
    public string String(string key, params string[] allowed)
    {
        string value = Get(key, JsonValueKind.String).GetString()!;
        if (allowed.Length > 0 && !allowed.Contains(value))
            throw Fail($"\"{key}\" is \"{value}\"; allowed: {string.Join(", ", allowed.Select(a => $"\"{a}\""))}");
        return value;
    }

    /// <summary>A nested scheme object (for <see cref="NativeTensorSource.Read"/>).</summary>
    public JsonElement Object(string key) => Get(key, JsonValueKind.Object);

    /// <summary>An array of nested scheme objects.</summary>
    public IReadOnlyList<JsonElement> Objects(string key, int minCount, int maxCount)
    {
        var e = Get(key, JsonValueKind.Array);
        var items = e.EnumerateArray().ToList();
        if (items.Count < minCount || items.Count > maxCount)
            throw Fail($"\"{key}\" has {items.Count} entries; it must have {minCount}..{maxCount}");
        if (items.Any(i => i.ValueKind != JsonValueKind.Object))
            throw Fail($"\"{key}\" must hold only objects");
        return items;
    }

    /// <summary>The array of integers at <paramref name="key"/>; a <see cref="ModelFormatException"/> when it is missing or an entry is outside [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public IReadOnlyList<long> Longs(string key, long min, long max)
    {
        var e = Get(key, JsonValueKind.Array);
        var values = new List<long>();
        foreach (var item in e.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long v) || v < min || v > max)
                throw Fail($"\"{key}\" holds {item.GetRawText()}; entries must be integers in {min}..{max}");
            values.Add(v);
        }
        return values;
    }

    /// <summary>Throws for a key that no accessor read.</summary>
    public void EnsureAllRead()
    {
        foreach (var p in root.EnumerateObject())
        {
            if (!read.Contains(p.Name))
                throw Fail($"unknown key \"{p.Name}\" in scheme \"{Scheme}\"");
        }
    }

    /// <summary>An error about this scheme object.</summary>
    public ModelFormatException Fail(string problem) => new(path, $"tensor '{name}': {problem}");

    private JsonElement Get(string key, JsonValueKind kind)
    {
        if (!root.TryGetProperty(key, out var e))
            throw Fail($"\"{key}\" is missing from scheme \"{Scheme}\"");
        if (e.ValueKind != kind)
            throw Fail($"\"{key}\" is {e.GetRawText()}, not a JSON {kind.ToString().ToLowerInvariant()}");
        read.Add(key);
        return e;
    }
}
