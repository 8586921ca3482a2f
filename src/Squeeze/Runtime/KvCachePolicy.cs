using System.Globalization;
using System.Text;
using Squeeze.Models;

namespace Squeeze.Runtime;

/// <summary>How a <see cref="KvCache"/> stores keys and values.</summary>
public enum KvCacheKind
{
    /// <summary>Every position in f32 (exact; the default).</summary>
    Float32,

    /// <summary>Every position in f16.</summary>
    Float16,

    /// <summary>KIVI-style uniform quantization: keys per channel over groups of tokens, values per token, with exact
    /// attention sinks, a full-precision window of recent tokens, optional sparse outliers and low-rank residual.</summary>
    Quantized,

    /// <summary>A budget of positions in f32: the least-attended are evicted and merged into a neighbour.</summary>
    Evicting,
}

/// <summary>
/// A KV-cache policy, written as a spec string <c>NAME[:key=value]…</c>:
/// <list type="bullet">
/// <item><c>f32</c> (default, exact), <c>f16</c>.</item>
/// <item><c>q8</c>, <c>q4</c>, <c>q2</c>: uniform asymmetric quantization with that many bits. Keys are quantized per
/// channel over groups of <c>group</c> tokens (default 32), values per token over <c>vgroup</c> channels of a head
/// (default 32, a head split evenly); scales and minimums in f16. Options: <c>sinks=N</c> first positions kept in f32
/// (default 0); <c>window=N</c> most recent positions kept in f32 (default 0; a group is quantized once it is older than
/// the window, so between N and N + group − 1 positions are in f32); <c>outliers=F</c> the fraction F of each group's
/// values most extreme for their quantization group kept exactly in f16 beside their index (dense-and-sparse);
/// <c>lowrank=R</c> a rank-R approximation (f16 factors) of each group's quantization residual (GEAR); <c>fp=f16</c>
/// the sinks and the window kept in f16 rather than f32.</item>
/// <item><c>evict:keep=F</c>: at most round(F · context) positions in f32; when full, the position with the lowest mean
/// attention received (summed over the query heads of a key/value head) leaves, and with <c>merge=1</c> (default) its
/// value is averaged by attention mass into the neighbour with the more similar key, whose softmax weight grows by the
/// mass absorbed. <c>sinks=N</c> and <c>window=N</c> positions are never evicted nor merged into.</item>
/// </list>
/// Keys are quantized after RoPE (KVQuant's pre-RoPE keys are not implemented).
/// </summary>
public sealed record KvCachePolicy
{
    /// <summary>Which cache the policy builds: f32, f16, quantized or evicting.</summary>
    public KvCacheKind Kind { get; init; }

    /// <summary>Bits per quantized value: 8, 4 or 2.</summary>
    public int Bits { get; init; }

    /// <summary>First positions kept exact.</summary>
    public int Sinks { get; init; }

    /// <summary>Most recent positions kept exact.</summary>
    public int Window { get; init; }

    /// <summary>Tokens per key quantization group (and per block of outliers and low-rank factors).</summary>
    public int Group { get; init; } = 32;

    /// <summary>Largest number of channels of a head sharing one value scale (the head is split evenly).</summary>
    public int ValueGroup { get; init; } = 32;

    /// <summary>Fraction of the values kept exactly as sparse outliers.</summary>
    public double Outliers { get; init; }

    /// <summary>Rank of the residual approximation per group; 0 for none.</summary>
    public int LowRank { get; init; }

    /// <summary>Fraction of the context the evicting cache holds.</summary>
    public double Keep { get; init; }

    /// <summary>Quantized caches: the sinks and the window are kept in f16 instead of f32 (<c>fp=f16</c>).</summary>
    public bool HalfFullRows { get; init; }

    /// <summary>Whether an evicted position is merged into a neighbour (otherwise dropped).</summary>
    public bool Merge { get; init; } = true;

    /// <summary>The default, exact policy: every position's keys and values in f32.</summary>
    public static KvCachePolicy Float32 { get; } = new() { Kind = KvCacheKind.Float32 };

    /// <summary>The policies <c>squeeze eval --kv-sweep</c> and the <c>kv</c> bench suite measure, f32 first.</summary>
    public static IReadOnlyList<KvCachePolicy> Standard { get; } =
    [
        Float32,
        Parse("f16"),
        Parse("q8"),
        Parse("q4"),
        Parse("q4:sinks=4:window=32"),
        Parse("q4:sinks=4:window=32:fp=f16"),
        Parse("q2"),
        Parse("q2:sinks=4:window=32"),
        Parse("q2:sinks=4:window=32:fp=f16"),
        Parse("q2:sinks=4:window=32:outliers=0.01:fp=f16"),
        Parse("q2:sinks=4:window=32:lowrank=4:fp=f16"),
        Parse("q2:sinks=4:window=32:outliers=0.01:lowrank=4:fp=f16"),
        Parse("evict:keep=0.75:sinks=4:window=32"),
        Parse("evict:keep=0.5:sinks=4:window=32"),
        Parse("evict:keep=0.5:sinks=4:window=32:merge=0"),
    ];

    /// <summary>What <c>--help</c> says about the spec strings.</summary>
    public const string Syntax =
        "KV-cache policy: f32 (default), f16, q8|q4|q2[:sinks=N][:window=N][:group=N][:vgroup=N][:outliers=F][:lowrank=R][:fp=f16], " +
        "evict:keep=F[:sinks=N][:window=N][:merge=0|1]. qN: keys quantized per channel over groups of `group` tokens (32), " +
        "values per token over `vgroup` channels (32); the first `sinks` and the last `window` positions stay in f32 (f16 with fp=f16); " +
        "outliers=F keeps that fraction of values exactly; lowrank=R adds a rank-R residual per group. " +
        "evict keeps round(F x context) positions, dropping the least attended (never sinks or window) and merging it into a neighbour";

    /// <summary>Parses a spec string such as <c>q2:sinks=4:window=32</c>; throws <see cref="ArgumentException"/> naming what is wrong.</summary>
    public static KvCachePolicy Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var parts = spec.Trim().Split(':');
        var policy = parts[0].ToLowerInvariant() switch
        {
            "f32" => Float32,
            "f16" => new KvCachePolicy { Kind = KvCacheKind.Float16 },
            "q8" => new KvCachePolicy { Kind = KvCacheKind.Quantized, Bits = 8 },
            "q4" => new KvCachePolicy { Kind = KvCacheKind.Quantized, Bits = 4 },
            "q2" => new KvCachePolicy { Kind = KvCacheKind.Quantized, Bits = 2 },
            "evict" => new KvCachePolicy { Kind = KvCacheKind.Evicting },
            _ => throw new ArgumentException($"KV-cache policy '{spec}': unknown kind '{parts[0]}' (expected f32, f16, q8, q4, q2 or evict)"),
        };
        foreach (string part in parts.Skip(1))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
                throw new ArgumentException($"KV-cache policy '{spec}': '{part}' is not key=value");
            string key = part[..eq].ToLowerInvariant(), value = part[(eq + 1)..];
            bool allowed = (policy.Kind, key) switch
            {
                (KvCacheKind.Quantized, "sinks" or "window" or "group" or "vgroup" or "outliers" or "lowrank" or "fp") => true,
                (KvCacheKind.Evicting, "keep" or "sinks" or "window" or "merge") => true,
                _ => false,
            };
            if (!allowed)
                throw new ArgumentException($"KV-cache policy '{spec}': '{key}' does not apply to {parts[0]}");
            policy = key switch
            {
                "sinks" => policy with { Sinks = Integer(spec, key, value, 0) },
                "window" => policy with { Window = Integer(spec, key, value, 0) },
                "group" => policy with { Group = Integer(spec, key, value, 1) },
                "vgroup" => policy with { ValueGroup = Integer(spec, key, value, 1) },
                "lowrank" => policy with { LowRank = Integer(spec, key, value, 0) },
                "merge" => policy with { Merge = Integer(spec, key, value, 0) switch { 0 => false, 1 => true, _ => throw new ArgumentException($"KV-cache policy '{spec}': merge is 0 or 1") } },
                "fp" => policy with { HalfFullRows = value.ToLowerInvariant() switch { "f16" => true, "f32" => false, _ => throw new ArgumentException($"KV-cache policy '{spec}': fp is f32 or f16") } },
                "outliers" => policy with { Outliers = Fraction(spec, key, value, allowZero: true) },
                _ => policy with { Keep = Fraction(spec, key, value, allowZero: false) },
            };
        }
        if (policy.Kind == KvCacheKind.Evicting && policy.Keep == 0)
            throw new ArgumentException($"KV-cache policy '{spec}': evict needs keep=F, the fraction of the context to hold");
        if (policy.LowRank > policy.Group)
            throw new ArgumentException($"KV-cache policy '{spec}': lowrank {policy.LowRank} exceeds the group of {policy.Group} tokens");
        return policy;
    }

    private static int Integer(string spec, string key, string value, int min)
    {
        if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < min)
            throw new ArgumentException($"KV-cache policy '{spec}': {key}={value} is not an integer of at least {min}");
        return n;
    }

    private static double Fraction(string spec, string key, string value, bool allowZero)
    {
        if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) || f > 1 || f < 0 || (!allowZero && f == 0))
            throw new ArgumentException($"KV-cache policy '{spec}': {key}={value} is not a fraction in {(allowZero ? "[0, 1]" : "(0, 1]")}");
        return f;
    }

    /// <summary>The spec string: the kind, then the options that differ from their defaults.</summary>
    public override string ToString()
    {
        var s = new StringBuilder(Kind switch
        {
            KvCacheKind.Float32 => "f32",
            KvCacheKind.Float16 => "f16",
            KvCacheKind.Quantized => $"q{Bits}",
            _ => "evict",
        });
        if (Kind == KvCacheKind.Evicting)
            s.Append(CultureInfo.InvariantCulture, $":keep={Keep}");
        if (Sinks != 0)
            s.Append(CultureInfo.InvariantCulture, $":sinks={Sinks}");
        if (Window != 0)
            s.Append(CultureInfo.InvariantCulture, $":window={Window}");
        if (Group != 32)
            s.Append(CultureInfo.InvariantCulture, $":group={Group}");
        if (ValueGroup != 32)
            s.Append(CultureInfo.InvariantCulture, $":vgroup={ValueGroup}");
        if (Outliers != 0)
            s.Append(CultureInfo.InvariantCulture, $":outliers={Outliers}");
        if (LowRank != 0)
            s.Append(CultureInfo.InvariantCulture, $":lowrank={LowRank}");
        if (HalfFullRows)
            s.Append(":fp=f16");
        if (!Merge)
            s.Append(":merge=0");
        return s.ToString();
    }

    /// <summary>A cache of this policy for a model, holding up to <paramref name="contextLength"/> positions.</summary>
    public KvCache CreateCache(ModelConfig config, int contextLength) => Kind switch
    {
        KvCacheKind.Float32 => new Float32KvCache(config, contextLength),
        KvCacheKind.Float16 => new Float16KvCache(config, contextLength),
        KvCacheKind.Quantized => new QuantizedKvCache(config, contextLength, this),
        _ => new EvictingKvCache(config, contextLength, this),
    };
}
