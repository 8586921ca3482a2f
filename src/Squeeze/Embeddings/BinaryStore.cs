using System.Numerics;
using System.Numerics.Tensors;

namespace Squeeze.Embeddings;

/// <summary>
/// <c>binary</c>: one bit per dimension, set when the value is above the dimension's mean over the store (the means are
/// kept, one f32 per dimension for the whole store). The search ranks every vector by Hamming distance between its bits
/// and the query's, then re-scores the best <see cref="RescoreMultiplier"/> · k: with <c>binary</c> by the float query
/// (centred) against the ±1 code, with <c>binary+int8</c> by the float query against an int8 copy of the vector kept
/// beside the bits (read only for those candidates: <see cref="IndexBytesPerVector"/> counts the bits alone,
/// <see cref="EmbeddingStore.StoredBytesPerVector"/> the copies too).
/// </summary>
internal sealed class BinaryStore : EmbeddingStore
{
    private readonly float[] means;  // [dim]
    private readonly ulong[] bits;   // [count, words]
    private readonly Int8Store? copies;
    private readonly int words;

    private BinaryStore(EmbeddingMethod method, int dim, int count, float[] means, ulong[] bits, Int8Store? copies)
        : base(method, dim, count)
    {
        this.means = means;
        this.bits = bits;
        this.copies = copies;
        words = (dim + 63) / 64;
    }

    /// <summary>Candidates re-scored per result wanted.</summary>
    public const int RescoreMultiplier = 10;

    public override double IndexBytesPerVector => Dim / 8.0;

    protected override long PayloadBytes => (long)Count * ((Dim + 7) / 8 + (copies is null ? 0 : Dim + sizeof(float)));

    protected override long SharedBytes => sizeof(float) * (long)Dim;

    public static BinaryStore Build(ReadOnlySpan<float> vectors, int dim, EmbeddingMethod method)
    {
        int count = vectors.Length / dim, words = (dim + 63) / 64;
        var sums = new double[dim];
        for (int i = 0; i < count; i++)
        {
            for (int d = 0; d < dim; d++)
                sums[d] += vectors[i * dim + d];
        }
        var means = sums.Select(s => (float)(s / count)).ToArray();
        var bits = new ulong[count * words];
        for (int i = 0; i < count; i++)
            Pack(vectors.Slice(i * dim, dim), means, bits.AsSpan(i * words, words));
        return new BinaryStore(method, dim, count, means, bits, method.Int8 ? Int8Store.Build(vectors, dim) : null);
    }

    public static BinaryStore Read(BinaryReader reader, EmbeddingMethod method, int dim, int count)
    {
        var means = ReadFloats(reader, dim);
        int words = (dim + 63) / 64;
        var bits = new ulong[(long)count * words];
        Buffer.BlockCopy(ReadExactly(reader, 8L * bits.Length), 0, bits, 0, 8 * bits.Length);
        return new BinaryStore(method, dim, count, means, bits, method.Int8 ? Int8Store.Read(reader, dim, count) : null);
    }

    protected override void WritePayload(BinaryWriter writer)
    {
        WriteFloats(writer, means);
        foreach (ulong word in bits)
            writer.Write(word);
        if (copies is not null)
            copies.WriteTo(writer);
    }

    /// <summary>bit d of <paramref name="packed"/> = vector[d] &gt; means[d].</summary>
    private static void Pack(ReadOnlySpan<float> vector, float[] means, Span<ulong> packed)
    {
        packed.Clear();
        for (int d = 0; d < vector.Length; d++)
        {
            if (vector[d] > means[d])
                packed[d >> 6] |= 1UL << (d & 63);
        }
    }

    protected override Neighbor[] SearchCore(ReadOnlySpan<float> query, int k)
    {
        Span<ulong> q = stackalloc ulong[words];
        Pack(query, means, q);
        var candidates = new TopK(Math.Min(Count, RescoreMultiplier * k));
        for (int i = 0; i < Count; i++)
        {
            var row = bits.AsSpan(i * words, words);
            int distance = 0;
            for (int w = 0; w < words; w++)
                distance += BitOperations.PopCount(row[w] ^ q[w]);
            candidates.Add(i, -distance);
        }
        var centred = new float[Dim];
        TensorPrimitives.Subtract(query, means, centred);
        var top = new TopK(k);
        foreach (var candidate in candidates.Sorted())
            top.Add(candidate.Index, copies is null ? SignScore(centred, bits.AsSpan(candidate.Index * words, words)) : copies.Score(query, candidate.Index));
        return top.Sorted();
    }

    /// <summary>Σ centred[d] · (bit d ? +1 : −1).</summary>
    private static float SignScore(ReadOnlySpan<float> centred, ReadOnlySpan<ulong> row)
    {
        float sum = 0;
        for (int d = 0; d < centred.Length; d++)
            sum += (row[d >> 6] >> (d & 63) & 1) != 0 ? centred[d] : -centred[d];
        return sum;
    }
}
