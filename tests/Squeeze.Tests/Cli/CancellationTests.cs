using System.Diagnostics;
using System.Runtime.InteropServices;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Cli;

/// <summary>Ctrl+C during a long job, sent to a real child process: it stops soon, says so in one line, exits 130 and
/// leaves neither its output nor the candidate file it was filling.</summary>
public sealed partial class CancellationTests
{
    private const int SigInt = 2;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int kill(int pid, int signal);

    [Fact]
    public async Task Ctrl_c_during_a_budget_search_stops_and_leaves_no_file()
    {
        string temp = Directory.CreateTempSubdirectory("squeeze-cancel-").FullName;
        string output = Path.Combine(temp, "out.gguf");
        string candidates = Path.Combine(temp, "tmp");
        Directory.CreateDirectory(candidates);
        try
        {
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
            start.Environment["TMPDIR"] = candidates + "/";
            foreach (string a in new[] { Path.Combine(AppContext.BaseDirectory, "Squeeze.Cli.dll"), "compress", SharedData.Stories15M, "--target-bpw", "6",
                         "--calib", SharedData.Corpus("tinystories-calib.txt"), "--tokens", "2048", "--threads", "2", "-o", output })
                start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            process.StandardInput.Close();
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();

            // The candidate file appears once calibration is done and encoding has begun.
            var clock = Stopwatch.StartNew();
            while (!Directory.EnumerateFiles(candidates, "squeeze-candidates-*").Any())
            {
                if (process.HasExited)
                    Assert.Fail($"squeeze ended before encoding: {await stderr}");
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(3), "no candidate file after 3 minutes");
                await Task.Delay(50);
            }
            await Task.Delay(500);
            Assert.Equal(0, kill(process.Id, SigInt));
            var signalled = Stopwatch.StartNew();
            Assert.True(process.WaitForExit(TimeSpan.FromSeconds(60)), "squeeze did not stop within 60 s of Ctrl+C");
            double seconds = signalled.Elapsed.TotalSeconds;

            Assert.Equal(130, process.ExitCode);
            Assert.Contains("squeeze: cancelled", await stderr);
            Assert.Equal("", await stdout);
            Assert.Empty(Directory.EnumerateFileSystemEntries(candidates));
            Assert.Equal([candidates], Directory.EnumerateFileSystemEntries(temp));
            // One tensor's encoding or one layer's forward pass of stories15M is far below a second; allow for a loaded machine.
            Assert.True(seconds < 10, $"took {seconds:0.0} s to stop");
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Ctrl_c_during_a_named_mix_leaves_no_file_or_only_the_resume_state_that_finishes_the_job(bool resume)
    {
        string temp = Directory.CreateTempSubdirectory("squeeze-cancel-mix-").FullName;
        string output = Path.Combine(temp, "out.gguf");
        try
        {
            string[] arguments = [Path.Combine(AppContext.BaseDirectory, "Squeeze.Cli.dll"), "compress", SharedData.Stories15M, "--type", "Q4_K_M", "--method", "gptq",
                "--calib", SharedData.Corpus("tinystories-calib.txt"), "--tokens", "2048", "--threads", "2", "-o", output, .. resume ? ["--resume"] : Array.Empty<string>()];
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
            foreach (string a in arguments)
                start.ArgumentList.Add(a);
            using var process = Process.Start(start)!;
            process.StandardInput.Close();
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();

            // The output's temporary file (or the resume state's partial file) appears once encoding has begun; then the
            // second block is let begin, so that one block is on record.
            var clock = Stopwatch.StartNew();
            while (!Directory.EnumerateFileSystemEntries(temp).Any())
            {
                if (process.HasExited)
                    Assert.Fail($"squeeze ended before encoding: {await stderr}");
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(3), "no temporary file after 3 minutes");
                await Task.Delay(50);
            }
            string state = Path.Combine(temp, ".out.gguf.resume");
            while (resume && !File.Exists(Path.Combine(state, "state.json")))
            {
                if (process.HasExited)
                    Assert.Fail($"squeeze ended before its first block was saved: {await stderr}");
                Assert.True(clock.Elapsed < TimeSpan.FromMinutes(3), "no saved block after 3 minutes");
                await Task.Delay(50);
            }
            Assert.Equal(0, kill(process.Id, SigInt));
            Assert.True(process.WaitForExit(TimeSpan.FromSeconds(60)), "squeeze did not stop within 60 s of Ctrl+C");
            Assert.Equal(130, process.ExitCode);
            Assert.Contains("squeeze: cancelled", await stderr);
            Assert.Equal("", await stdout);
            Assert.False(File.Exists(output));
            if (!resume)
            {
                Assert.Empty(Directory.EnumerateFileSystemEntries(temp));
                return;
            }
            // Only the state is left, and the same command finishes from it.
            Assert.Equal([state], Directory.EnumerateFileSystemEntries(temp));
            var finish = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
            foreach (string a in arguments.Append("--json"))
                finish.ArgumentList.Add(a);
            using var second = Process.Start(finish)!;
            second.StandardInput.Close();
            var secondErr = second.StandardError.ReadToEndAsync();
            string json = await second.StandardOutput.ReadToEndAsync();
            Assert.True(second.WaitForExit(TimeSpan.FromMinutes(5)), "the resumed job did not finish within 5 minutes");
            Assert.True(second.ExitCode == 0, await secondErr);
            Assert.StartsWith("resumed at layer ", System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("note").GetString());
            Assert.Equal([output], Directory.EnumerateFileSystemEntries(temp));
        }
        finally
        {
            Directory.Delete(temp, recursive: true);
        }
    }
}
