namespace Squeeze.Embeddings;

/// <summary>
/// <c>pq:M:BITS</c> (Jégou et al.): a vector is cut into M sub-vectors of dim/M values, each replaced by the index of
/// the nearest of 2^BITS centroids of its own codebook (k-means on the store's sub-vectors: k-means++ seeding from a
/// seeded generator, then Lloyd iterations on a sample of at most 64 points per centroid). The search is asymmetric:
/// per query, a table of the query's sub-vectors' inner products with every centroid, then each vector's score is the
/// sum of M table entries. The codes are stored bit-packed: ⌈M · BITS / 8⌉ bytes per vector, code m at bits
/// [m · BITS, (m + 1) · BITS), least significant bit first.
/// </summary>
internal sealed class ProductQuantizationStore : EmbeddingStore
{
    private const int Iterations = 12;
    private readonly int subspaces, centroids, width, bits, rowBytes;
    private readonly float[] codebooks; // [M, K, width]
    private readonly byte[] codes;      // [count, rowBytes] packed codes

    private ProductQuantizationStore(EmbeddingMethod method, int dim, int count, float[] codebooks, byte[] codes)
        : base(method, dim, count)
    {
        subspaces = method.Subspaces;
        centroids = 1 << method.Bits;
        width = dim / subspaces;
        bits = method.Bits;
        rowBytes = RowBytes(method);
        this.codebooks = codebooks;
        this.codes = codes;
    }

    private static int RowBytes(EmbeddingMethod method) => (method.Subspaces * method.Bits + 7) / 8;

    public override double IndexBytesPerVector => rowBytes;

    protected override long PayloadBytes => (long)Count * rowBytes;

    protected override long SharedBytes => sizeof(float) * (long)codebooks.Length;

    public static ProductQuantizationStore Fit(ReadOnlySpan<float> vectors, int dim, EmbeddingMethod method, int seed)
    {
        int m = method.Subspaces, k = 1 << method.Bits, count = vectors.Length / dim;
        if (dim % m != 0)
            throw new ArgumentException($"pq:{m}:{method.Bits}: {m} sub-vectors do not divide the dimension {dim}");
        int width = dim / m;
        var codebooks = new float[m * k * width];
        int rowBytes = RowBytes(method);
        var codes = new byte[(long)count * rowBytes];
        var random = new Random(seed);
        int sampleSize = Math.Min(count, 64 * k);
        var sample = Enumerable.Range(0, count).OrderBy(_ => random.Next()).Take(sampleSize).Order().ToArray();
        var points = new float[sampleSize * width];
        var assignment = new int[sampleSize];
        for (int s = 0; s < m; s++)
        {
            for (int i = 0; i < sampleSize; i++)
                vectors.Slice(sample[i] * dim + s * width, width).CopyTo(points.AsSpan(i * width));
            var book = codebooks.AsSpan(s * k * width, k * width);
            KMeans(points, width, k, random, book, assignment);
            for (int i = 0; i < count; i++)
                Put(codes.AsSpan(i * rowBytes, rowBytes), s, method.Bits, Nearest(vectors.Slice(i * dim + s * width, width), book, width, k));
        }
        return new ProductQuantizationStore(method, dim, count, codebooks, codes);
    }

    /// <summary>k-means++ seeding, then <see cref="Iterations"/> Lloyd steps; an emptied cluster takes the point farthest from its centroid.</summary>
    private static void KMeans(float[] points, int width, int k, Random random, Span<float> centres, int[] assignment)
    {
        int n = points.Length / width;
        var distance = new double[n];
        Array.Fill(distance, double.PositiveInfinity);
        int first = random.Next(n);
        points.AsSpan(first * width, width).CopyTo(centres);
        for (int c = 1; c < k; c++)
        {
            double total = 0;
            for (int i = 0; i < n; i++)
            {
                distance[i] = Math.Min(distance[i], Squared(points.AsSpan(i * width, width), centres.Slice((c - 1) * width, width)));
                total += distance[i];
            }
            int pick = n - 1;
            if (total > 0)
            {
                double target = random.NextDouble() * total;
                for (int i = 0; i < n; i++)
                {
                    target -= distance[i];
                    if (target < 0)
                    {
                        pick = i;
                        break;
                    }
                }
            }
            else
            {
                pick = random.Next(n);
            }
            points.AsSpan(pick * width, width).CopyTo(centres.Slice(c * width, width));
        }
        var sums = new double[k * width];
        var counts = new int[k];
        for (int iteration = 0; iteration < Iterations; iteration++)
        {
            Array.Clear(sums);
            Array.Clear(counts);
            int farthest = 0;
            double farthestDistance = -1;
            for (int i = 0; i < n; i++)
            {
                var point = points.AsSpan(i * width, width);
                int c = Nearest(point, centres, width, k);
                assignment[i] = c;
                counts[c]++;
                for (int d = 0; d < width; d++)
                    sums[c * width + d] += point[d];
                double e = Squared(point, centres.Slice(c * width, width));
                if (e > farthestDistance)
                    (farthest, farthestDistance) = (i, e);
            }
            for (int c = 0; c < k; c++)
            {
                if (counts[c] == 0)
                {
                    points.AsSpan(farthest * width, width).CopyTo(centres.Slice(c * width, width));
                    continue;
                }
                for (int d = 0; d < width; d++)
                    centres[c * width + d] = (float)(sums[c * width + d] / counts[c]);
            }
        }
    }

    /// <summary>Writes code <paramref name="m"/> of <paramref name="bits"/> bits into a packed row.</summary>
    private static void Put(Span<byte> row, int m, int bits, int code)
    {
        for (int b = 0; b < bits; b++)
        {
            int at = m * bits + b;
            if ((code >> b & 1) != 0)
                row[at >> 3] |= (byte)(1 << (at & 7));
        }
    }

    /// <summary>Code <paramref name="m"/> of a packed row.</summary>
    private static int Get(ReadOnlySpan<byte> row, int m, int bits)
    {
        int at = m * bits, code = 0;
        for (int b = 0; b < bits; b++, at++)
            code |= (row[at >> 3] >> (at & 7) & 1) << b;
        return code;
    }

    private static double Squared(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double sum = 0;
        for (int d = 0; d < a.Length; d++)
        {
            double e = a[d] - b[d];
            sum += e * e;
        }
        return sum;
    }

    /// <summary>The centre of <paramref name="centres"/> ([k, width]) nearest <paramref name="point"/> (the first of equals).</summary>
    private static int Nearest(ReadOnlySpan<float> point, ReadOnlySpan<float> centres, int width, int k)
    {
        int best = 0;
        float bestDistance = float.PositiveInfinity;
        for (int c = 0; c < k; c++)
        {
            float sum = 0;
            var centre = centres.Slice(c * width, width);
            for (int d = 0; d < width; d++)
            {
                float e = point[d] - centre[d];
                sum += e * e;
            }
            if (sum < bestDistance)
                (best, bestDistance) = (c, sum);
        }
        return best;
    }

    public static ProductQuantizationStore Read(BinaryReader reader, EmbeddingMethod method, int dim, int count)
    {
        if (dim % method.Subspaces != 0)
            throw new InvalidDataException($"{method}: {method.Subspaces} sub-vectors do not divide the dimension {dim}");
        var codebooks = ReadFloats(reader, (1 << method.Bits) * dim);
        var codes = ReadExactly(reader, (long)count * RowBytes(method));
        return new ProductQuantizationStore(method, dim, count, codebooks, codes);
    }

    protected override void WritePayload(BinaryWriter writer)
    {
        WriteFloats(writer, codebooks);
        writer.Write(codes);
    }

    protected override Neighbor[] SearchCore(ReadOnlySpan<float> query, int k)
    {
        var table = new float[subspaces * centroids]; // [M, K] query sub-vector · centroid
        for (int s = 0; s < subspaces; s++)
        {
            var part = query.Slice(s * width, width);
            for (int c = 0; c < centroids; c++)
                table[s * centroids + c] = System.Numerics.Tensors.TensorPrimitives.Dot(part, codebooks.AsSpan((s * centroids + c) * width, width));
        }
        var top = new TopK(k);
        for (int i = 0; i < Count; i++)
        {
            float score = 0;
            var row = codes.AsSpan(i * rowBytes, rowBytes);
            for (int s = 0; s < subspaces; s++)
                score += table[s * centroids + (bits == 8 ? row[s] : Get(row, s, bits))];
            top.Add(i, score);
        }
        return top.Sorted();
    }
}
