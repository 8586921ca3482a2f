using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Spectre.Console;
using Squeeze.Embeddings;

namespace Squeeze.Cli.Commands;

/// <summary><c>squeeze embeddings compress|search</c>: compressed embedding stores and the search over them.</summary>
internal static class EmbeddingsCommand
{
    public sealed record CompressOptions(string Input, int Dim, string Method, string Output, int Seed, bool Json);

    public sealed record CompressReport(string Input, string Output, string Method, int Dim, int Vectors, double IndexBytesPerVector, double StoredBytesPerVector,
        double FloatBytesPerVector, long FileBytes, double Seconds);

    public sealed record SearchOptions(string Store, string Queries, int K, string? Exact, int Threads, bool Json);

    public sealed record SearchReport(string Store, string Method, int Queries, int K, double? Recall, double Seconds, IReadOnlyList<IReadOnlyList<Neighbor>> Results);

    public static Command Create()
    {
        var input = new Argument<string>("input") { Description = "Raw little-endian f32 vectors, one after another" };
        var dim = new Option<int>("--dim", "-d") { Description = "Values per vector", Required = true };
        var method = new Option<string>("--method", "-m") { Description = EmbeddingMethod.Syntax, DefaultValueFactory = _ => "int8" };
        var output = new Option<string>("--output", "-o") { Description = "The compressed store", Required = true };
        var seed = new Option<int>("--seed") { Description = "Seed of k-means and sampling", DefaultValueFactory = _ => 42 };
        var json = Cli.JsonOption();
        var compress = new Command("compress", "Compress f32 embedding vectors into a store") { input, dim, method, output, seed, json };
        compress.SetAction(r => Cli.Run(() => Compress(new CompressOptions(r.GetValue(input)!, r.GetValue(dim), r.GetValue(method)!, r.GetValue(output)!, r.GetValue(seed), r.GetValue(json)))));

        var store = new Argument<string>("store") { Description = "A store written by `squeeze embeddings compress`" };
        var queries = new Argument<string>("queries") { Description = "Raw f32 query vectors of the store's dimension" };
        var k = new Option<int>("-k") { Description = "Neighbours per query", DefaultValueFactory = _ => 10 };
        var exact = new Option<string?>("--exact") { Description = "The original f32 vectors: also report recall@k against exact float search" };
        var threads = Cli.ThreadsOption();
        var searchJson = Cli.JsonOption();
        var search = new Command("search", "Search a compressed store: the k best vectors (inner product) per query") { store, queries, k, exact, threads, searchJson };
        search.SetAction(r => Cli.Run(() => Search(new SearchOptions(r.GetValue(store)!, r.GetValue(queries)!, r.GetValue(k), r.GetValue(exact), r.GetValue(threads), r.GetValue(searchJson)))));

        return new Command("embeddings", "Compressed stores of embedding vectors (int8, binary, product quantization, PCA) and their search") { compress, search };
    }

    public static int Compress(CompressOptions options)
    {
        if (options.Dim < 1)
            throw new ArgumentException($"--dim {options.Dim} must be at least 1");
        var method = EmbeddingMethod.Parse(options.Method);
        Cli.CheckOutput(options.Input, options.Output);
        var clock = Stopwatch.StartNew();
        float[] vectors = EmbeddingVectors.Read(options.Input, options.Dim);
        var built = EmbeddingStore.Build(vectors, options.Dim, method, options.Seed);
        built.Save(options.Output);
        var report = new CompressReport(options.Input, options.Output, method.ToString(), options.Dim, built.Count, built.IndexBytesPerVector, built.StoredBytesPerVector,
            4.0 * options.Dim, new FileInfo(options.Output).Length, clock.Elapsed.TotalSeconds);
        if (options.Json)
            Cli.WriteJson(report);
        else
            Cli.Console.WriteLine($"{report.Vectors:N0} vectors of {report.Dim} as {report.Method}: {report.IndexBytesPerVector:0.##} bytes/vector searched " +
                $"({report.FloatBytesPerVector / report.IndexBytesPerVector:0.#}x fewer than f32), {report.StoredBytesPerVector:0.##} stored; {report.FileBytes:N0} bytes in {report.Output}");
        return 0;
    }

    public static int Search(SearchOptions options)
    {
        if (options.K < 1)
            throw new ArgumentException($"-k {options.K} must be at least 1");
        var store = EmbeddingStore.Load(options.Store);
        float[] queries = EmbeddingVectors.Read(options.Queries, store.Dim);
        float[]? originals = null;
        if (options.Exact is not null)
        {
            originals = EmbeddingVectors.Read(options.Exact, store.Dim);
            if (originals.Length / store.Dim != store.Count)
                throw new ArgumentException($"{options.Exact}: {originals.Length / store.Dim:N0} vectors; {options.Store} holds {store.Count:N0}");
        }
        var clock = Stopwatch.StartNew();
        var results = store.SearchAll(queries, options.K, options.Threads);
        double seconds = clock.Elapsed.TotalSeconds;
        double? recall = null;
        if (originals is not null)
        {
            var exact = Enumerable.Range(0, results.Length).Select(q => EmbeddingVectors.ExactSearch(originals, store.Dim, queries.AsSpan(q * store.Dim, store.Dim), options.K)).ToList();
            recall = EmbeddingVectors.Recall(results, exact);
        }
        var report = new SearchReport(options.Store, store.Method.ToString(), results.Length, options.K, recall, seconds, results);
        if (options.Json)
        {
            Cli.WriteJson(report);
            return 0;
        }
        for (int q = 0; q < results.Length; q++)
            System.Console.Out.WriteLine(string.Join('\t', results[q].Select(n => string.Create(CultureInfo.InvariantCulture, $"{n.Index}:{n.Score:0.####}")).Prepend(q.ToString(CultureInfo.InvariantCulture))));
        Cli.Status.WriteLine($"{results.Length:N0} queries of {store.Count:N0} {store.Method} vectors in {seconds:0.###} s" + (recall is double r ? $"; recall@{options.K} {r:0.0000} against exact float search" : ""));
        return 0;
    }
}
