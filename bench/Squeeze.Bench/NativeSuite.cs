using System.Diagnostics;
using System.Globalization;
using System.Text;
using Squeeze.Allocation;
using Squeeze.Compression.Representations;
using Squeeze.Charts;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;
using Squeeze.Generation;
using Squeeze.Runtime;

namespace Squeeze.Bench;

/// <summary>
/// The native format's rate–distortion on stories15M: every 2-D tensor encoded once in every native representation
/// (GPTQ, calibration on tinystories-calib), then (a) each representation alone on every tensor it fits (f16
/// elsewhere) and (b) the knapsack over all of them at bits-per-weight budgets from 2.0 to 6.0 and at the
/// size of llama.cpp's Q4_0-with-imatrix file; every allocated directory written once to check its size; all scored on
/// tinystories-eval (ctx 256) against the f32 model, beside llama.cpp's points and Squeeze's GGUF allocation
/// (docs/charts/allocation-rate-distortion.csv); with vector-quantization levels among others, the knapsack also without
/// them. Writes native-rate-distortion.png/.csv to <c>--out</c> (default
/// docs/charts) and five sampled stories from the smallest budget. Options: <c>--representations A,B</c> (default
/// <see cref="NativeRepresentation.Defaults"/>), <c>--bpw a,b</c>, <c>--tokens N</c>, <c>--refine N</c>,
/// <c>--chunks N</c> (eval chunks, default all), <c>--swap-chunks N</c> (calibration chunks of the single-swap KLD, default 2), <c>--evo S</c> (also evolutionary search, S seconds per budget), <c>--speed</c> (tokens/s of each representation beside llama.cpp's
/// GGUF files), <c>--threads N</c>.
/// </summary>
internal static class NativeSuite
{
    private sealed record Row(string Series, string Budget, long BudgetBytes, int[] Selection, long FileBytes, double Bpw);

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int tokens = Program.Option(args, "--tokens", 8192);
        int refine = Program.Option(args, "--refine", 1);
        int chunks = Program.Option(args, "--chunks", 0);
        int evolutionSeconds = Program.Option(args, "--evo", 0);
        int swapChunks = Program.Option(args, "--swap-chunks", 2);
        double[] bpws = (Program.Value(args, "--bpw") ?? "2.0,2.5,3.0,3.5,4.0,4.5,5.0,6.0").Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        var representations = Program.Value(args, "--representations") is { } specs
            ? specs.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(NativeRepresentation.Parse).ToList()
            : NativeRepresentation.Defaults;
        string output = Program.Value(args, "--out") ?? Path.Combine(AllocationSuite.RepositoryRoot(), "docs", "charts");
        Directory.CreateDirectory(output);
        string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        string scratch = Directory.CreateTempSubdirectory("squeeze-native-").FullName;
        try
        {
            using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
            var options = new AllocationOptions
            {
                Compression = new CompressionOptions { Method = CompressionMethod.Gptq, CalibrationTokens = tokens, ContextLength = 256, RefinePasses = refine, Threads = threads },
                SwapChunks = swapChunks,
                KldChunks = swapChunks,
            };
            using var context = Allocator.PrepareNative(source, calibText, options, representations, new SynchronousProgress<AllocationProgress>(p =>
            {
                if (p.Done == p.Total || p.Done % 25 == 0)
                    Console.Error.WriteLine($"{p.Stage} {p.Done}/{p.Total} {p.Note}");
            }));
            var set = context.Candidates;
            var rows = new List<Row>();
            foreach (var level in representations)
            {
                // This level wherever it fits; elsewhere f16 (the largest candidate).
                var selection = set.Tensors.Select(t =>
                {
                    var options = t.Options.ToList();
                    int k = options.FindIndex(c => c.Level == level.Spec);
                    return k >= 0 ? k : options.Count - 1;
                }).ToArray();
                long bytes = set.FileBytes(selection);
                rows.Add(new Row(level.Spec, "", 0, selection, bytes, set.BitsPerWeight(bytes)));
            }
            var budgets = bpws.Select(b => (Name: $"{b:0.0#} bpw", Bytes: Allocator.BudgetForBitsPerWeight(b, set.Parameters)))
                .Append(("Q4_0 imatrix size", AllocationSuite.LlamaCpp.First(l => l.Mix == "Q4_0" && l.Imatrix).Bytes)).ToList();
            var knapsackSeconds = new List<double>();
            foreach (var (name, bytes) in budgets)
            {
                var clock = Stopwatch.StartNew();
                BudgetAllocation allocation;
                try
                {
                    allocation = Allocator.Allocate(context, bytes, SearchMethod.Knapsack, ErrorModel.SwapKld);
                }
                catch (ArgumentException e)
                {
                    Console.Error.WriteLine($"{name}: {e.Message}");
                    continue;
                }
                knapsackSeconds.Add(clock.Elapsed.TotalSeconds);
                string path = Path.Combine(scratch, "check");
                long written = set.Write(allocation.Selection, path);
                if (written != allocation.FileBytes || written > bytes)
                    throw new InvalidOperationException($"{name}: wrote {written:N0} bytes, predicted {allocation.FileBytes:N0}, budget {bytes:N0}");
                Directory.Delete(path, recursive: true);
                rows.Add(new Row("native knapsack", name, bytes, allocation.Selection, allocation.FileBytes, allocation.BitsPerWeight));
                if (representations.Any(r => !IsQuantization(r)))
                {
                    // The same search restricted to quantization (every level that keeps all weights and the full rank): does
                    // structure removal (pruning, low rank) pay?
                    var levels = representations.Where(IsQuantization).Select(r => r.Spec).ToHashSet(StringComparer.Ordinal);
                    var quantized = Allocator.Allocate(context, bytes, SearchMethod.Knapsack, ErrorModel.SwapKld, allowed: c => levels.Contains(c.Level));
                    rows.Add(new Row("native knapsack, quantization only", name, bytes, quantized.Selection, quantized.FileBytes, quantized.BitsPerWeight));
                }
                if (representations.Any(r => r is VectorRepresentation) && representations.Any(r => r is not VectorRepresentation))
                {
                    // The same search without the vector-quantization levels: what vq adds at this budget.
                    var levels = representations.Where(r => r is not VectorRepresentation).Select(r => r.Spec).ToHashSet(StringComparer.Ordinal);
                    try
                    {
                        var without = Allocator.Allocate(context, bytes, SearchMethod.Knapsack, ErrorModel.SwapKld, allowed: c => levels.Contains(c.Level));
                        rows.Add(new Row("native knapsack without vq", name, bytes, without.Selection, without.FileBytes, without.BitsPerWeight));
                    }
                    catch (ArgumentException e)
                    {
                        Console.Error.WriteLine($"{name} without vq: {e.Message}");
                    }
                }
                if (evolutionSeconds > 0)
                {
                    var evolved = Allocator.Allocate(context, bytes, SearchMethod.Evolution, ErrorModel.SwapKld,
                        new EvolutionOptions { Seed = 1, TimeLimit = TimeSpan.FromSeconds(evolutionSeconds) });
                    rows.Add(new Row("native evo", name, bytes, evolved.Selection, evolved.FileBytes, evolved.BitsPerWeight));
                }
            }

            var models = rows.Select(r => set.Compose(r.Selection)).ToArray();
            IReadOnlyList<EvaluationResult> results;
            try
            {
                results = Evaluator.EvaluateMany(models, evalText, new EvaluationOptions { ContextLength = 256, MaxChunks = chunks, Threads = threads }, source);
            }
            finally
            {
                foreach (var m in models)
                    m.Dispose();
            }

            Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- native {string.Join(' ', args)}` (stories15M.bin, {set.Parameters:N0} parameters; " +
                $"GPTQ candidates (refinement {refine}) calibrated on {context.CalibrationTokens:N0} tokens of tinystories-calib; single swaps on {context.Meter.ScoredPerChunk * swapChunks} calibration tokens; " +
                $"scored on {results[0].Chunks} chunks of tinystories-eval, ctx 256, against the f32 model; {threads} threads). Sizes are whole native directories " +
                $"(model.safetensors, config.json, tokenizer files); bits per weight = bytes × 8 / parameters.");
            Console.WriteLine();
            Console.WriteLine($"Preparation: calibration {context.CalibrationSeconds:0.0} s, encoding {set.Tensors.Sum(t => t.Options.Count)} candidates of {set.Tensors.Count} tensors " +
                $"{context.EncodingSeconds:0.0} s, single-swap KLD {context.SwapSeconds:0.0} s; knapsack median {Median(knapsackSeconds):0.000} s.");
            Console.WriteLine();
            Console.WriteLine("| series | budget | bytes | bpw | PPL | mean KLD | same top % |");
            Console.WriteLine("|---|---|---|---|---|---|---|");
            for (int i = 0; i < rows.Count; i++)
            {
                var r = rows[i];
                var k = results[i].KlDivergence!;
                Console.WriteLine($"| {r.Series} | {r.Budget} | {r.FileBytes:N0} | {r.Bpw:0.000} | {results[i].Perplexity:0.0000} | {k.Mean:0.000000} | {k.SameTopTokenPercent:0.00} |");
            }
            Console.WriteLine();
            Console.WriteLine("Levels the searches chose (tensors per level):");
            Console.WriteLine();
            Console.WriteLine("| series | budget | levels |");
            Console.WriteLine("|---|---|---|");
            foreach (var r in rows.Where(Allocated))
            {
                var counts = Enumerable.Range(0, set.Tensors.Count).GroupBy(i => set.Chosen(r.Selection, i).Level).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal);
                Console.WriteLine($"| {r.Series} | {r.Budget} | {string.Join(", ", counts.Select(g => $"{g.Key} ×{g.Count()}"))} |");
            }
            Console.WriteLine();
            WriteChart(output, set, rows, results);

            var smallest = rows.Where(Allocated).MinBy(r => r.FileBytes);
            if (smallest is not null)
                Samples(set, smallest, threads);
            if (args.Contains("--speed"))
                Speed(shared, set, rows, threads);
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    private static void WriteChart(string output, NativeCandidateSet set, List<Row> rows, IReadOnlyList<EvaluationResult> results)
    {
        var csv = new StringBuilder("series,budget,bytes,bpw,ppl,mean_kld\n");
        for (int i = 0; i < rows.Count; i++)
            csv.Append(CultureInfo.InvariantCulture, $"{rows[i].Series},{rows[i].Budget},{rows[i].FileBytes},{rows[i].Bpw:0.0000},{results[i].Perplexity:0.0000},{results[i].KlDivergence!.Mean:0.000000}\n");
        File.WriteAllText(Path.Combine(output, "native-rate-distortion.csv"), csv.ToString());

        var series = new List<ChartSeries>();
        foreach (var (search, label) in (ReadOnlySpan<(string, string)>)[("native knapsack", "Squeeze native, knapsack over all levels"),
                     ("native knapsack, quantization only", "Squeeze native, knapsack over quantization levels only"), ("native knapsack without vq", "Squeeze native, knapsack without the vq levels"),
                     ("native evo", "Squeeze native, knapsack + evolution")])
        {
            var allocated = rows.Select((r, i) => (r, i)).Where(p => p.r.Series == search).OrderBy(p => p.r.Bpw).ToList();
            if (allocated.Count > 0)
                series.Add(new ChartSeries(label, [.. allocated.Select(p => p.r.Bpw)], [.. allocated.Select(p => results[p.i].KlDivergence!.Mean)], Line: true));
        }
        // Each level alone, one series per family (f16, at 16 bits per weight, is in the CSV only).
        foreach (var group in rows.Select((r, i) => (r, i)).Where(p => !Allocated(p.r) && p.r.Series != "f16").GroupBy(p => Family(p.r.Series)))
            series.Add(new ChartSeries($"native {group.Key} alone", [.. group.Select(p => p.r.Bpw)], [.. group.Select(p => results[p.i].KlDivergence!.Mean)], Line: false));
        // Squeeze's GGUF points, from the allocation suite's table in docs/charts.
        string gguf = Path.Combine(AllocationSuite.RepositoryRoot(), "docs", "charts", "allocation-rate-distortion.csv");
        if (File.Exists(gguf))
        {
            var points = File.ReadAllLines(gguf).Skip(1).Select(l => l.Split(',')).Where(f => f[0] == "squeeze knapsack")
                .Select(f => (Bpw: double.Parse(f[4], CultureInfo.InvariantCulture), Kld: double.Parse(f[6], CultureInfo.InvariantCulture))).OrderBy(p => p.Bpw).ToList();
            series.Add(new ChartSeries("Squeeze GGUF, knapsack over block types", [.. points.Select(p => p.Bpw)], [.. points.Select(p => p.Kld)], Line: true));
        }
        var imatrix = AllocationSuite.LlamaCpp.Where(l => l.Imatrix).ToList();
        series.Add(new ChartSeries("llama.cpp mixes with imatrix", [.. imatrix.Select(l => set.BitsPerWeight(l.Bytes))], [.. imatrix.Select(l => l.Kld)], Line: false));
        series.Add(new ChartSeries("llama.cpp mixes without imatrix", [.. AllocationSuite.LlamaCppPlain.Select(l => set.BitsPerWeight(l.Bytes))], [.. AllocationSuite.LlamaCppPlain.Select(l => l.Kld)], Line: false));
        AllocationCharts.LogScale(series, Path.Combine(output, "native-rate-distortion.png"), "stories15M: mean KLD on tinystories-eval against size",
            "bits per weight (bytes × 8 / parameters)", "mean KLD (log scale)");
    }

    // Quantization keeps every weight and the full rank: uniform codes, codebooks, rotated or entropy-coded ones, f16,
    // DFloat11. Pruning (nm, unstructured) and low rank (svd, eora) remove structure.
    private static bool IsQuantization(NativeRepresentation level) => level is not (PrunedRepresentation or LowRankRepresentation or CompensatedRepresentation);

    private static bool Allocated(Row row) => row.Series.StartsWith("native ", StringComparison.Ordinal);

    // The chart's series for a level alone.
    private static string Family(string spec) => spec.Split(':')[0] switch
    {
        "uniform" => "uniform codes",
        "codebook" => "codebooks",
        "rot+uniform" or "entropy+uniform" => "rotated or entropy-coded codes",
        "nm" or "unstructured" => "pruned",
        "svd" or "eora" => "low rank",
        "vq" or "rvq" => "vector quantization",
        var other => other,
    };

    private static void Samples(NativeCandidateSet set, Row row, int threads)
    {
        using var model = set.Compose(row.Selection);
        using var runtime = new Transformer(model, new RuntimeOptions { Threads = threads, ContextLength = 256 });
        Console.WriteLine($"Five stories from the {row.Budget} native model ({row.FileBytes:N0} bytes, {row.Bpw:0.000} bpw), prompt \"Once upon a time\", temperature 0.8, top-p 0.9, seeds 1–5, 120 tokens:");
        Console.WriteLine();
        for (int seed = 1; seed <= 5; seed++)
        {
            var ids = Generator.Generate(runtime, "Once upon a time", 120, new Sampler(new SamplingOptions { Temperature = 0.8f, TopP = 0.9f, Seed = seed }));
            string text = "Once upon a time" + model.Tokenizer.Decode([.. ids]);
            Console.WriteLine($"{seed}. {text.ReplaceLineEndings(" ").Trim()}");
            Console.WriteLine();
        }
    }

    // Prompt and decode tokens/s of each representation alone beside llama.cpp's GGUF files of similar size, one process.
    private static void Speed(string shared, NativeCandidateSet set, List<Row> rows, int threads)
    {
        Console.WriteLine();
        Console.WriteLine($"Speed, {threads} threads, prompt 128 tokens, decode 64 tokens, median of 3 runs after a warm-up (the machine was shared; compare rows of this one run):");
        Console.WriteLine();
        Console.WriteLine("| model | bytes | bpw | prompt tok/s | decode tok/s |");
        Console.WriteLine("|---|---|---|---|---|");
        void Line(string name, Models.Model model, long bytes)
        {
            var speed = Runtime.SpeedBenchmark.Run(model, threads, 128, 64, 3);
            Console.WriteLine($"| {name} | {bytes:N0} | {set.BitsPerWeight(bytes):0.000} | {speed.PromptTokensPerSecond:0} | {speed.DecodeTokensPerSecond:0} |");
        }
        foreach (string file in (string[])["stories15M-f32.gguf", "stories15M-Q8_0.gguf", "stories15M-Q4_K_M-imatrix.gguf", "stories15M-Q4_0-imatrix.gguf"])
        {
            string path = Path.Combine(shared, "golden", file);
            using var gguf = ModelLoader.Load(path);
            Line($"GGUF {file}", gguf, new FileInfo(path).Length);
        }
        foreach (var row in rows.Where(r => !Allocated(r)))
        {
            using var model = set.Compose(row.Selection);
            Line($"native {row.Series}", model, row.FileBytes);
        }
    }

    private static double Median(List<double> values)
    {
        if (values.Count == 0)
            return double.NaN;
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
