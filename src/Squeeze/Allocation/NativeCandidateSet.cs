using Squeeze.Calibration;
using Squeeze.Compression;
using Squeeze.Formats.HuggingFace;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Models;
using Squeeze.Tensors;
using Squeeze.Tuning;
using Squeeze.Weights;

namespace Squeeze.Allocation;

/// <summary>
/// Every 2-D tensor of a model encoded once in every native representation that fits it (<see cref="NativeRepresentation"/>:
/// uniform codes of any width and group, f16, and whatever other levels are given). Each tensor's candidates are written,
/// as the native format stores them, into a temporary safetensors file that is mapped read-only (its name removed at
/// once outside Windows): memory holds one tensor's candidates while they are made, and a composed selection reads its
/// candidates back, so the set itself is not held in memory (at the 8B shape its levels together are tens of GB). Sizes are of the
/// whole native model directory (weights file, config.json, tokenizer files): <see cref="Candidate.FileBytes"/> bounds
/// what a candidate adds (data and header entries, rounded up to <see cref="Grain"/>), so a selection that fits a budget
/// by those bounds fits it exactly; <see cref="FileBytes"/> is the exact size.
/// </summary>
public sealed class NativeCandidateSet : CandidateSet<NativeCandidate>
{
    /// <summary>Every candidate's <see cref="Candidate.FileBytes"/> is a multiple of this (<see cref="Grain"/>).</summary>
    public const long CandidateGrain = 64;
    private readonly long sideFiles; // config.json and the tokenizer files
    private readonly IReadOnlyList<SafetensorsFile> files; // each tensor's candidates, mapped
    private readonly Dictionary<string, int> indexOf;

    private NativeCandidateSet(Model source, IReadOnlyList<TensorCandidates<NativeCandidate>> tensors, IReadOnlyList<SafetensorsFile> files, long sideFiles, long overhead)
        : base(source, tensors)
    {
        this.files = files;
        this.sideFiles = sideFiles;
        Overhead = overhead;
        indexOf = tensors.Select((t, i) => (t.Name, i)).ToDictionary(x => x.Name, x => x.i, StringComparer.Ordinal);
    }

    /// <summary>The side files, the weights file's fixed tensors and header (with the 2-D tensors absent), its padding,
    /// rounded up to the grain.</summary>
    public override long Overhead { get; }

    /// <inheritdoc/>
    public override long Grain => CandidateGrain;

    /// <summary>Encodes every 2-D tensor of <paramref name="model"/> in every representation of
    /// <paramref name="representations"/> that fits it, one block at a time: each block's tensors with that block's
    /// statistics from <paramref name="blocks"/> (<see cref="LayerwiseCalibrator.Blocks"/> as it calibrates,
    /// or <see cref="BlockStatistics.Of"/> of a statistics file), or with none when it is null.</summary>
    /// <param name="model">The model.</param>
    /// <param name="blocks">Each block's statistics in turn, or null for the levels that need none.</param>
    /// <param name="options">How tensors are encoded (method, GPTQ settings, threads).</param>
    /// <param name="tokenUsage">How much the model uses each token on the calibration text, or null (see
    /// <see cref="TensorEncoder.TokenUsage"/>).</param>
    /// <param name="representations">The levels.</param>
    /// <param name="progress">Candidates encoded.</param>
    /// <param name="cancellationToken">Stops between candidates.</param>
    /// <exception cref="ArgumentException">A tensor that no representation fits, or token usage of another vocabulary.</exception>
    public static NativeCandidateSet Build(Model model, IEnumerable<BlockStatistics>? blocks, CompressionOptions options, double[]? tokenUsage,
        IReadOnlyList<NativeRepresentation> representations, IProgress<CandidateProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(representations);
        // Stacks of routed experts ([experts, rows, columns]) are encoded expert by expert: a level fits them when it fits one.
        var matrices = model.Tensors.Where(IsMatrix).Select(t => model.Weight(t.Name)).Concat(model.Weights).ToList();
        var shapes = new TensorEncoder(model, null, options, cancellationToken, tokenUsage);
        var work = matrices.Select(w => (Weight: w, Levels: representations.Where(r => r.Fits(shapes.IsStacked(w.Name) ? shapes.ForExpert(w.Name, 0) : shapes, w.Name)).Distinct().ToList())).ToList();
        foreach (var (w, levels) in work)
        {
            if (levels.Count == 0)
                throw new ArgumentException($"tensor '{w.Name}' [{w.Rows}, {w.Columns}]: none of the representations {string.Join(", ", representations)} fits it", nameof(representations));
        }
        int total = work.Sum(w => w.Levels.Count), done = 0;
        var tensors = new TensorCandidates<NativeCandidate>[work.Count];
        var files = new List<SafetensorsFile>();
        try
        {
            foreach (var (encoder, _, indices) in CandidateBlocks.Of(model, [.. work.Select(w => w.Weight.Name)], blocks, options, tokenUsage, cancellationToken))
            {
                foreach (int i in indices)
                {
                    var (weight, levels) = work[i];
                    var list = new List<NativeCandidate>(levels.Count);
                    var writer = new SafetensorsWriter();
                    var sink = new NativeTensorSink(writer);
                    for (int k = 0; k < levels.Count; k++)
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        var level = levels[k];
                        progress?.Report(new CandidateProgress("encoding", done, total, $"{weight.Name} {level}"));
                        var encoded = encoder.IsStacked(weight.Name) ? level.EncodeExperts(encoder, weight.Name) : level.Encode(encoder, weight.Name);
                        long bytes = NativeModelWriter.WeightBytesBound(encoded.Weight);
                        string key = $"{weight.Name}#{k}";
                        writer.Metadata[key] = sink.Store(key, encoded.Weight).ToJsonString();
                        list.Add(new NativeCandidate(encoded.Weight.Scheme, encoded.Weight.StoredBytes, level.Spec, RoundUp(bytes), encoded.Encoding, encoded.OutputError, double.NaN)
                        {
                            Stored = (files.Count, key),
                        });
                        done++;
                        // The encoding's buffers (and the bound's copy of it) are garbage: freed before the next level's.
                        TensorEncoder.ReleaseEncodingBuffers();
                    }
                    files.Add(SafetensorsFile.Parse(NativeBuffer.MapTemporary(writer.FileLength(), writer.WriteTo), ownsBuffer: true));
                    // The tensor's candidates are in their file now: their buffers and the encodings' go back to the system.
                    Compressor.ReturnMemory();
                    list.Sort((a, b) => a.FileBytes != b.FileBytes ? a.FileBytes.CompareTo(b.FileBytes) : string.CompareOrdinal(a.Format, b.Format));
                    tensors[i] = new TensorCandidates<NativeCandidate>(weight.Name, [weight.Rows, weight.Columns], list);
                }
            }
            progress?.Report(new CandidateProgress("encoding", total, total, ""));

            var (side, overhead) = FixedFiles(model);
            return new NativeCandidateSet(model, tensors, files, side, overhead);
        }
        catch
        {
            foreach (var file in files)
                file.Dispose();
            throw;
        }
    }

    /// <summary>Upper bound of the header bytes one stored weight (one expert of a stack) adds to its tensor's candidate
    /// file: its scheme's metadata entry and one entry per companion tensor (name, dtype, shape, offsets). The default
    /// levels' largest on stories15M, a four-tier row split of the token embedding, takes about 2.2 KB, a uniform level
    /// about 420 bytes (<c>NativeEstimateTests</c> checks candidate files of every family against it).</summary>
    public const long CandidateHeaderBound = 4096;

    /// <summary>An upper bound, known before any work, of the bytes of the candidate files <see cref="Build"/> writes to the
    /// temporary directory for <paramref name="matrices"/> (<see cref="Matrices"/>; [rows, columns], or [experts, rows,
    /// columns] for a stack of routed experts) in every representation of <paramref name="representations"/> that may fit
    /// each (<see cref="NativeRepresentation.MayFit"/>): per tensor a file's length prefix and header padding, per
    /// candidate its <see cref="NativeRepresentation.StoredBytesBound"/> and <see cref="CandidateHeaderBound"/> per
    /// stored weight.</summary>
    public static long CandidateFileBytes(IReadOnlyList<(string Name, long[] Shape)> matrices, IReadOnlyList<NativeRepresentation> representations)
    {
        ArgumentNullException.ThrowIfNull(matrices);
        ArgumentNullException.ThrowIfNull(representations);
        return matrices.Sum(m => 16 + CandidateBounds(m, representations).Sum(b => b + Stored(m) * CandidateHeaderBound));
    }

    /// <summary><see cref="NativeRepresentation.StoredBytesBound"/> of each representation of
    /// <paramref name="representations"/> that may fit <paramref name="matrix"/> (a stack's: every expert's), each once.</summary>
    public static IEnumerable<long> CandidateBounds((string Name, long[] Shape) matrix, IReadOnlyList<NativeRepresentation> representations)
    {
        ArgumentNullException.ThrowIfNull(matrix.Shape);
        ArgumentNullException.ThrowIfNull(representations);
        int rows = checked((int)matrix.Shape[^2]), columns = checked((int)matrix.Shape[^1]);
        return representations.Where(r => r.MayFit(matrix.Name, rows, columns)).Distinct().Select(r => Stored(matrix) * r.StoredBytesBound(rows, columns));
    }

    /// <summary>The tensors <see cref="Build"/> encodes, with their shapes: every 2-D tensor and stack of routed experts
    /// of <paramref name="model"/> and its own weights.</summary>
    public static IReadOnlyList<(string Name, long[] Shape)> Matrices(Model model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return [.. model.Tensors.Where(IsMatrix).Select(t => (t.Name, t.Shape)), .. model.Weights.Select(w => (w.Name, new long[] { w.Rows, w.Columns }))];
    }

    /// <summary>Bytes of the candidate files this set keeps mapped.</summary>
    public long CandidateFilesBytes => files.Sum(f => f.Buffer.Length);

    /// <summary>The bytes of <paramref name="model"/>'s native directory that no choice of levels changes, known before any
    /// work: config.json, the tokenizer files, and the weights file's header, fixed tensors (norms) and padding with the 2-D
    /// tensors absent, rounded up to the grain (<see cref="Overhead"/> of the set <see cref="Build"/> makes). A budget
    /// below it fits no selection.</summary>
    public static long FixedBytes(Model model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return FixedFiles(model).Overhead;
    }

    // The side files' bytes, and the overhead: side files, weights file without the 2-D tensors (header, fixed tensors,
    // padding) and its 8-byte length, rounded up to the grain.
    private static (long Side, long Overhead) FixedFiles(Model model)
    {
        long side = SideFileBytes(model);
        var names = model.Tensors.Where(IsMatrix).Select(t => t.Name).Concat(model.Weights.Select(w => w.Name)).ToHashSet(StringComparer.Ordinal);
        using var skeleton = new Model(model.Config, model.Vocabulary, [.. model.Tensors.Where(t => !names.Contains(t.Name))], model.Source, []);
        long overhead = side + NativeModelWriter.WeightsFileLength(skeleton, new Dictionary<string, LinearWeight>()) + 8;
        return (side, RoundUp(overhead));
    }

    // Weights a matrix is stored as: one, or one per expert of a stack.
    private static long Stored((string Name, long[] Shape) matrix) => matrix.Shape.Length == 3 ? matrix.Shape[0] : 1;

    private static bool IsMatrix(Tensor t) => t.Shape.Length == 2 || (t.Shape.Length == 3 && TensorNames.IsExperts(t.Name));

    /// <summary>The exact size of the directory <see cref="Write"/> writes for <paramref name="selection"/>.</summary>
    public override long FileBytes(IReadOnlyList<int> selection)
    {
        Check(selection);
        return sideFiles + NativeModelWriter.WeightsFileLength(Source, Replacements(selection));
    }

    /// <inheritdoc/>
    public override Model Compose(IReadOnlyList<int> selection)
        => Source.WithWeights(Replacements(selection).Values);

    /// <summary>Writes the native model directory of <paramref name="selection"/> to <paramref name="path"/> (must not
    /// exist or be empty) and returns its size, the sum of its files, which is <see cref="FileBytes"/>.</summary>
    /// <exception cref="InvalidOperationException">The written size differs from <see cref="FileBytes"/> (a bug, never expected).</exception>
    public override long Write(IReadOnlyList<int> selection, string path, TuningResult? tuning = null)
    {
        long expected = FileBytes(selection);
        var replacements = Replacements(selection);
        foreach (var weight in tuning?.Weights ?? [])
            replacements[weight.Name] = replacements.ContainsKey(weight.Name) ? weight : throw new ArgumentException($"the tuning's '{weight.Name}' is not a tensor of the selection", nameof(tuning));
        using var tuned = tuning is null ? null : Source.WithTensors(tuning.NormTensors(Source));
        var files = NativeModelWriter.Write(tuned ?? Source, path, replacements);
        long written = files.Sum(f => new FileInfo(Path.Combine(path, f)).Length);
        if (written != expected)
            throw new InvalidOperationException($"{path}: wrote {written:N0} bytes, the size function said {expected:N0}");
        return written;
    }

    /// <summary>Releases the mapped candidate files (outside Windows their names are gone already; on Windows they are
    /// deleted now).</summary>
    public override void Dispose()
    {
        foreach (var file in files)
            file.Dispose();
    }

    /// <summary>The weight of a candidate of tensor <paramref name="name"/>, read back from its mapped file.</summary>
    internal LinearWeight Weight(string name, NativeCandidate candidate)
    {
        var (file, key) = candidate.Stored;
        var shape = Tensors[indexOf[name]].Shape;
        var source = new NativeTensorSource(files[file], NativeFormat.Version);
        return source.Read(NativeSchemes.Parse(files[file].Metadata[key]), name, key, checked((int)shape[0]), checked((int)shape[1]));
    }

    private Dictionary<string, LinearWeight> Replacements(IReadOnlyList<int> selection)
        => Selected(selection).ToDictionary(p => p.Key, p => Weight(p.Key, p.Value), StringComparer.Ordinal);

    private static long RoundUp(long bytes) => (bytes + CandidateGrain - 1) / CandidateGrain * CandidateGrain;

    // config.json and the tokenizer files do not depend on the weights: write them once to measure them.
    private static long SideFileBytes(Model model)
    {
        string directory = Path.Combine(Path.GetTempPath(), $"squeeze-side-{Guid.NewGuid():N}");
        Directory.CreateDirectory(directory);
        try
        {
            HuggingFaceWriter.WriteConfig(Path.Combine(directory, NativeFormat.ConfigFile), model, torchDtype: "float32");
            HuggingFaceWriter.WriteTokenizer(model.Vocabulary, model.Source, directory);
            return Directory.EnumerateFiles(directory).Sum(f => new FileInfo(f).Length);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
