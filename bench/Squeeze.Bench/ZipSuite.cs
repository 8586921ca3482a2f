using System.Diagnostics;
using System.IO.Compression;
using Squeeze.Coding;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Pipeline;
using Squeeze.Models;
using Squeeze.Quantization;
using Squeeze.Zip;

namespace Squeeze.Bench;

/// <summary>
/// <c>squeeze zip</c> as a compressor: (1) byte-exact round trips of every corpus file, random binary, an empty and a
/// 1-byte input with stories260K; (2) tinystories-eval.txt with stories15M and its quantized versions beside gzip -9,
/// xz -9, zstd -19 and brotli 11: size, bits per byte, the model's cross-entropy bound and the streams' distance to it,
/// zip and unzip bytes/s; (3) determinism: the same file from two runs, the same output from unzip at 1 and 2 threads.
/// </summary>
internal static class ZipSuite
{
    public static void Run(string[] args)
    {
        string shared = Program.Shared(args);
        int threads = Program.Option(args, "--threads", 2);
        string work = Directory.CreateTempSubdirectory("squeeze-zip-bench-").FullName;
        try
        {
            Console.WriteLine($"`dotnet run -c Release --project bench/Squeeze.Bench -- zip --threads {threads}`");
            Console.WriteLine();
            EvalText(shared, threads, work);
            Console.WriteLine();
            RoundTrips(shared, threads, work);
        }
        finally
        {
            Directory.Delete(work, recursive: true);
        }
    }

    private static void RoundTrips(string shared, int threads, string work)
    {
        using var model = ModelLoader.Load(Path.Combine(shared, "models", "stories260K", "stories260K.bin"), Path.Combine(shared, "models", "stories260K", "tok512.bin"));
        var random = new byte[100_000];
        new Random(42).NextBytes(random);
        var inputs = Directory.GetFiles(Path.Combine(shared, "corpora")).Order(StringComparer.Ordinal).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f))).ToList();
        inputs.Add(("random binary", random));
        inputs.Add(("empty", []));
        inputs.Add(("1 byte", "A"u8.ToArray()));
        Console.WriteLine($"Round trips with stories260K ({threads} threads; load average at the start {LoadAverage()}):");
        Console.WriteLine();
        Console.WriteLine("| input | bytes | .sqz bytes | bits/byte | model bound bits/byte | escaped bytes | zip KB/s | unzip KB/s | byte-exact |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var (name, bytes) in inputs)
        {
            var (zip, unzip, same, _) = RoundTrip(model, bytes, threads, work);
            Console.WriteLine($"| {name} | {bytes.Length:N0} | {zip.OutputBytes:N0} | {zip.BitsPerByte:0.000} | {zip.ModelBitsPerByte:0.000} | {zip.Escapes:N0} | {zip.BytesPerSecond / 1000:0.0} | {unzip.BytesPerSecond / 1000:0.0} | {(same ? "yes" : "NO")} |");
            Console.Out.Flush();
        }
    }

    internal static (ZipResult Zip, UnzipResult Unzip, bool Same, byte[] Sqz) RoundTrip(Model model, byte[] input, int threads, string work, int unzipThreads = 0, int lookahead = -1)
    {
        string inPath = Path.Combine(work, "in"), sqz = Path.Combine(work, "in.sqz"), outPath = Path.Combine(work, "out");
        File.WriteAllBytes(inPath, input);
        var options = new ZipOptions { Threads = threads };
        var zip = ModelCodec.CompressFile(model, inPath, sqz, lookahead < 0 ? options : options with { Lookahead = lookahead });
        var unzip = ModelCodec.DecompressFile(model, sqz, outPath, unzipThreads > 0 ? unzipThreads : threads);
        return (zip, unzip, File.ReadAllBytes(outPath).AsSpan().SequenceEqual(input), File.ReadAllBytes(sqz));
    }

    private static void EvalText(string shared, int threads, string work)
    {
        string evalPath = Path.Combine(shared, "corpora", "tinystories-eval.txt");
        byte[] text = File.ReadAllBytes(evalPath);
        Console.WriteLine($"tinystories-eval.txt ({text.Length:N0} bytes), {threads} threads; load average at the start {LoadAverage()}:");
        Console.WriteLine();
        Console.WriteLine("| compressor | bytes | bits/byte | ratio | xz -9 / this | model bound bits/byte | streams vs bound | breaks / BOS | zip KB/s | unzip KB/s |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        var general = GeneralCompressors(evalPath);
        long xz = general.Single(g => g.Name == "xz -9").Bytes;
        foreach (var (name, size) in general)
            Console.WriteLine($"| {name} | {(size < 0 ? "not installed" : size.ToString("N0"))} | {(size < 0 ? "" : (8.0 * size / text.Length).ToString("0.000"))} | {(size < 0 ? "" : ((double)text.Length / size).ToString("0.00"))} | {(size < 0 || xz < 0 ? "" : ((double)xz / size).ToString("0.00"))} | | | | | |");

        string models = Path.Combine(shared, "models");
        using var f32 = ModelLoader.Load(Path.Combine(models, "stories15M", "stories15M.bin"));
        var files = new List<(string Name, string Path, int Lookahead)>
        {
            ("stories15M F32, plain parse (--lookahead 0)", Path.Combine(models, "stories15M", "stories15M.bin"), 0),
            ("stories15M F32", Path.Combine(models, "stories15M", "stories15M.bin"), -1),
        };
        string q8 = Path.Combine(work, "stories15M-Q8_0.gguf"), q4 = Path.Combine(work, "stories15M-Q4_0-pure.gguf"), gptq = Path.Combine(work, "stories15M-Q4_0-pure-gptq.gguf");
        GgufQuantizer.Write(f32, QuantizationMix.Plan(f32, QuantizationMix.Q8_0, [], pure: false), q8);
        GgufQuantizer.Write(f32, QuantizationMix.Plan(f32, QuantizationMix.Q4_0, [], pure: true), q4);
        CompressionPipeline.Run(f32, new CompressionJob
        {
            Target = new MixTarget(QuantizationMix.Q4_0, Pure: true),
            Method = CompressionMethod.Gptq,
            CalibrationText = File.ReadAllText(Path.Combine(shared, "corpora", "tinystories-calib.txt")),
            Threads = threads,
            Output = gptq,
        });
        files.Add(("stories15M Q8_0 (squeeze convert)", q8, -1));
        files.Add(("stories15M Q4_0 pure (squeeze convert, RTN)", q4, -1));
        files.Add(("stories15M Q4_0 pure (squeeze compress, GPTQ)", gptq, -1));
        byte[]? first = null;
        foreach (var (name, path, lookahead) in files)
        {
            using var model = path == files[0].Path ? null : ModelLoader.Load(path);
            var (zip, unzip, same, sqz) = RoundTrip(model ?? f32, text, threads, work, lookahead: lookahead);
            if (!same)
                throw new InvalidOperationException($"{name}: unzip did not restore the input");
            Console.WriteLine($"| squeeze zip, {name} | {zip.OutputBytes:N0} | {zip.BitsPerByte:0.000} | {zip.Ratio:0.00} | {(xz < 0 ? "" : ((double)xz / zip.OutputBytes).ToString("0.00"))} | {zip.ModelBitsPerByte:0.000} | {zip.StreamOverhead * 100:+0.00;-0.00;0.00}% | {zip.Breaks:N0} / {zip.BosTokens:N0} | {zip.BytesPerSecond / 1000:0.0} | {unzip.BytesPerSecond / 1000:0.0} |");
            Console.Out.Flush();
            if (lookahead < 0)
                first ??= sqz;
        }

        // Determinism: a second F32 run writes the same bytes; unzip at 1 thread restores the same output.
        var (again, unzip1, same1, sqzAgain) = RoundTrip(f32, text, threads, work, unzipThreads: 1);
        Console.WriteLine();
        Console.WriteLine($"Determinism (stories15M F32): second zip run {(sqzAgain.AsSpan().SequenceEqual(first) ? "byte-identical" : "DIFFERENT")} ({again.OutputBytes:N0} bytes); " +
            $"unzip with 1 thread {(same1 ? "byte-exact" : "WRONG")} ({unzip1.BytesPerSecond / 1000:0.0} KB/s), with {threads} threads byte-exact (above).");

        using var small = ModelLoader.Load(Path.Combine(models, "stories260K", "stories260K.bin"), Path.Combine(models, "stories260K", "tok512.bin"));
        var (z260, u260, s260, _) = RoundTrip(small, text, threads, work);
        Console.WriteLine($"stories260K on the same text: {z260.OutputBytes:N0} bytes, {z260.BitsPerByte:0.000} bits/byte, zip {z260.BytesPerSecond / 1000:0.0} KB/s, unzip {u260.BytesPerSecond / 1000:0.0} KB/s, {(s260 ? "byte-exact" : "WRONG")}.");
    }

    /// <summary>Bytes the general compressors write for the file: gzip -9, xz -9 (−1 when the program is not
    /// installed), zstd -19 and brotli 11.</summary>
    internal static IReadOnlyList<(string Name, long Bytes)> GeneralCompressors(string path)
    {
        byte[] text = File.ReadAllBytes(path);
        return
        [
            ("gzip -9", External("gzip", "-9 -c", path)),
            ("xz -9", External("xz", "-9 -c", path)),
            ("zstd -19 (ZstdSharp)", new ZstdSharp.Compressor(19).Wrap(text).Length),
            ("brotli 11 (System.IO.Compression)", Brotli(text)),
        ];
    }

    /// <summary>The 1-minute load average (Linux), to judge how much of the machine the timings had.</summary>
    internal static string LoadAverage()
        => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "unknown";

    private static long Brotli(byte[] data)
    {
        using var output = new MemoryStream();
        using (var brotli = new BrotliStream(output, new BrotliCompressionOptions { Quality = 11 }, leaveOpen: true))
            brotli.Write(data);
        return output.Length;
    }

    /// <summary>Bytes a command-line compressor writes to stdout, or −1 when it is not installed.</summary>
    private static long External(string program, string arguments, string path)
    {
        try
        {
            var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, UseShellExecute = false };
            foreach (string a in arguments.Split(' '))
                start.ArgumentList.Add(a);
            start.ArgumentList.Add(path);
            using var process = Process.Start(start)!;
            using var counter = new MemoryStream();
            process.StandardOutput.BaseStream.CopyTo(counter);
            process.WaitForExit();
            return process.ExitCode == 0 ? counter.Length : -1;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1;
        }
    }
}
