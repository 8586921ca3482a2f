using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Squeeze.Tests.Cli;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Server;

/// <summary><c>squeeze serve</c> as a program: it prints the address it listens on (the port the system chose for
/// <c>--port 0</c>), answers, and stops on Ctrl+C with exit code 0; bad options are one-line errors.</summary>
public sealed partial class ServeCommandTests
{
    private const int SigInt = 2;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int signal);

    [Fact]
    public async Task Serve_prints_its_address_answers_and_stops_on_ctrl_c()
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (string a in new[] { Path.Combine(AppContext.BaseDirectory, "Squeeze.Cli.dll"), "serve", SharedData.Stories15M, "--tokenizer", SharedData.Stories15MTokenizerModel,
                     "--port", "0", "--threads", "2", "--ctx", "128", "--parallel", "2", "--kv", "q8" })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        try
        {
            process.StandardInput.Close();
            var stderr = process.StandardError.ReadToEndAsync();
            string line = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromMinutes(2)) ?? "";
            Assert.StartsWith("squeeze serve: listening on http://127.0.0.1:", line, StringComparison.Ordinal);
            var address = new Uri(line["squeeze serve: listening on ".Length..]);
            using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(1) };
            using var response = await http.PostAsync("v1/completions", new StringContent("""{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}""", Encoding.UTF8, "application/json"));
            var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(5, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            string metrics = await http.GetStringAsync("metrics");
            Assert.Contains("squeeze_kv_cache_capacity_bytes{model=\"stories15M.bin\"}", metrics, StringComparison.Ordinal);

            Assert.Equal(0, kill(process.Id, SigInt));
            Assert.True(process.WaitForExit(TimeSpan.FromSeconds(30)), "squeeze serve did not stop within 30 s of Ctrl+C");
            Assert.Equal(0, process.ExitCode);
            Assert.DoesNotContain("error", await stderr, StringComparison.Ordinal);
        }
        finally
        {
            if (!process.HasExited)
                process.Kill(entireProcessTree: true);
        }
    }

    [Theory]
    [InlineData("--parallel", "0", "--parallel 0 must be at least 1")]
    [InlineData("--kv", "q3", "q3")]
    [InlineData("--chat-template", "nonsense-family", "no family Squeeze recognises")]
    public void Bad_options_are_one_line_errors(string option, string value, string expected)
    {
        var result = CliRunner.Run("serve", SharedData.Stories15M, "--tokenizer", SharedData.Stories15MTokenizerModel, "--port", "0", option, value);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains(expected, result.Stderr, StringComparison.Ordinal);
        Assert.Single(result.Stderr.Trim().Split('\n'));
    }
}
