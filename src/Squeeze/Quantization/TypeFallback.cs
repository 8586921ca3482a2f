using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>A tensor type together with why it was chosen (empty when nothing needed explaining).</summary>
/// <param name="Type">The type to encode with.</param>
/// <param name="Reason">Why: the rule or fallback that picked it; empty for a plain choice.</param>
public readonly record struct TypeChoice(GgmlType Type, string Reason);

/// <summary>
/// llama.cpp's fallback when a row length is not a multiple of a type's block (llama_tensor_get_type):
/// Q2_K/Q3_K → IQ4_NL, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0; and F16 when even the 32-value block does not divide
/// the row. (llama.cpp refuses a 32-value type on such a row; Squeeze uses F16 there too and says so.)
/// </summary>
public static class TypeFallback
{
    /// <summary>The type to use for rows of <paramref name="columns"/> values when <paramref name="type"/> was wanted:
    /// <paramref name="type"/> itself when its block divides the row (empty reason), otherwise the fallback and a
    /// sentence saying why.</summary>
    public static TypeChoice Resolve(GgmlType type, long columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        int block = GgmlTypes.BlockSize(type);
        if (columns % block == 0)
            return new TypeChoice(type, "");
        GgmlType fallback = type switch
        {
            GgmlType.Q2_K or GgmlType.Q3_K => GgmlType.IQ4_NL,
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q5_K => GgmlType.Q5_1,
            GgmlType.Q6_K => GgmlType.Q8_0,
            _ => GgmlType.F16,
        };
        if (columns % GgmlTypes.BlockSize(fallback) != 0)
            fallback = GgmlType.F16;
        string note = GgmlTypes.BlockSize(type) == 32 && fallback == GgmlType.F16
            ? $"rows of {columns} are not a multiple of {block} ({type}); F16 instead (llama.cpp refuses this tensor)"
            : $"rows of {columns} are not a multiple of {block} ({type}); fallback {fallback}";
        return new TypeChoice(fallback, note);
    }
}
