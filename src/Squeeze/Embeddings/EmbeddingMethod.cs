using System.Globalization;

namespace Squeeze.Embeddings;

/// <summary>Which compression an <see cref="EmbeddingStore"/> uses.</summary>
public enum EmbeddingMethodKind
{
    /// <summary>Each vector in int8 with one f32 scale.</summary>
    Int8,

    /// <summary>One bit per dimension (above or below the dimension's mean), optionally with int8 copies to re-score with.</summary>
    Binary,

    /// <summary>Product quantization: M sub-vectors, each an index into its own k-means codebook.</summary>
    ProductQuantization,

    /// <summary>The projection on the leading principal components, in f32 or int8.</summary>
    Pca,
}

/// <summary>
/// An embedding-store method, written <c>int8</c>, <c>binary</c>, <c>binary+int8</c>, <c>pq:M:BITS</c> or
/// <c>pca:DIM</c>, <c>pca:DIM+int8</c>.
/// </summary>
public sealed record EmbeddingMethod
{
    /// <summary>The method.</summary>
    public EmbeddingMethodKind Kind { get; init; }

    /// <summary><c>binary+int8</c>: int8 copies kept to re-score the bits' candidates; <c>pca:DIM+int8</c>: the
    /// projections in int8.</summary>
    public bool Int8 { get; init; }

    /// <summary>Product quantization's sub-vectors (M); it must divide the dimension.</summary>
    public int Subspaces { get; init; }

    /// <summary>Product quantization's bits per code (2^BITS centroids per sub-vector), 1 to 8.</summary>
    public int Bits { get; init; }

    /// <summary>PCA's kept components.</summary>
    public int Components { get; init; }

    /// <summary>What <c>--help</c> says.</summary>
    public const string Syntax = "int8 | binary | binary+int8 | pq:M:BITS | pca:DIM[+int8]";

    /// <summary>Parses a spec; <see cref="ArgumentException"/> naming what is wrong.</summary>
    public static EmbeddingMethod Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string s = spec.Trim().ToLowerInvariant();
        var parts = s.Split(':');
        int Number(string text, string what, int min, int max) =>
            int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= min && n <= max
                ? n
                : throw new ArgumentException($"embedding method '{spec}': {what} '{text}' is not an integer in [{min}, {max}]");
        return parts[0] switch
        {
            "int8" when parts.Length == 1 => new EmbeddingMethod { Kind = EmbeddingMethodKind.Int8 },
            "binary" when parts.Length == 1 => new EmbeddingMethod { Kind = EmbeddingMethodKind.Binary },
            "binary+int8" when parts.Length == 1 => new EmbeddingMethod { Kind = EmbeddingMethodKind.Binary, Int8 = true },
            "pq" when parts.Length == 3 => new EmbeddingMethod
            {
                Kind = EmbeddingMethodKind.ProductQuantization,
                Subspaces = Number(parts[1], "M", 1, 1 << 16),
                Bits = Number(parts[2], "BITS", 1, 8),
            },
            "pca" when parts.Length == 2 => new EmbeddingMethod
            {
                Kind = EmbeddingMethodKind.Pca,
                Int8 = parts[1].EndsWith("+int8", StringComparison.Ordinal),
                Components = Number(parts[1].Replace("+int8", "", StringComparison.Ordinal), "DIM", 1, 1 << 16),
            },
            _ => throw new ArgumentException($"embedding method '{spec}' is not one of {Syntax}"),
        };
    }

    /// <summary>The spec string.</summary>
    public override string ToString() => Kind switch
    {
        EmbeddingMethodKind.Int8 => "int8",
        EmbeddingMethodKind.Binary => Int8 ? "binary+int8" : "binary",
        EmbeddingMethodKind.ProductQuantization => string.Create(CultureInfo.InvariantCulture, $"pq:{Subspaces}:{Bits}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"pca:{Components}{(Int8 ? "+int8" : "")}"),
    };
}
