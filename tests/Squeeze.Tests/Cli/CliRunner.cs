using System.Diagnostics;
using System.Text.Json;

namespace Squeeze.Tests.Cli;

/// <summary>Runs the squeeze program in a child process (the CLI writes to the process's console).</summary>
internal static class CliRunner
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public JsonElement Json => JsonDocument.Parse(Stdout).RootElement;
    }

    public static Result Run(params string[] args) => Run(new Dictionary<string, string>(), args);

    /// <summary>Runs the program with <paramref name="environment"/> set on top of this process's environment.</summary>
    public static Result Run(IReadOnlyDictionary<string, string> environment, params string[] args)
        => RunIn(Environment.CurrentDirectory, environment, [], args);

    /// <summary>Runs the program in <paramref name="workingDirectory"/>, with <paramref name="environment"/> set on top of
    /// this process's environment and the variables in <paramref name="unset"/> removed from it.</summary>
    public static Result RunIn(string workingDirectory, IReadOnlyDictionary<string, string> environment, IEnumerable<string> unset, params string[] args)
    {
        string cli = Path.Combine(AppContext.BaseDirectory, "Squeeze.Cli.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, WorkingDirectory = workingDirectory };
        foreach (var (name, value) in environment)
            start.Environment[name] = value;
        foreach (string name in unset)
            start.Environment.Remove(name);
        start.ArgumentList.Add(cli);
        foreach (string a in args)
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException("squeeze " + string.Join(' ', args) + " did not finish in 3 minutes");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
