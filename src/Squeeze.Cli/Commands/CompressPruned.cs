using System.CommandLine;
using Squeeze.Calibration;
using Squeeze.Formats;
using Squeeze.Pipeline;
using Squeeze.Pruning;

namespace Squeeze.Cli.Commands;

/// <summary>
/// <c>squeeze compress MODEL --prune magnitude|wanda|sparsegpt [--sparsity 0.5] [--pattern unstructured|N:M|heads|ffn]
/// --format native -o DIR</c>: every block's linear weights pruned (<see cref="PruneTarget"/> through the one
/// <see cref="CompressionPipeline"/>), the kept values in f16,
/// written as a native model directory that <c>eval</c>, <c>generate</c> and <c>inspect</c> run. GGUF has no sparse
/// tensors, so a pruned model is only written in the native format (asking for GGUF is a one-line error rather than a
/// file of dense zeros that would be no smaller).
/// </summary>
internal static class CompressPruned
{
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
        if (options.Budget.Representations is { Length: > 0 } || options.Pure || options.TensorTypes.Length > 0 || options.Sequential || options.Tune || options.Resume
            || options.MemoryLimit is not null)
            throw new ArgumentException("--representation, --pure, --tensor-type, --sequential, --tune, --resume and --memory-limit do not apply with --prune");
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
        bool needsStatistics = method != PruningMethod.Magnitude;
        if (needsStatistics && options.Calib is null && options.Stats is null)
            throw new ArgumentException($"--prune {options.Prune} needs a calibration text (--calib FILE) or statistics (--stats FILE)");
        string? text = needsStatistics && options.Stats is null ? CompressCommand.ReadCalibrationText(options.Calib!) : null;

        using var model = ModelLoader.Load(options.Model, options.Tokenizer);
        Cli.NoteLeftOut(model);
        var job = new CompressionJob
        {
            Target = new PruneTarget(target, method),
            CalibrationText = text,
            Statistics = needsStatistics && options.Stats is not null ? CalibrationFile.Read(options.Stats, model) : null,
            CalibrationTokens = options.Tokens,
            ContextLength = options.Context,
            Damping = options.Damping,
            Threads = Math.Max(1, options.Threads),
            Output = options.Output,
        };
        var report = Cli.WithStages("pruning", progress => CompressionPipeline.Run(model, job, progress, Cli.Cancellation));
        if (options.Json)
            Cli.WriteJson(report);
        else
            CompressCommand.Print(report, chart: null);
        return 0;
    }
}
