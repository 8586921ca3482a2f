using System.Numerics.Tensors;
using MathNet.Numerics.LinearAlgebra;

namespace Squeeze.Embeddings;

/// <summary>
/// <c>pca:DIM[+int8]</c>: the store's mean and its DIM leading principal directions (eigenvectors of the covariance,
/// largest eigenvalues first) are kept once; each vector as its DIM coordinates in f32 (or int8 with one f32 scale).
/// The search projects the query and scores q · mean + (P q) · y, exhaustively.
/// </summary>
internal sealed class PcaStore : EmbeddingStore
{
    private readonly int components;
    private readonly float[] mean;        // [dim]
    private readonly float[] directions;  // [components, dim]
    private readonly float[] coordinates; // [count, components] (f32 storage)
    private readonly Int8Store? quantized; // the coordinates in int8 (+int8 storage)

    private PcaStore(EmbeddingMethod method, int dim, int count, float[] mean, float[] directions, float[] coordinates, Int8Store? quantized)
        : base(method, dim, count)
    {
        components = method.Components;
        this.mean = mean;
        this.directions = directions;
        this.coordinates = coordinates;
        this.quantized = quantized;
    }

    public override double IndexBytesPerVector => Method.Int8 ? Method.Components + sizeof(float) : sizeof(float) * Method.Components;

    protected override long PayloadBytes => (long)Count * (long)IndexBytesPerVector;

    protected override long SharedBytes => sizeof(float) * (long)Dim * (1 + components);

    public static PcaStore Build(ReadOnlySpan<float> vectors, int dim, EmbeddingMethod method)
    {
        int c = method.Components, count = vectors.Length / dim;
        if (c > dim)
            throw new ArgumentException($"{method}: {c} components exceed the dimension {dim}");
        var mean = new float[dim];
        var sums = new double[dim];
        for (int i = 0; i < count; i++)
        {
            for (int d = 0; d < dim; d++)
                sums[d] += vectors[i * dim + d];
        }
        for (int d = 0; d < dim; d++)
            mean[d] = (float)(sums[d] / count);
        // columns of the centred data, [dim, count], so that each covariance entry is one long dot product
        var columns = new float[(long)dim * count];
        for (int i = 0; i < count; i++)
        {
            for (int d = 0; d < dim; d++)
                columns[(long)d * count + i] = vectors[i * dim + d] - mean[d];
        }
        var covariance = Matrix<double>.Build.Dense(dim, dim);
        for (int a = 0; a < dim; a++)
        {
            for (int b = a; b < dim; b++)
            {
                double v = TensorPrimitives.Dot(columns.AsSpan(a * count, count), columns.AsSpan(b * count, count)) / count;
                covariance[a, b] = v;
                covariance[b, a] = v;
            }
        }
        var evd = covariance.Evd(Symmetricity.Symmetric);
        var order = Enumerable.Range(0, dim).OrderByDescending(i => evd.EigenValues[i].Real).Take(c).ToArray();
        var directions = new float[c * dim];
        for (int j = 0; j < c; j++)
        {
            for (int d = 0; d < dim; d++)
                directions[j * dim + d] = (float)evd.EigenVectors[d, order[j]];
        }
        var coordinates = new float[(long)count * c];
        var centred = new float[dim];
        for (int i = 0; i < count; i++)
        {
            TensorPrimitives.Subtract(vectors.Slice(i * dim, dim), mean, centred);
            Project(directions, centred, coordinates.AsSpan(i * c, c));
        }
        return method.Int8
            ? new PcaStore(method, dim, count, mean, directions, [], Int8Store.Build(coordinates, c))
            : new PcaStore(method, dim, count, mean, directions, coordinates, null);
    }

    /// <summary>destination[j] = directions[j, :] · vector.</summary>
    private static void Project(float[] directions, ReadOnlySpan<float> vector, Span<float> destination)
    {
        for (int j = 0; j < destination.Length; j++)
            destination[j] = TensorPrimitives.Dot(directions.AsSpan(j * vector.Length, vector.Length), vector);
    }

    public static PcaStore Read(BinaryReader reader, EmbeddingMethod method, int dim, int count)
    {
        if (method.Components > dim)
            throw new InvalidDataException($"{method}: {method.Components} components exceed the dimension {dim}");
        var mean = ReadFloats(reader, dim);
        var directions = ReadFloats(reader, method.Components * dim);
        return method.Int8
            ? new PcaStore(method, dim, count, mean, directions, [], Int8Store.Read(reader, method.Components, count))
            : new PcaStore(method, dim, count, mean, directions, ReadFloats(reader, checked(count * method.Components)), null);
    }

    protected override void WritePayload(BinaryWriter writer)
    {
        WriteFloats(writer, mean);
        WriteFloats(writer, directions);
        if (quantized is not null)
            quantized.WriteTo(writer);
        else
            WriteFloats(writer, coordinates);
    }

    protected override Neighbor[] SearchCore(ReadOnlySpan<float> query, int k)
    {
        float offset = TensorPrimitives.Dot(query, mean);
        var projected = new float[components];
        Project(directions, query, projected);
        var top = new TopK(k);
        for (int i = 0; i < Count; i++)
            top.Add(i, offset + (quantized is null ? TensorPrimitives.Dot(projected, coordinates.AsSpan(i * components, components)) : quantized.Score(projected, i)));
        return top.Sorted();
    }
}
