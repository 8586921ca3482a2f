using Squeeze.Tensors;

namespace Squeeze.Quantization;

/// <summary>The type chosen for one tensor.</summary>
/// <param name="Name">llama.cpp's tensor name.</param>
/// <param name="Shape">Dimensions, outermost first.</param>
/// <param name="SourceType">The type the tensor has now.</param>
/// <param name="Type">The type to write.</param>
/// <param name="Quantized">False for tensors kept as they are (1-D norms and biases: F32).</param>
/// <param name="Reason">Which rule chose <see cref="Type"/> (mix default, a llama.cpp rule, an override, a fallback).</param>
public sealed record TensorPlan(string Name, long[] Shape, GgmlType SourceType, GgmlType Type, bool Quantized, string Reason)
{
    /// <summary>Values per row (the innermost dimension).</summary>
    public long Columns => Shape[^1];

    /// <summary>Bytes of the tensor's data in <see cref="Type"/>.</summary>
    public long ByteLength => GgmlTypes.RowBytes(Type, Columns) * (Shape.Aggregate(1L, (a, b) => a * b) / Columns);

    /// <inheritdoc/>
    public override string ToString() => $"{Name} [{string.Join(", ", Shape)}] {SourceType} -> {Type}{(Reason.Length > 0 ? " (" + Reason + ")" : "")}";
}

/// <summary>Per-tensor types for quantizing a model with a mix, in the model's tensor order.</summary>
/// <param name="Mix">The named mix.</param>
/// <param name="Pure">Every 2-D tensor got the mix's default type (llama-quantize <c>--pure</c>).</param>
/// <param name="Tensors">One entry per tensor, in the model's order.</param>
public sealed record QuantizationPlan(QuantizationMix Mix, bool Pure, IReadOnlyList<TensorPlan> Tensors)
{
    /// <summary>The entry of the tensor called <paramref name="name"/>.</summary>
    public TensorPlan this[string name] => Tensors.FirstOrDefault(t => t.Name == name) ?? throw new KeyNotFoundException($"no tensor '{name}' in the plan");

    /// <summary>Bytes of all tensor data in the planned types (without file padding).</summary>
    public long ByteLength => Tensors.Sum(t => t.ByteLength);

    /// <summary>How many tensors fell back to another type because their rows do not fit the wanted block.</summary>
    public int FallbackCount => Tensors.Count(t => t.Reason.Contains("fallback", StringComparison.Ordinal) || t.Reason.Contains("F16 instead", StringComparison.Ordinal));
}
