using Squeeze.Tests.Cli;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Zip;

/// <summary><c>squeeze zip</c> / <c>unzip</c> in child processes: the .sqz file has the same bytes at every SIMD level
/// (SQUEEZE_SIMD=scalar, avx2, avx512) and thread count, and unzip restores the input at each.</summary>
public class ZipCommandTests
{
    private static string[] Model260K => [SharedData.Stories260K, "--tokenizer", SharedData.Stories260KTokenizer];

    [Fact]
    public void Files_are_identical_across_simd_levels_and_threads()
    {
        string directory = Directory.CreateTempSubdirectory("squeeze-zip-").FullName;
        try
        {
            string input = Path.Combine(directory, "in.txt");
            byte[] text = File.ReadAllBytes(SharedData.Corpus("tinystories-sample.txt"))[..2500];
            File.WriteAllBytes(input, [.. text, 0xFF, 0x00, 0xC3]);
            byte[]? first = null;
            foreach (var (simd, threads) in new[] { ("scalar", "1"), ("avx2", "2"), ("avx512", "1"), ("avx512", "2") })
            {
                string sqz = Path.Combine(directory, $"{simd}-{threads}.sqz");
                var zip = CliRunner.Run(new Dictionary<string, string> { ["SQUEEZE_SIMD"] = simd },
                    ["zip", .. Model260K, input, "-o", sqz, "--threads", threads, "--segment-bytes", "600", "--ctx", "128"]);
                Assert.True(zip.ExitCode == 0, zip.Stderr);
                Assert.Contains("bits per byte", zip.Stdout, StringComparison.Ordinal);
                byte[] bytes = File.ReadAllBytes(sqz);
                first ??= bytes;
                Assert.True(first.AsSpan().SequenceEqual(bytes), $"SQUEEZE_SIMD={simd} --threads {threads} wrote a different file");
                string output = Path.Combine(directory, $"{simd}-{threads}.out");
                var unzip = CliRunner.Run(new Dictionary<string, string> { ["SQUEEZE_SIMD"] = simd }, ["unzip", .. Model260K, sqz, "-o", output, "--threads", threads]);
                Assert.True(unzip.ExitCode == 0, unzip.Stderr);
                Assert.Equal(File.ReadAllBytes(input), File.ReadAllBytes(output));
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public void Wrong_model_and_corrupt_files_are_one_line_errors_and_leave_no_output()
    {
        string directory = Directory.CreateTempSubdirectory("squeeze-zip-").FullName;
        try
        {
            string input = Path.Combine(directory, "in.txt");
            File.WriteAllText(input, "Once upon a time, there was a cat.");
            string sqz = Path.Combine(directory, "in.sqz");
            Assert.Equal(0, CliRunner.Run(["zip", .. Model260K, input, "-o", sqz]).ExitCode);
            string output = Path.Combine(directory, "out.txt");
            var wrong = CliRunner.Run(["unzip", SharedData.Stories15M, sqz, "-o", output]);
            Assert.Equal(1, wrong.ExitCode);
            Assert.Contains("another model", wrong.Stderr, StringComparison.Ordinal);
            byte[] bytes = File.ReadAllBytes(sqz);
            bytes[^6] ^= 1;
            File.WriteAllBytes(sqz, bytes);
            var corrupt = CliRunner.Run(["unzip", .. Model260K, sqz, "-o", output]);
            Assert.Equal(1, corrupt.ExitCode);
            Assert.Contains("corrupt", corrupt.Stderr, StringComparison.Ordinal);
            Assert.False(File.Exists(output));
            Assert.Single(Directory.GetFiles(directory, "*.tmp", SearchOption.AllDirectories).Append("x")); // no temporary left
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
