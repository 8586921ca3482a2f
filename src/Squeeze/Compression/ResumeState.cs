using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Squeeze.Compression;

/// <summary>
/// Where a resumable compression (<see cref="CompressionOptions.Resume"/>) keeps its progress: a hidden directory beside
/// the output, <c>.NAME.resume</c>, holding the output file as far as it is written (<c>partial.gguf</c>), the residual
/// stream at the next block's input (<c>stream-L.bin</c>) and <c>state.json</c> (the job's fingerprint, the next block,
/// the reports of the tensors written, AWQ's factors). It is saved after each finished block — the file flushed first,
/// then the stream, then the state renamed into place — so an interruption at any moment leaves the last finished block
/// on record; the job started again with the same inputs and options continues from there and writes the same bytes.
/// </summary>
internal sealed class ResumeState
{
    private const string StateFile = "state.json";

    private ResumeState(string directory, ulong fingerprint, Record record)
    {
        Directory = directory;
        Fingerprint = fingerprint;
        Saved = record;
    }

    /// <summary>The state directory.</summary>
    public string Directory { get; }

    /// <summary>The job's fingerprint; a saved state of another job is not used.</summary>
    public ulong Fingerprint { get; }

    /// <summary>What was saved last (an empty record when starting).</summary>
    public Record Saved { get; private set; }

    /// <summary>Where the output is written until it is complete.</summary>
    public string PartialFile => Path.Combine(Directory, "partial.gguf");

    /// <summary>What is saved after each block.</summary>
    /// <param name="Fingerprint">The job's fingerprint.</param>
    /// <param name="NextLayer">The first block not finished.</param>
    /// <param name="Tensors">The reports of the tensors written so far.</param>
    /// <param name="AwqAlphas">AWQ's factors so far.</param>
    /// <param name="CalibrationSeconds">Time spent calibrating so far.</param>
    /// <param name="LayerSeconds">Time each finished block took.</param>
    public sealed record Record(ulong Fingerprint, int NextLayer, List<TensorReport> Tensors, List<float> AwqAlphas, double CalibrationSeconds, List<double> LayerSeconds);

    /// <summary>The state directory of <paramref name="outputPath"/>.</summary>
    public static string DirectoryFor(string outputPath)
    {
        string full = Path.GetFullPath(outputPath);
        return Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.resume");
    }

    /// <summary>XxHash64 of <paramref name="description"/>: everything that decides the output's bytes (the model's
    /// identity and source, the job's settings, the calibration text's hash).</summary>
    public static ulong FingerprintOf(string description) => XxHash64.HashToUInt64(Encoding.UTF8.GetBytes(description));

    // Errors may be NaN (no statistics): written as JSON's named literals.
    private static readonly JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>Opens the state of <paramref name="outputPath"/>'s job: the saved one when it exists with the same
    /// fingerprint and its partial file is there, otherwise a fresh, empty directory.</summary>
    public static ResumeState Open(string outputPath, ulong fingerprint)
    {
        string directory = DirectoryFor(outputPath);
        string statePath = Path.Combine(directory, StateFile);
        if (File.Exists(statePath))
        {
            try
            {
                var record = JsonSerializer.Deserialize<Record>(File.ReadAllText(statePath), Json);
                var state = new ResumeState(directory, fingerprint, record!);
                if (record is not null && record.Fingerprint == fingerprint && File.Exists(state.PartialFile)
                    && (record.NextLayer == 0 || File.Exists(state.StreamPath(record.NextLayer))))
                    return state;
            }
            catch (JsonException)
            {
                // A state that cannot be read is started over.
            }
        }
        if (System.IO.Directory.Exists(directory))
            System.IO.Directory.Delete(directory, recursive: true);
        System.IO.Directory.CreateDirectory(directory);
        return new ResumeState(directory, fingerprint, new Record(fingerprint, 0, [], [], 0, []));
    }

    /// <summary>True when there is saved progress to continue from.</summary>
    public bool Resuming => Saved.NextLayer > 0;

    /// <summary>Reads the saved residual stream into <paramref name="stream"/> (chunks of the saved length).</summary>
    public void LoadStream(float[][] stream)
    {
        using var file = File.OpenRead(StreamPath(Saved.NextLayer));
        foreach (var chunk in stream)
            file.ReadExactly(MemoryMarshal.AsBytes(chunk.AsSpan()));
        if (file.Position != file.Length)
            throw new InvalidDataException($"{file.Name}: longer than the residual stream it should hold");
    }

    /// <summary>Records that every block before <paramref name="record"/>'s next layer is finished: the stream at its input
    /// (null when the job does not calibrate) is written, then the state renamed over the last.</summary>
    public void Save(Record record, float[][]? stream)
    {
        if (stream is not null)
        {
            string path = StreamPath(record.NextLayer);
            using (var file = new FileStream(path + ".tmp", FileMode.Create, FileAccess.Write))
            {
                foreach (var chunk in stream)
                    file.Write(MemoryMarshal.AsBytes(chunk.AsSpan()));
                file.Flush(flushToDisk: true);
            }
            File.Move(path + ".tmp", path, overwrite: true);
        }
        string state = Path.Combine(Directory, StateFile);
        File.WriteAllText(state + ".tmp", JsonSerializer.Serialize(record, Json));
        File.Move(state + ".tmp", state, overwrite: true);
        if (Saved.NextLayer != record.NextLayer)
            File.Delete(StreamPath(Saved.NextLayer));
        Saved = record;
    }

    /// <summary>Removes the directory: the job is done.</summary>
    public void Delete() => System.IO.Directory.Delete(Directory, recursive: true);

    private string StreamPath(int layer) => Path.Combine(Directory, $"stream-{layer}.bin");
}
