using System.Text.RegularExpressions;
using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>A per-tensor type override (llama-quantize's <c>--tensor-type REGEX=TYPE</c>): every quantizable tensor
/// whose name the regular expression matches (anywhere in the name) gets <see cref="Type"/>. The first matching
/// override wins.</summary>
public sealed record TensorTypeOverride
{
    /// <summary>Creates an override; the pattern is compiled now, so a bad pattern fails here.</summary>
    /// <exception cref="ArgumentException">The pattern is empty or not a valid regular expression.</exception>
    public TensorTypeOverride(string pattern, GgmlType type)
    {
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        try
        {
            Regex = new Regex(pattern, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"--tensor-type pattern '{pattern}' is not a valid regular expression: {e.Message}", nameof(pattern), e);
        }
        Pattern = pattern;
        Type = type;
    }

    /// <summary>The regular expression as given.</summary>
    public string Pattern { get; }

    /// <summary>The type matching tensors get.</summary>
    public GgmlType Type { get; }

    /// <summary>The compiled pattern.</summary>
    public Regex Regex { get; }

    /// <summary>Parses <c>REGEX=TYPE</c> (the last '=' splits; TYPE as ggml spells it, case-insensitive).</summary>
    /// <exception cref="ArgumentException">No '=', an unknown type, or a bad pattern.</exception>
    public static TensorTypeOverride Parse(string text)
    {
        ArgumentException.ThrowIfNullOrEmpty(text);
        int eq = text.LastIndexOf('=');
        if (eq <= 0 || eq == text.Length - 1)
            throw new ArgumentException($"--tensor-type '{text}' is not REGEX=TYPE", nameof(text));
        string typeName = text[(eq + 1)..];
        if (!GgmlTypes.TryParse(typeName, out var type) || !Quantize.IsSupported(type))
            throw new ArgumentException($"--tensor-type '{text}': '{typeName}' is not a type Squeeze can write", nameof(text));
        return new TensorTypeOverride(text[..eq], type);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Pattern}={Type}";
}
