using System.Diagnostics;

namespace Squeeze.Tests.Kernels;

/// <summary>
/// Re-runs the kernel checks (<c>squeeze selftest kernels</c>) in child processes with the wide instruction sets switched
/// off, as CI on an older machine would run them: <c>DOTNET_EnableAVX512=0</c> leaves the AVX2 kernels,
/// <c>DOTNET_EnableAVX2=0</c> the scalar ones. The CLI assembly sits beside the test assembly (a project reference).
/// </summary>
public class FallbackTests
{
    [Theory]
    [InlineData("DOTNET_EnableAVX512", "Avx2")]
    [InlineData("DOTNET_EnableAVX2", "Scalar")]
    public async Task Kernels_agree_with_scalar_references_when_wide_instructions_are_off(string variable, string expectedLevel)
    {
        string cli = Path.Combine(AppContext.BaseDirectory, "Squeeze.Cli.dll");
        Assert.True(File.Exists(cli), $"{cli} not found");
        var start = new ProcessStartInfo(Environment.ProcessPath ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (!Path.GetFileNameWithoutExtension(start.FileName).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            start.FileName = "dotnet"; // the test host is not the muxer: find it on the PATH
        start.ArgumentList.Add(cli);
        start.ArgumentList.Add("selftest");
        start.ArgumentList.Add("kernels");
        start.Environment[variable] = "0";
        start.Environment.Remove("SQUEEZE_SIMD");
        using var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        Task<string> output = process.StandardOutput.ReadToEndAsync(timeout.Token), error = process.StandardError.ReadToEndAsync(timeout.Token);
        await process.WaitForExitAsync(timeout.Token);
        string log = await output + await error;
        Assert.True(process.ExitCode == 0, $"{variable}=0: exit code {process.ExitCode}\n{log}");
        Assert.Contains($"kernel level {expectedLevel};", log, StringComparison.Ordinal);
    }
}
