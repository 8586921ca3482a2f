using System.Numerics.Tensors;

namespace Squeeze.Embeddings;

/// <summary><c>int8</c>: each vector as int8 codes with one f32 scale (its largest magnitude / 127, round to nearest);
/// the search scores every vector, the float query against the decoded codes (asymmetric, exhaustive).</summary>
internal sealed class Int8Store : EmbeddingStore
{
    private readonly sbyte[] codes;  // [count, dim]
    private readonly float[] scales; // [count]

    private Int8Store(int dim, int count, sbyte[] codes, float[] scales)
        : base(EmbeddingMethod.Parse("int8"), dim, count)
    {
        this.codes = codes;
        this.scales = scales;
    }

    public override double IndexBytesPerVector => Dim + sizeof(float);

    protected override long PayloadBytes => (long)Count * (Dim + sizeof(float));

    protected override long SharedBytes => 0;

    public static Int8Store Build(ReadOnlySpan<float> vectors, int dim)
    {
        int count = vectors.Length / dim;
        var codes = new sbyte[vectors.Length];
        var scales = new float[count];
        for (int i = 0; i < count; i++)
            scales[i] = Quantize(vectors.Slice(i * dim, dim), codes.AsSpan(i * dim, dim));
        return new Int8Store(dim, count, codes, scales);
    }

    public static Int8Store Read(BinaryReader reader, int dim, int count)
    {
        var scales = ReadFloats(reader, count);
        var codes = (sbyte[])(Array)ReadExactly(reader, (long)count * dim);
        return new Int8Store(dim, count, codes, scales);
    }

    protected override void WritePayload(BinaryWriter writer)
    {
        WriteFloats(writer, scales);
        writer.Write((byte[])(Array)codes);
    }

    /// <summary>Writes the payload (scales, codes): what a <c>binary+int8</c> store keeps beside its bits.</summary>
    public void WriteTo(BinaryWriter writer) => WritePayload(writer);

    protected override Neighbor[] SearchCore(ReadOnlySpan<float> query, int k)
    {
        var top = new TopK(k);
        for (int i = 0; i < Count; i++)
            top.Add(i, Dot(query, codes.AsSpan(i * Dim, Dim), scales[i]));
        return top.Sorted();
    }

    /// <summary>codes = round(row / scale) with scale = max |row| / 127; returns the scale.</summary>
    public static float Quantize(ReadOnlySpan<float> row, Span<sbyte> codes)
    {
        float max = MathF.Abs(TensorPrimitives.MaxMagnitude(row));
        float scale = max / 127;
        for (int d = 0; d < row.Length; d++)
            codes[d] = scale > 0 ? (sbyte)Math.Clamp(MathF.Round(row[d] / scale), -127, 127) : (sbyte)0;
        return scale;
    }

    /// <summary>scale · Σ query[d] · codes[d].</summary>
    public static float Dot(ReadOnlySpan<float> query, ReadOnlySpan<sbyte> codes, float scale)
    {
        float sum = 0;
        for (int d = 0; d < query.Length; d++)
            sum += query[d] * codes[d];
        return scale * sum;
    }

    /// <summary>The int8 copy of vector <paramref name="i"/> scored against <paramref name="query"/>.</summary>
    public float Score(ReadOnlySpan<float> query, int i) => Dot(query, codes.AsSpan(i * Dim, Dim), scales[i]);
}
