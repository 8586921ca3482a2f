using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;
using Squeeze.Formats;
using Squeeze.Tensors;

namespace Squeeze.Cli;

/// <summary>What every command shares: common options, error reporting, JSON output and the progress console.</summary>
internal static class Cli
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>Human output goes to stdout; with --json, stdout holds only the JSON document and the rest goes to stderr.</summary>
    public static IAnsiConsole Console { get; set; } = CreateConsole(System.Console.Out, System.Console.IsOutputRedirected);

    /// <summary>Progress displays and notes, always on stderr so stdout stays machine-readable.</summary>
    public static IAnsiConsole Status { get; set; } = CreateConsole(System.Console.Error, System.Console.IsErrorRedirected);

    /// <summary>A console on stdout or stderr; when it is a pipe or file, lines are not wrapped at 80 columns.</summary>
    private static IAnsiConsole CreateConsole(TextWriter writer, bool redirected)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer) });
        if (redirected)
            console.Profile.Width = 240;
        return console;
    }

    public static Option<bool> JsonOption() => new("--json") { Description = "Print the result as JSON on stdout" };

    public static Option<int> ThreadsOption() => new("--threads", "-t")
    {
        Description = "Threads to compute with",
        DefaultValueFactory = _ => Environment.ProcessorCount,
    };

    /// <summary><c>--kv POLICY</c>: the KV-cache policy a command runs with (parse the value with <see cref="KvCache"/>).</summary>
    public static Option<string> KvCacheOption() => new("--kv")
    {
        Description = Squeeze.Runtime.KvCachePolicy.Syntax,
        DefaultValueFactory = _ => "f32",
    };

    /// <summary><c>--chat-template</c>: a chat template's family name or Jinja text, used instead of the model's own.</summary>
    public static Option<string?> ChatTemplateOption() => new("--chat-template")
    {
        Description = "Chat template instead of the model's: a family (" + string.Join(", ", Squeeze.Generation.ChatTemplate.Families) + ") or a Jinja text in llama.cpp's recognised families",
    };

    /// <summary>The policy a <c>--kv</c> value names; a bad spec is an <see cref="ArgumentException"/> saying what is wrong.</summary>
    public static Squeeze.Runtime.KvCachePolicy KvCache(string spec) => Squeeze.Runtime.KvCachePolicy.Parse(spec);

    private static CancellationTokenSource cancellation = new();

    /// <summary>What a command's long work stops on: cancelled by Ctrl+C (SIGINT) or SIGTERM while <see cref="Run"/> runs.</summary>
    public static CancellationToken Cancellation => cancellation.Token;

    /// <summary>Runs a command body, turning expected failures (bad input files, bad arguments) into one clear line on
    /// stderr. The first Ctrl+C (or a SIGTERM) cancels <see cref="Cancellation"/>: the work stops, removes what it had
    /// started to write and the command exits with 130; a second Ctrl+C ends the process at once.</summary>
    public static int Run(Func<int> body)
    {
        cancellation = new CancellationTokenSource();
        void Stop(PosixSignalContext context)
        {
            if (cancellation.IsCancellationRequested)
                return; // the second signal: let the runtime end the process
            context.Cancel = true;
            System.Console.Error.WriteLine("squeeze: stopping (press Ctrl+C again to end at once)");
            cancellation.Cancel();
        }
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        try
        {
            return body();
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            System.Console.Error.WriteLine("squeeze: cancelled; nothing was written");
            return 130;
        }
        catch (Exception e) when (e is ModelFormatException or InsufficientMemoryException or ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException or InvalidOperationException or NotSupportedException or KeyNotFoundException)
        {
            // ArgumentException appends " (Parameter 'name')", which means nothing to someone at a prompt.
            string message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
            System.Console.Error.WriteLine($"squeeze: error: {message}");
            return 1;
        }
    }

    /// <summary>Checks an output path before any work: it must not be the input, and its directory must exist.</summary>
    public static void CheckOutput(string input, string output)
    {
        if (string.Equals(Path.GetFullPath(input), Path.GetFullPath(output), StringComparison.Ordinal))
            throw new ArgumentException($"{output}: refusing to write over the input");
        OutputPaths.RequireDirectory(output);
    }

    /// <summary>Says on stderr what of its source <paramref name="model"/> leaves out (a multimodal checkpoint's image part),
    /// before a command writes a file from it.</summary>
    public static void NoteLeftOut(Squeeze.Models.Model model)
    {
        if (model.LeftOut is { } leftOut)
            Status.MarkupLine($"[yellow]note: {Markup.Escape(leftOut)}[/]");
    }

    /// <summary>Reads a UTF-8 text file, refusing one that is not valid UTF-8 text.</summary>
    public static string ReadText(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        try
        {
            return new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new ArgumentException($"{path}: not valid UTF-8 text (byte offset {e.Index})", e);
        }
    }

    public static void WriteJson<T>(T value) => System.Console.Out.WriteLine(JsonSerializer.Serialize(value, Json));

    /// <summary>Runs <paramref name="work"/> under a progress bar on stderr (plain when stderr is not a terminal).</summary>
    public static T WithProgress<T>(string description, Func<IProgress<(double Done, double Total, string Note)>, T> work)
    {
        T result = default!;
        Status.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(description, maxValue: 1);
                var progress = new SynchronousProgress<(double Done, double Total, string Note)>(p =>
                {
                    task.MaxValue = Math.Max(p.Total, 1e-9);
                    task.Value = p.Done;
                    if (!string.IsNullOrEmpty(p.Note))
                        task.Description = $"{description} {Markup.Escape(p.Note)}";
                });
                result = work(progress);
                task.Value = task.MaxValue;
            });
        return result;
    }

    /// <summary>Runs <paramref name="work"/> under progress bars on stderr, one per stage as it starts ("[2/5] encoding"),
    /// each with its own percentage, elapsed and remaining time.</summary>
    public static T WithStages<T>(string description, Func<IProgress<StageProgress>, T> work)
    {
        T result = default!;
        Status.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask? task = null;
                int number = 0;
                var progress = new SynchronousProgress<StageProgress>(p =>
                {
                    if (task is null || p.Number != number)
                    {
                        if (task is not null)
                            task.Value = task.MaxValue;
                        number = p.Number;
                        task = ctx.AddTask(Markup.Escape($"{description} [{p.Number}/{p.Count}] {p.Stage}"), maxValue: 1);
                    }
                    task.MaxValue = Math.Max(p.Total, 1e-9);
                    task.Value = p.Done;
                    task.Description = Markup.Escape($"{description} [{p.Number}/{p.Count}] {p.Stage} {p.Note}".TrimEnd());
                });
                result = work(progress);
                if (task is not null)
                    task.Value = task.MaxValue;
            });
        return result;
    }

    /// <summary>Bytes on disk of a model: its file, or every file of a model directory (native or Hugging Face).</summary>
    public static long FileBytes(string path)
        => Directory.Exists(path) ? new DirectoryInfo(path).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length) : new FileInfo(path).Length;

    public static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.00} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} B",
    };
}
