using System.CommandLine;
using Spectre.Console;
using Squeeze.Calibration;
using Squeeze.Formats;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Native;
using Squeeze.Pruning;

namespace Squeeze.Cli.Commands;

/// <summary>
/// <c>squeeze compress MODEL --prune magnitude|wanda|sparsegpt [--sparsity 0.5] [--pattern unstructured|N:M|heads|ffn]
/// --format native -o DIR</c>: every block's linear weights pruned (<see cref="ModelPruner"/>), the kept values in f16,
/// written as a native model directory that <c>eval</c>, <c>generate</c> and <c>inspect</c> run. GGUF has no sparse
/// tensors, so a pruned model is only written in the native format (asking for GGUF is a one-line error rather than a
/// file of dense zeros that would be no smaller).
/// </summary>
internal static class CompressPruned
{
    /// <summary>One pruned tensor.</summary>
    public sealed record PrunedTensor(string Name, string Scheme, long Bytes, double BitsPerWeight);

    /// <summary>What <c>compress --prune</c> prints (<c>--json</c>).</summary>
    public sealed record Report(string Model, string Output, string Method, string Pattern, long FileBytes, long Parameters, double BitsPerWeight,
        long CalibrationTokens, double CalibrationSeconds, double PruningSeconds, IReadOnlyList<PrunedTensor> Tensors);

    public static Option<string?> PruneOption() => new("--prune") { Description = "Prune instead of quantizing: magnitude, wanda (|W|·‖x‖ from the calibration text) or sparsegpt (with weight updates from its XᵀX); every block's linear weights, kept values in f16, written as a native directory (--format native: GGUF has no sparse tensors)" };

    public static Option<double?> SparsityOption() => new("--sparsity") { Description = "With --prune: the fraction of weights (or of heads, or of feed-forward units) removed; default 0.5" };

    public static Option<string> PatternOption() => new("--pattern") { Description = "With --prune: unstructured (per row), N:M (N of every M consecutive weights kept, e.g. 2:4), heads (whole attention heads per block) or ffn (whole feed-forward units per block)", DefaultValueFactory = _ => "unstructured" };

    public static int Execute(CompressCommand.Options options)
    {
        var method = options.Prune!.ToLowerInvariant() switch
        {
            "magnitude" => PruningMethod.Magnitude,
            "wanda" => PruningMethod.Wanda,
            "sparsegpt" => PruningMethod.SparseGpt,
            _ => throw new ArgumentException($"--prune {options.Prune}: expected magnitude, wanda or sparsegpt"),
        };
        if (options.Budget is { } budget && PlanCommand.HasTarget(budget))
            throw new ArgumentException("--prune does not take a size target: to let the search prune, give --representation nm:N:M:VALUES or unstructured:FRACTION:VALUES with --target-bpw");
        if (options.Budget?.Format.Equals("native", StringComparison.OrdinalIgnoreCase) != true)
            throw new ArgumentException("--prune writes sparse tensors, which GGUF cannot hold: add --format native (the output is a directory)");
        if (options.Budget.Representations is { Length: > 0 } || options.Pure || options.TensorTypes.Length > 0 || options.Sequential || options.Tune)
            throw new ArgumentException("--representation, --pure, --tensor-type, --sequential and --tune do not apply with --prune");
        PruningTarget target;
        try
        {
            target = PruningTarget.Parse(options.Pattern, options.Sparsity);
        }
        catch (FormatException e)
        {
            throw new ArgumentException($"--pattern {e.Message}", e);
        }
        if (options.Tokens < 0)
            throw new ArgumentException($"--tokens {options.Tokens} must not be negative");
        if (options.Context < 2)
            throw new ArgumentException($"--ctx {options.Context} must be at least 2");
        Cli.CheckOutput(options.Model, options.Output);
        HuggingFaceWriter.CheckDestination(options.Output);
        bool needsStatistics = method != PruningMethod.Magnitude;
        if (needsStatistics && options.Calib is null && options.Stats is null)
            throw new ArgumentException($"--prune {options.Prune} needs a calibration text (--calib FILE) or statistics (--stats FILE)");
        string? text = needsStatistics && options.Stats is null ? CompressCommand.ReadCalibrationText(options.Calib!) : null;

        using var model = ModelLoader.Load(options.Model, options.Tokenizer);
        var report = Cli.WithProgress("pruning", progress =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            CalibrationStatistics? statistics = !needsStatistics ? null
                : options.Stats is not null ? CalibrationFile.Read(options.Stats, model)
                : Calibrator.Run(model, text!, new CalibrationOptions
                {
                    ContextLength = options.Context,
                    MaxTokens = options.Tokens,
                    CollectGram = method == PruningMethod.SparseGpt,
                    Threads = Math.Max(1, options.Threads),
                }, new SynchronousProgress<CalibrationProgress>(p => progress.Report((p.Chunk, p.Chunks, $"calibrating: chunk {p.Chunk}/{p.Chunks}"))));
            double calibrationSeconds = clock.Elapsed.TotalSeconds;
            clock.Restart();
            var weights = ModelPruner.Prune(model, target, method, statistics, new PruningOptions { DampingFraction = options.Damping, Threads = Math.Max(1, options.Threads) },
                new SynchronousProgress<(int Done, int Total)>(p => progress.Report((p.Done, p.Total, $"pruning {target} by {method}"))));
            double pruningSeconds = clock.Elapsed.TotalSeconds;
            progress.Report((0, 1, $"writing {options.Output}"));
            NativeModelWriter.Write(model, options.Output, weights.ToDictionary(w => w.Name, StringComparer.Ordinal));
            long bytes = Cli.FileBytes(options.Output);
            return new Report(model.Source, options.Output, method.ToString().ToLowerInvariant(), target.ToString()!, bytes, model.ParameterCount,
                8.0 * bytes / model.ParameterCount, statistics?.TokenCount ?? 0, calibrationSeconds, pruningSeconds,
                [.. weights.Select(w => new PrunedTensor(w.Name, w.Scheme, w.StoredBytes, w.BitsPerWeight))]);
        });
        if (options.Json)
            Cli.WriteJson(report);
        else
            Print(report);
        return 0;
    }

    private static void Print(Report report)
    {
        var table = new Table().AddColumns("tensor", "representation", "bytes", "bpw");
        foreach (int c in new[] { 2, 3 })
            table.Columns[c].RightAligned();
        foreach (var t in report.Tensors)
            table.AddRow(Markup.Escape(t.Name), Markup.Escape(t.Scheme), t.Bytes.ToString("N0"), t.BitsPerWeight.ToString("0.00"));
        Cli.Console.Write(table);
        Cli.Console.WriteLine($"{report.Output}: {report.Pattern} pruned by {report.Method}, {report.FileBytes:N0} bytes ({Cli.Bytes(report.FileBytes)}), " +
            $"{report.BitsPerWeight:0.000} bits per weight over {report.Parameters:N0} parameters (the embedding and classifier kept)");
        Cli.Console.WriteLine($"time: calibration {report.CalibrationSeconds:0.0} s ({report.CalibrationTokens:N0} tokens), pruning {report.PruningSeconds:0.0} s");
    }
}
