using System.Globalization;
using Squeeze.Runtime;

namespace Squeeze.SavedCaches;

/// <summary>
/// How a saved cache stores keys and values, written as a spec string:
/// <list type="bullet">
/// <item>a <see cref="KvCachePolicy"/> of the runtime (<c>f32</c> lossless, <c>f16</c>, <c>q8</c>/<c>q4</c>/<c>q2</c> with
/// <c>sinks</c>, <c>window</c>, <c>group</c>, <c>vgroup</c>, <c>fp=f16</c>): its grids (KIVI: keys per channel over
/// groups of tokens, values per token), decided once over the saved positions, then range-coded;</item>
/// <item><c>step:S[:values=V][:sinks=N]</c>: CacheGen-style uniform steps with entropy coding. Each channel's keys get
/// one step, S times their standard deviation over the saved positions, and each channel's values one of V standard
/// deviations (default 4S: the next-token distributions are about as sensitive to keys at S as to values at 4S, on
/// stories15M); a value is stored as its rounded distance from
/// the channel's mean in steps (or, when that codes shorter for the channel, as the difference to the previous token's),
/// an integer the range coder codes with the channel's adaptive statistics. The first N positions (default 1: the BOS
/// token, whose keys and values are far from the rest) are kept in f16.</item>
/// <item><c>pre:S[:values=V][:sinks=N]</c>: keys before RoPE (rotated back on saving, forward again on loading), each
/// key channel's step set by the queries that read it so that it adds S to the attention scores' error, values in
/// steps of V standard deviations of their channel (default <see cref="PreValueRatio"/> · S); entropy-coded with
/// statistics shared by channels of similar spread (<c>PreRotaryCodec</c>); both steps scaled token by token by the
/// attention the last W prompt positions pay to the token (default <see cref="PreWindow"/>; 0: not scaled). The first N
/// positions (default 0: the BOS token is coded like the rest, usually with a fine step since it is attended) in f16.</item>
/// </list>
/// </summary>
public sealed record SavedCacheStorage
{
    private SavedCacheStorage(KvCachePolicy? policy, double step, double valueStep, int sinks, bool preRotary = false, int window = 0)
    {
        PreRotary = preRotary;
        Window = window;
        Policy = policy;
        Step = step;
        ValueStep = valueStep;
        Sinks = sinks;
    }

    /// <summary>The value step of <c>pre:S</c> when none is given: V = this · S.</summary>
    public const double PreValueRatio = 8;

    /// <summary>The last prompt positions whose queries' attention scales the <c>pre</c> storage's steps token by token
    /// when not 0 (by default <see cref="PreWindow"/>).</summary>
    public int Window { get; }

    /// <summary>The window of <c>pre:S</c> when none is given.</summary>
    public const int PreWindow = 8;

    /// <summary>The <c>pre</c> storage: keys before RoPE, steps from the channels' sensitivities.</summary>
    public bool PreRotary { get; }

    /// <summary>The runtime policy whose grids store the values; null for <c>step</c> and <c>pre</c>.</summary>
    public KvCachePolicy? Policy { get; }

    /// <summary>The <c>step</c> storage's key step in standard deviations of a channel; 0 for a policy.</summary>
    public double Step { get; }

    /// <summary>The <c>step</c> storage's value step in standard deviations of a channel; 0 for a policy.</summary>
    public double ValueStep { get; }

    /// <summary>The <c>step</c> storage's first positions kept in f16.</summary>
    public int Sinks { get; }

    /// <summary>Every value's f32 bits: the lossless storage.</summary>
    public static SavedCacheStorage Lossless { get; } = new(KvCachePolicy.Float32, 0, 0, 0);

    /// <summary>What <c>--help</c> says about the spec strings.</summary>
    public const string Syntax = "f32 (lossless), f16, q8|q4|q2[:sinks=N][:window=N][:group=N][:vgroup=N][:fp=f16] (the KV-cache policies' grids), " +
        "step:S[:values=V][:sinks=N] (one step per channel: S standard deviations for keys, V (4S) for values, entropy-coded; the first N positions, default 1, in f16), " +
        "or pre:S[:values=V][:sinks=N][:window=W] (keys before RoPE in steps of S of the attention scores, values in steps of V (8S) standard deviations, " +
        "both scaled token by token by the attention of the last W (8; 0: none) prompt positions; the first N, default 0, in f16); all range-coded";

    /// <summary>A storage that keeps values as <paramref name="policy"/>'s grids; <see cref="ArgumentException"/> for a policy a file cannot hold.</summary>
    public static SavedCacheStorage Of(KvCachePolicy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        if (policy.Kind == KvCacheKind.Evicting)
            throw new ArgumentException($"a saved cache cannot be stored as '{policy}': eviction depends on the queries that come later");
        if (policy.Outliers > 0 || policy.LowRank > 0)
            throw new ArgumentException($"a saved cache cannot be stored as '{policy}': outliers and low-rank residuals are not stored; use {Syntax}");
        return new SavedCacheStorage(policy, 0, 0, 0);
    }

    /// <summary>Parses a spec such as <c>q4:group=64</c> or <c>step:0.5</c>; <see cref="ArgumentException"/> naming what is wrong.</summary>
    public static SavedCacheStorage Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var parts = spec.Trim().Split(':');
        bool pre = parts[0].Equals("pre", StringComparison.OrdinalIgnoreCase);
        if (!pre && !parts[0].Equals("step", StringComparison.OrdinalIgnoreCase))
            return Of(KvCachePolicy.Parse(spec));
        if (parts.Length < 2 || !double.TryParse(parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double step) || !(step > 0) || step > 16)
            throw new ArgumentException($"saved-cache storage '{spec}': {parts[0].ToLowerInvariant()}:S needs a step S in (0, 16]");
        int sinks = pre ? 0 : 1, window = pre ? PreWindow : 0;
        double valueStep = (pre ? PreValueRatio : 4) * step;
        foreach (string part in parts.Skip(2))
        {
            int eq = part.IndexOf('=', StringComparison.Ordinal);
            string key = eq > 0 ? part[..eq].ToLowerInvariant() : part, value = eq > 0 ? part[(eq + 1)..] : "";
            bool ok = key switch
            {
                "sinks" => int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out sinks),
                "values" => double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out valueStep) && valueStep > 0 && valueStep <= 16,
                "window" => pre && int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out window),
                _ => false,
            };
            if (!ok)
                throw new ArgumentException($"saved-cache storage '{spec}': '{part}' is not sinks=N, values=V (a step in (0, 16]){(pre ? " or window=N" : "")}");
        }
        return new SavedCacheStorage(null, step, valueStep, sinks, pre, window);
    }

    /// <summary>The spec string: the step, then the options that differ from their defaults.</summary>
    public override string ToString()
    {
        if (Policy is not null)
            return Policy.ToString();
        string spec = string.Create(CultureInfo.InvariantCulture, $"{(PreRotary ? "pre" : "step")}:{Step}");
        if (ValueStep != (PreRotary ? PreValueRatio : 4) * Step)
            spec += string.Create(CultureInfo.InvariantCulture, $":values={ValueStep}");
        if (PreRotary && Window != PreWindow)
            spec += string.Create(CultureInfo.InvariantCulture, $":window={Window}");
        return Sinks == (PreRotary ? 0 : 1) ? spec : spec + string.Create(CultureInfo.InvariantCulture, $":sinks={Sinks}");
    }
}
