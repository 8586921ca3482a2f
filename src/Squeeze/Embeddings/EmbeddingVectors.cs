using System.Runtime.InteropServices;
using Squeeze.Tensors;

namespace Squeeze.Embeddings;

/// <summary>Raw embedding files: little-endian f32 values, vector after vector, no header (numpy's <c>tofile</c>).</summary>
public static class EmbeddingVectors
{
    /// <summary>Reads <paramref name="path"/> as <paramref name="dim"/>-dimensional f32 vectors, [count, dim] row-major.
    /// A file whose length is not a whole number of vectors (or that is empty) is a <see cref="ModelFormatException"/>
    /// naming it and the problem.</summary>
    public static float[] Read(string path, int dim)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        long length = new FileInfo(path).Length;
        long vectorBytes = 4L * dim;
        if (length == 0)
            throw new ModelFormatException(path, "empty: no vectors");
        if (length % vectorBytes != 0)
            throw new ModelFormatException(path, $"{length:N0} bytes are not a whole number of {dim}-dimensional f32 vectors ({vectorBytes} bytes each)");
        if (length / 4 > Array.MaxLength)
            throw new ModelFormatException(path, $"{length / vectorBytes:N0} vectors of {dim} values do not fit one array");
        var values = new float[length / 4];
        using var stream = File.OpenRead(path);
        stream.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    /// <summary>Writes <paramref name="values"/> (vector after vector) to <paramref name="path"/> through a temporary file.</summary>
    public static void Write(string path, ReadOnlySpan<float> values)
    {
        ArgumentNullException.ThrowIfNull(path);
        Formats.OutputPaths.RequireDirectory(path);
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
                stream.Write(MemoryMarshal.AsBytes(values));
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    /// <summary>The exact top <paramref name="k"/> of <paramref name="vectors"/> ([count, dim]) by inner product with
    /// <paramref name="query"/>, best first: the reference that recall is measured against.</summary>
    public static Neighbor[] ExactSearch(ReadOnlySpan<float> vectors, int dim, ReadOnlySpan<float> query, int k)
    {
        var top = new TopK(k);
        for (int i = 0; i < vectors.Length / dim; i++)
            top.Add(i, System.Numerics.Tensors.TensorPrimitives.Dot(query, vectors.Slice(i * dim, dim)));
        return top.Sorted();
    }

    /// <summary>Mean over the queries of |found ∩ exact| / k: recall@k of an approximate search (<paramref name="found"/>) against the exact one.</summary>
    public static double Recall(IReadOnlyList<Neighbor[]> found, IReadOnlyList<Neighbor[]> exact)
    {
        ArgumentNullException.ThrowIfNull(found);
        ArgumentNullException.ThrowIfNull(exact);
        if (found.Count != exact.Count || found.Count == 0)
            throw new ArgumentException($"{found.Count} results against {exact.Count} exact ones");
        double sum = 0;
        for (int q = 0; q < found.Count; q++)
        {
            var truth = exact[q].Select(n => n.Index).ToHashSet();
            sum += (double)found[q].Count(n => truth.Contains(n.Index)) / Math.Max(1, exact[q].Length);
        }
        return sum / found.Count;
    }
}

/// <summary>One search result: the vector's index in the store and its score (inner product with the query, as the
/// method estimates it).</summary>
/// <param name="Index">Position of the vector in the file it came from.</param>
/// <param name="Score">Estimated inner product with the query.</param>
public readonly record struct Neighbor(int Index, float Score);

/// <summary>The best k of a stream of scored indices (a min-heap on the score; ties keep the lower index).</summary>
internal sealed class TopK(int k)
{
    private readonly PriorityQueue<int, (float Score, int Negative)> heap = new(k + 1);

    public void Add(int index, float score)
    {
        if (k <= 0)
            return;
        var priority = (score, -index);
        if (heap.Count < k)
            heap.Enqueue(index, priority);
        else if (heap.TryPeek(out _, out var worst) && priority.CompareTo(worst) > 0)
            heap.EnqueueDequeue(index, priority);
    }

    /// <summary>The kept indices, best first.</summary>
    public Neighbor[] Sorted()
    {
        var result = new Neighbor[heap.Count];
        for (int i = result.Length - 1; i >= 0; i--)
        {
            heap.TryDequeue(out int index, out var priority);
            result[i] = new Neighbor(index, priority.Score);
        }
        return result;
    }
}
