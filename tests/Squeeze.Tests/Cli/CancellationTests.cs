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
}
