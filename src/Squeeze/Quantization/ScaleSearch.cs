namespace Squeeze.Quantization;

/// <summary>How the k-quants (Q2_K … Q6_K) and IQ4_NL choose their scales; the legacy 32-value types (Q4_0 … Q8_0) have
/// one algorithm, llama.cpp's, either way.</summary>
public enum ScaleSearch
{
    /// <summary>llama.cpp's search, then coordinate descent on the block's scales and codes, kept only where it lowers
    /// the block's squared error (5 to 23 % less error than llama.cpp's on the 1.1B shape's rows; <c>bench
    /// quantize-speed</c>), at 0.9 (Q6_K) to 3.6 (Q3_K) times llama.cpp's time. The default.</summary>
    Refined,

    /// <summary>llama.cpp's search alone (<c>quantize_row_*_ref</c> without an importance row, its <c>_impl</c> with one):
    /// without importance, the bytes llama-quantize writes.</summary>
    LlamaCpp,
}

/// <summary>The names <c>convert --search</c> (and the benchmark harness) take for a <see cref="ScaleSearch"/>.</summary>
public static class ScaleSearchNames
{
    /// <summary><c>refined</c> or <c>llama.cpp</c> (any case).</summary>
    /// <exception cref="ArgumentException">Another name; the message lists the two.</exception>
    public static ScaleSearch Parse(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return name.ToLowerInvariant() switch
        {
            "refined" => ScaleSearch.Refined,
            "llama.cpp" => ScaleSearch.LlamaCpp,
            _ => throw new ArgumentException($"--search {name}: expected refined or llama.cpp", nameof(name)),
        };
    }
}
