using System.Diagnostics;
using System.Globalization;
using System.Text;
using Squeeze.Allocation;
using Squeeze.Charts;
using Squeeze.Compression;
using Squeeze.Evaluation;
using Squeeze.Formats;

namespace Squeeze.Bench;

/// <summary>
/// Budgeted allocation on stories15M: candidates encoded once with GPTQ (calibration on tinystories-calib), then for each
/// budget (the size of each llama.cpp mix in the golden README, and a few bits-per-weight targets below them) the
/// knapsack on single-swap KLD, the knapsack on the output error, and evolutionary search from the knapsack's answer;
/// every file written once to check its size against the budget; all scored on the whole tinystories-eval (ctx 256)
/// against the f32 model. Writes the rate-distortion chart, the search-time chart, a bits-per-tensor chart and the CSV
/// behind them to <c>--out</c> (default docs/charts). Options: <c>--time-limit S</c> (evolution per budget, default 60),
/// <c>--generations N</c>, <c>--seed N</c>, <c>--tokens N</c>, <c>--refine N</c> (GPTQ refinement of the candidates, default 4), <c>--bpw a,b</c> (extra targets), <c>--mixes A,B</c>, <c>--threads N</c>.
/// </summary>
internal static class AllocationSuite
{
    // shared/golden/README.md: llama.cpp's file for each mix, with imatrix where there is one.
    internal static readonly (string Mix, bool Imatrix, long Bytes, double Perplexity, double Kld)[] LlamaCpp =
    [
        ("Q8_0", false, 16_879_328, 6.5016, 0.001439),
        ("Q6_K", true, 16_558_144, 6.5059, 0.003043),
        ("Q5_K_M", true, 15_040_960, 6.5498, 0.012280),
        ("Q4_K_M", true, 14_650_432, 6.6272, 0.026935),
        ("Q5_0", true, 14_640_064, 6.6400, 0.024291),
        ("Q4_K_S", true, 14_494_912, 6.6483, 0.028527),
        ("Q3_K_M", false, 14_028_128, 6.7364, 0.062579),
        ("Q4_0", true, 13_893_568, 6.8543, 0.091786),
        ("Q3_K_S", true, 13_717_312, 7.0959, 0.113255),
        ("Q4_0 pure", false, 9_285_344, 7.2559, 0.147463),
    ];

    // The golden rows without imatrix (for the chart).
    internal static readonly (string Mix, long Bytes, double Kld)[] LlamaCppPlain =
    [
        ("Q8_0", 16_879_328, 0.001439), ("Q6_K", 16_557_920, 0.003257), ("Q5_K_M", 15_040_736, 0.020825), ("Q5_0", 14_639_840, 0.029895),
        ("Q4_K_M", 14_650_208, 0.032127), ("Q4_K_S", 14_494_688, 0.040705), ("Q4_0", 13_893_344, 0.115526), ("Q3_K_M", 14_028_128, 0.062579),
        ("Q3_K_S", 13_717_088, 0.137484), ("Q4_0 pure", 9_285_344, 0.147463),
    ];

    private const int SwapChunks = 2;

    private sealed record Row(string Budget, long BudgetBytes, double? LlamaKld, string Search, BudgetAllocation Allocation, double Seconds);

    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", Environment.ProcessorCount);
        int tokens = Program.Option(args, "--tokens", 8192);
        int seconds = Program.Option(args, "--time-limit", 60);
        int generations = Program.Option(args, "--generations", 100_000);
        int seed = Program.Option(args, "--seed", 1);
        int refine = Program.Option(args, "--refine", 4);
        double[] bpws = (Program.Value(args, "--bpw") ?? "6.0,5.0,4.6").Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        string[]? mixes = Program.Value(args, "--mixes")?.Split(',');
        string output = Program.Value(args, "--out") ?? Path.Combine(RepositoryRoot(), "docs", "charts");
        Directory.CreateDirectory(output);
        string calibText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        string evalText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-eval.txt"));
        if (args.Contains("--block-drops"))
        {
            BlockDrops(args, shared, threads, calibText);
            return;
        }
        string scratch = Directory.CreateTempSubdirectory("squeeze-allocation-").FullName;
        try
        {
            using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
            var options = new AllocationOptions
            {
                Compression = new CompressionOptions { Method = CompressionMethod.Gptq, CalibrationTokens = tokens, ContextLength = 256, RefinePasses = refine, Threads = threads },
                SwapChunks = SwapChunks,
            };
            using var context = Allocator.Prepare(source, calibText, options, new SynchronousProgress<AllocationProgress>(p =>
            {
                if (p.Done == p.Total || p.Done % 20 == 0)
                    Console.Error.WriteLine($"{p.Stage} {p.Done}/{p.Total} {p.Note}");
            }));
            var set = context.Candidates;
            long smallest = set.FileBytes(set.Smallest()), largest = set.FileBytes(set.Largest());
            // The same candidates with their single-swap KLD predicted from a sample (what larger models get), against
            // the measured ones.
            using var sampled = Allocator.Prepare(source, calibText, options with { Swaps = SwapMeasurement.Sampled });
            var proxy = new Proxy(sampled.MeasuredSwaps, sampled.SwapSeconds, Spearman(
                [.. set.Tensors.SelectMany(t => t.Options.Select(c => c.SwapKld))],
                [.. sampled.Candidates.Tensors.SelectMany(t => t.Options.Select(c => c.SwapKld))]));

            var budgets = LlamaCpp.Where(l => mixes is null || mixes.Contains(l.Mix)).Select(l => (Name: l.Mix, Bytes: l.Bytes, Kld: (double?)l.Kld))
                .Concat(bpws.Select(b => (Name: $"{b:0.0#} bpw", Bytes: Allocator.BudgetForBitsPerWeight(b, set.Parameters), Kld: (double?)null))).ToList();
            var rows = new List<Row>();
            var evolution = new EvolutionOptions { Seed = seed, Generations = generations, TimeLimit = TimeSpan.FromSeconds(seconds) };
            foreach (var (name, bytes, kld) in budgets)
            {
                var clock = Stopwatch.StartNew();
                var knapsack = Allocator.Allocate(context, bytes, SearchMethod.Knapsack, ErrorModel.SwapKld);
                rows.Add(new Row(name, bytes, kld, "knapsack", knapsack, clock.Elapsed.TotalSeconds));
                clock.Restart();
                var predicted = Allocator.Allocate(sampled, bytes, SearchMethod.Knapsack, ErrorModel.SwapKld);
                rows.Add(new Row(name, bytes, kld, "knapsack (sampled swaps)", predicted, clock.Elapsed.TotalSeconds));
                clock.Restart();
                var output1 = Allocator.Allocate(context, bytes, SearchMethod.Knapsack, ErrorModel.OutputError);
                rows.Add(new Row(name, bytes, kld, "knapsack (output error)", output1, clock.Elapsed.TotalSeconds));
                clock.Restart();
                var evolved = Allocator.Allocate(context, bytes, SearchMethod.Evolution, ErrorModel.SwapKld, evolution);
                rows.Add(new Row(name, bytes, kld, "evo", evolved, clock.Elapsed.TotalSeconds));
                Console.Error.WriteLine($"{name}: knapsack {knapsack.FileBytes:N0} B, evo {evolved.Evolution!.StartFitness:0.000000} -> {evolved.Evolution.Fitness:0.000000} " +
                    $"in {evolved.Evolution.Generations} generations");
            }

            // Every file written once: its size is the size function's and within the budget.
            foreach (var row in rows)
            {
                string path = Path.Combine(scratch, "check.gguf");
                long written = set.Write(row.Allocation.Selection, path);
                if (written != row.Allocation.FileBytes || written > row.BudgetBytes)
                    throw new InvalidOperationException($"{row.Budget} {row.Search}: wrote {written:N0} bytes, predicted {row.Allocation.FileBytes:N0}, budget {row.BudgetBytes:N0}");
                File.Delete(path);
            }

            var models = rows.Select(r => set.Compose(r.Allocation.Selection)).ToArray();
            IReadOnlyList<EvaluationResult> results;
            try
            {
                results = Evaluator.EvaluateMany(models, evalText, new EvaluationOptions { ContextLength = 256, Threads = threads }, source);
            }
            finally
            {
                foreach (var m in models)
                    m.Dispose();
            }

            Print(args, threads, tokens, seconds, seed, context, proxy, smallest, largest, rows, results);
            WriteCharts(output, set, rows, results);
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    // Single swaps predicted from a sample: forward passes, their time, and the rank correlation with the measured ones.
    private sealed record Proxy(int Measured, double Seconds, double Spearman);

    private static void Print(string[] args, int threads, int tokens, int seconds, int seed, AllocationContext<GgufCandidateSet, GgufCandidate> context, Proxy proxy,
        long smallest, long largest, List<Row> rows, IReadOnlyList<EvaluationResult> results)
    {
        var set = context.Candidates;
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- allocation {string.Join(' ', args)}` (stories15M.bin, {set.Parameters:N0} parameters; " +
            $"GPTQ candidates calibrated on {context.CalibrationTokens:N0} tokens of tinystories-calib; single swaps and evolution measured on the first chunks of tinystories-calib, ctx 256; " +
            $"evolution seed {seed}, {seconds} s per budget; scored on the whole tinystories-eval, ctx 256, against the f32 model; {threads} threads)");
        Console.WriteLine();
        Console.WriteLine($"Preparation: calibration {context.CalibrationSeconds:0.0} s, encoding {set.Tensors.Sum(t => t.Options.Count)} candidates of {set.Tensors.Count} tensors " +
            $"{context.EncodingSeconds:0.0} s, single-swap KLD of each on {context.Meter.ScoredPerChunk * SwapChunks} tokens {context.SwapSeconds:0.0} s. " +
            $"Smallest possible file {smallest:N0} bytes ({set.BitsPerWeight(smallest):0.000} bpw), largest (all F16) {largest:N0} bytes ({set.BitsPerWeight(largest):0.000} bpw).");
        Console.WriteLine();
        Console.WriteLine($"Sampled swaps (what `--swaps auto` does above {Allocator.MeasuredSwapWork:0e0} parameter-tokens): {proxy.Measured} forward passes in {proxy.Seconds:0.0} s " +
            $"instead of {set.Tensors.Sum(t => t.Options.Count)} in {context.SwapSeconds:0.0} s; Spearman ρ of the predicted and measured single-swap KLD over every candidate {proxy.Spearman:0.000}; " +
            "the rows \"knapsack (sampled swaps)\" are the knapsack on the predictions.");
        Console.WriteLine();
        Console.WriteLine("| budget | budget bytes | search | file bytes | bpw | PPL | mean KLD | llama.cpp KLD | KLD / llama.cpp | same top % | search s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        for (int i = 0; i < rows.Count; i++)
        {
            var r = rows[i];
            var k = results[i].KlDivergence!;
            string reference = r.LlamaKld is { } l ? $"{l:0.000000}" : "";
            string ratio = r.LlamaKld is { } l2 ? $"{k.Mean / l2:0.000}" : "";
            Console.WriteLine($"| {r.Budget} | {r.BudgetBytes:N0} | {r.Search} | {r.Allocation.FileBytes:N0} | {r.Allocation.BitsPerWeight:0.000} | {results[i].Perplexity:0.0000} | " +
                $"{k.Mean:0.000000} | {reference} | {ratio} | {k.SameTopTokenPercent:0.00} | {r.Seconds:0.00} |");
        }
        Console.WriteLine();

        // Evolution against the knapsack at the same budget.
        Console.WriteLine("| budget | knapsack KLD (eval) | evo KLD (eval) | evo / knapsack | calib KLD start → end | generations | chunk forwards |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        for (int i = 0; i < rows.Count; i++)
        {
            if (rows[i].Search != "evo")
                continue;
            int knap = rows.FindIndex(r => r.Budget == rows[i].Budget && r.Search == "knapsack");
            var e = rows[i].Allocation.Evolution!;
            double a = results[knap].KlDivergence!.Mean, b = results[i].KlDivergence!.Mean;
            Console.WriteLine($"| {rows[i].Budget} | {a:0.000000} | {b:0.000000} | {b / a:0.000} | {e.StartFitness:0.000000} → {e.Fitness:0.000000} | {e.Generations} | {e.ChunkForwards:N0} |");
        }
        Console.WriteLine();

        // How well each error model's sum predicts the measured KLD, over every assignment scored.
        var measured = results.Select(r => r.KlDivergence!.Mean).ToArray();
        var swap = rows.Select(r => Allocator.PredictedError(set, r.Allocation.Selection, ErrorModel.SwapKld)).ToArray();
        var outputError = rows.Select(r => Allocator.PredictedError(set, r.Allocation.Selection, ErrorModel.OutputError)).ToArray();
        Console.WriteLine("| error model | Spearman ρ with measured KLD | Pearson r (log–log) | Σ prediction / measured (median) |");
        Console.WriteLine("|---|---|---|---|");
        Console.WriteLine($"| Σ single-swap KLD | {Spearman(swap, measured):0.000} | {Pearson(swap.Select(v => Math.Log(v)).ToArray(), measured.Select(v => Math.Log(v)).ToArray()):0.000} | {Median(swap.Zip(measured, (p, m) => p / m)):0.000} |");
        Console.WriteLine($"| Σ relative output error | {Spearman(outputError, measured):0.000} | {Pearson(outputError.Select(v => Math.Log(v)).ToArray(), measured.Select(v => Math.Log(v)).ToArray()):0.000} | (other units) |");
        Console.WriteLine();
        Console.WriteLine($"Knapsack time: median {Median(rows.Where(r => r.Search == "knapsack").Select(r => r.Allocation.KnapsackSeconds)):0.000} s, " +
            $"max {rows.Where(r => r.Search != "evo").Max(r => r.Allocation.KnapsackSeconds):0.000} s.");
    }

    private static void WriteCharts(string output, GgufCandidateSet set, List<Row> rows, IReadOnlyList<EvaluationResult> results)
    {
        var csv = new StringBuilder("series,budget,budget_bytes,file_bytes,bpw,ppl,mean_kld\n");
        for (int i = 0; i < rows.Count; i++)
        {
            csv.Append(CultureInfo.InvariantCulture, $"squeeze {rows[i].Search},{rows[i].Budget},{rows[i].BudgetBytes},{rows[i].Allocation.FileBytes},{rows[i].Allocation.BitsPerWeight:0.0000},");
            csv.Append(CultureInfo.InvariantCulture, $"{results[i].Perplexity:0.0000},{results[i].KlDivergence!.Mean:0.000000}\n");
        }
        foreach (var l in LlamaCpp.Where(l => l.Imatrix))
            csv.Append(CultureInfo.InvariantCulture, $"llama.cpp imatrix,{l.Mix},{l.Bytes},{l.Bytes},{set.BitsPerWeight(l.Bytes):0.0000},{l.Perplexity:0.0000},{l.Kld:0.000000}\n");
        foreach (var l in LlamaCppPlain)
            csv.Append(CultureInfo.InvariantCulture, $"llama.cpp,{l.Mix},{l.Bytes},{l.Bytes},{set.BitsPerWeight(l.Bytes):0.0000},,{l.Kld:0.000000}\n");
        File.WriteAllText(Path.Combine(output, "allocation-rate-distortion.csv"), csv.ToString());

        ChartSeries Squeeze(string search, string label)
        {
            var points = rows.Select((r, i) => (r, i)).Where(p => p.r.Search == search).Select(p => (p.r.Allocation.BitsPerWeight, results[p.i].KlDivergence!.Mean)).ToArray();
            return new ChartSeries(label, [.. points.Select(p => p.BitsPerWeight)], [.. points.Select(p => p.Mean)], Line: true);
        }
        double[] imatrixBits = LlamaCpp.Where(l => l.Imatrix).Select(l => 8.0 * l.Bytes / set.Parameters).ToArray();
        double[] imatrixKld = LlamaCpp.Where(l => l.Imatrix).Select(l => l.Kld).ToArray();
        double[] plainBits = LlamaCppPlain.Select(l => 8.0 * l.Bytes / set.Parameters).ToArray();
        double[] plainKld = LlamaCppPlain.Select(l => l.Kld).ToArray();
        AllocationCharts.LogScale(
        [
            Squeeze("evo", "Squeeze evo (knapsack + evolution)"),
            Squeeze("knapsack", "Squeeze knapsack (single-swap KLD)"),
            Squeeze("knapsack (output error)", "Squeeze knapsack (output error)"),
            new ChartSeries("llama.cpp mixes with imatrix", imatrixBits, imatrixKld, Line: false),
            new ChartSeries("llama.cpp mixes without imatrix", plainBits, plainKld, Line: false),
        ], Path.Combine(output, "allocation-rate-distortion.png"), "stories15M: mean KLD on tinystories-eval against file size", "bits per weight (file bytes × 8 / parameters)", "mean KLD (log scale)");

        // Search time: calibration fitness of each evolution run against seconds.
        var curves = new StringBuilder("budget,generation,seconds,chunk_forwards,calib_kld\n");
        var series = new List<ChartSeries>();
        foreach (var r in rows.Where(r => r.Search == "evo"))
        {
            var h = r.Allocation.Evolution!.History;
            foreach (var s in h)
                curves.Append(CultureInfo.InvariantCulture, $"{r.Budget},{s.Generation},{s.Seconds:0.00},{s.ChunkForwards},{s.Fitness:0.000000}\n");
            var steps = h.Append(h[^1] with { Seconds = r.Allocation.Evolution.Seconds }).ToList();
            series.Add(new ChartSeries(r.Budget, [.. steps.Select(s => s.Seconds)], [.. steps.Select(s => s.Fitness)], Line: true));
        }
        File.WriteAllText(Path.Combine(output, "allocation-search-time.csv"), curves.ToString());
        AllocationCharts.LogScale(series, Path.Combine(output, "allocation-search-time.png"), "Evolutionary search: calibration KLD against time", "seconds", "mean KLD on 4 calibration chunks (log scale)");

        var q4km = rows.FirstOrDefault(r => r.Budget == "Q4_K_M" && r.Search == "evo") ?? rows.First(r => r.Search == "evo");
        AllocationCharts.BitsPerTensor(set.Report(q4km.Allocation.Selection), set.Source.Config.LayerCount, Path.Combine(output, "allocation-bits-per-tensor.png"),
            $"stories15M at the {q4km.Budget} budget ({q4km.Allocation.FileBytes:N0} bytes, evo)");
    }

    // Whole-block dropping as a level: the KLD of skipping one block (its attn_output and ffn_down set to zero, which
    // leaves the residual stream untouched, exactly as if the block were not there) against the bytes it would free.
    private static void BlockDrops(string[] args, string shared, int threads, string calibText)
    {
        using var source = ModelLoader.Load(Path.Combine(shared, "models", "stories15M", "stories15M.bin"));
        var meter = new KldMeter(source, calibText, 256, 4, threads);
        Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- allocation {string.Join(' ', args)}` (stories15M.bin; KLD on the first 4 chunks of tinystories-calib, ctx 256)");
        Console.WriteLine();
        Console.WriteLine("| block skipped | calibration KLD | bytes freed at Q8_0 | at Q4_0 |");
        Console.WriteLine("|---|---|---|---|");
        for (int l = 0; l < source.Config.LayerCount; l++)
        {
            var silenced = new[] { Models.TensorNames.AttentionOutput(l), Models.TensorNames.Down(l) }
                .ToDictionary(name => name, name => (Tensors.GgmlType.F32, new byte[source[name].ElementCount * sizeof(float)]), StringComparer.Ordinal);
            using var skipped = source.WithTensors(silenced);
            double kld = meter.Measure(skipped);
            string prefix = $"blk.{l}.";
            long Bytes(Tensors.GgmlType type) => source.Tensors.Where(t => t.Name.StartsWith(prefix, StringComparison.Ordinal))
                .Sum(t => t.Shape.Length >= 2 ? Tensors.GgmlTypes.RowBytes(type, t.Columns) * t.Rows : t.ByteLength);
            Console.WriteLine($"| {l} | {kld:0.000000} | {Bytes(Tensors.GgmlType.Q8_0):N0} | {Bytes(Tensors.GgmlType.Q4_0):N0} |");
        }
    }

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Squeeze.slnx")))
                return dir.FullName;
        }
        throw new DirectoryNotFoundException("repository root (Squeeze.slnx) not found: pass --out DIR");
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? double.NaN : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static double Pearson(double[] x, double[] y)
    {
        double mx = x.Average(), my = y.Average();
        double sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < x.Length; i++)
        {
            sxy += (x[i] - mx) * (y[i] - my);
            sxx += (x[i] - mx) * (x[i] - mx);
            syy += (y[i] - my) * (y[i] - my);
        }
        return sxy / Math.Sqrt(sxx * syy);
    }

    private static double Spearman(double[] x, double[] y) => Pearson(Ranks(x), Ranks(y));

    private static double[] Ranks(double[] values)
    {
        var order = Enumerable.Range(0, values.Length).OrderBy(i => values[i]).ToArray();
        var ranks = new double[values.Length];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && values[order[j + 1]] == values[order[i]])
                j++;
            for (int k = i; k <= j; k++)
                ranks[order[k]] = (i + j) / 2.0;
            i = j + 1;
        }
        return ranks;
    }

}
