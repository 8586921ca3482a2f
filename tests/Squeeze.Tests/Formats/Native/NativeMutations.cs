using System.Buffers.Binary;
using System.Text;
using Squeeze.Formats;
using Squeeze.Formats.Native;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;

namespace Squeeze.Tests.Formats.Native;

/// <summary>
/// What the native schemes' bad-input tests share: decoding every row of a parsed file, and mutants of a file: 1–3 bytes flipped anywhere, one digit of the
/// header replaced, or one occurrence of a known header token replaced by another (the header length kept
/// consistent). Each mutant must parse and decode, or throw a <see cref="ModelFormatException"/> naming the file;
/// any other exception fails the test.
/// </summary>
internal static class NativeMutations
{
    /// <summary>Runs <paramref name="iterations"/> mutants of <paramref name="original"/> through <paramref name="parse"/>
    /// and returns how many loaded and how many were rejected.</summary>
    public static unsafe (int Loaded, int Rejected) Run(byte[] original, IReadOnlyList<string> swaps, int iterations, int seed, Action<SafetensorsFile> parse,
        bool structural = false)
    {
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        string header = Encoding.UTF8.GetString(original, 8, headerLength);
        byte[] data = original[(8 + headerLength)..];
        var digits = System.Text.RegularExpressions.Regex.Matches(header, "[0-9]");
        var random = new Random(seed);
        int loaded = 0, rejected = 0;
        for (int iteration = 0; iteration < iterations; iteration++)
        {
            byte[] mutant;
            string what;
            switch (random.Next(structural ? 5 : 3))
            {
                case 0:
                    mutant = (byte[])original.Clone();
                    int flips = random.Next(1, 4);
                    for (int k = 0; k < flips; k++)
                        mutant[random.Next(mutant.Length)] ^= (byte)random.Next(1, 256);
                    what = $"{flips} byte flips";
                    break;
                case 1:
                    {
                        var m = digits[random.Next(digits.Count)];
                        char digit = (char)('0' + random.Next(10));
                        mutant = Build(header[..m.Index] + digit + header[(m.Index + 1)..], data);
                        what = $"digit at {m.Index} = {digit}";
                        break;
                    }
                case 2:
                    {
                        string from = swaps[random.Next(swaps.Count)], to = swaps[random.Next(swaps.Count)];
                        int at = header.IndexOf(from, random.Next(header.Length), StringComparison.Ordinal);
                        if (at < 0)
                            at = header.IndexOf(from, StringComparison.Ordinal);
                        mutant = Build(at < 0 ? header : header[..at] + to + header[(at + from.Length)..], data);
                        what = $"'{from}' at {at} → '{to}'";
                        break;
                    }
                case 3:
                    mutant = original[..random.Next(0, original.Length)];
                    what = $"truncated to {mutant.Length}";
                    break;
                default:
                    {
                        int at = random.Next(header.Length);
                        int cut = random.Next(0, 4);
                        string insert = new([.. Enumerable.Range(0, random.Next(1, 4)).Select(_ => (char)random.Next(32, 127))]);
                        mutant = Build(header[..at] + insert + header[Math.Min(header.Length, at + cut)..], data);
                        what = $"'{insert}' at {at}";
                        break;
                    }
            }
            fixed (byte* p = mutant)
            {
                using var buffer = new ViewBuffer(p, mutant.Length, "mutant.safetensors");
                try
                {
                    using var file = SafetensorsFile.Parse(buffer, ownsBuffer: false);
                    parse(file);
                    loaded++;
                }
                catch (ModelFormatException e)
                {
                    Assert.Equal("mutant.safetensors", e.Path);
                    rejected++;
                }
                catch (Exception e)
                {
                    Assert.Fail($"iteration {iteration} ({what}): {e.GetType().Name}: {e.Message}\n{e.StackTrace}");
                }
            }
        }
        return (loaded, rejected);
    }

    /// <summary>Parses <paramref name="file"/> as native weights with the logical <paramref name="shapes"/> and decodes
    /// every row of every schemed weight; returns the rows decoded and the number of plain tensors.</summary>
    public static (int Rows, int Plain) ParseAndDecode(SafetensorsFile file, IReadOnlyDictionary<string, long[]> shapes)
    {
        var weights = NativeWeights.Parse(file, shapes);
        int rows = 0;
        foreach (var w in weights.Weights)
        {
            var row = new float[w.Columns];
            for (int r = 0; r < w.Rows; r++, rows++)
                w.DecodeRow(r, row);
        }
        return (rows, weights.Plain.Count);
    }

    /// <summary>Writes weights through the schemes into a native safetensors file (the lowest format version that holds
    /// them) in <paramref name="directory"/> and returns its path and the weights' logical shapes.</summary>
    public static (string Path, Dictionary<string, long[]> Shapes) WriteWeights(string directory, params (string Name, int Rows, int Columns, LinearWeight Weight)[] weights)
    {
        var writer = new SafetensorsWriter();
        var sink = new NativeTensorSink(writer);
        var shapes = new Dictionary<string, long[]>();
        foreach (var (name, rows, columns, weight) in weights)
        {
            writer.Metadata[NativeFormat.SchemeKeyPrefix + name] = sink.Store(name, weight).ToJsonString();
            shapes[name] = [rows, columns];
        }
        writer.Metadata[NativeFormat.FormatKey] = NativeFormat.FormatName;
        writer.Metadata[NativeFormat.VersionKey] = sink.Version.ToString(System.Globalization.CultureInfo.InvariantCulture);
        string path = Path.Combine(directory, $"{Guid.NewGuid():N}.safetensors");
        writer.Write(path);
        return (path, shapes);
    }

    /// <summary>Asserts that parsing and decoding the file at <paramref name="path"/> throws a
    /// <see cref="ModelFormatException"/> naming the file, with <paramref name="expected"/> in its message.</summary>
    public static void AssertRefused(string path, IReadOnlyDictionary<string, long[]> shapes, string expected)
    {
        using var file = SafetensorsFile.Open(path);
        var e = Assert.Throws<ModelFormatException>(() => ParseAndDecode(file, shapes));
        Assert.Equal(path, e.Path);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    /// <summary>Rewrites the file at <paramref name="path"/> through <paramref name="edit"/> (<see cref="Rewrite"/>) and asserts
    /// that the reader refuses it naming the file and <paramref name="expected"/> (<see cref="AssertRefused"/>).</summary>
    public static void AssertEditRefused(string path, IReadOnlyDictionary<string, long[]> shapes,
        Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>> edit, string expected)
    {
        Rewrite(path, edit);
        AssertRefused(path, shapes, expected);
    }

    /// <summary>Rewrites the safetensors file at <paramref name="path"/> with its metadata and tensors passed through
    /// <paramref name="edit"/>.</summary>
    public static void Rewrite(string path, Action<IDictionary<string, string>, Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>> edit)
    {
        var meta = new Dictionary<string, string>();
        var tensors = new Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)>();
        using (var file = SafetensorsFile.Open(path))
        {
            foreach (var (key, value) in file.Metadata)
                meta[key] = value;
            foreach (var t in file.Tensors)
                tensors[t.Name] = (t.DType, t.Shape, file.GetBytes(t).ToArray());
        }
        edit(meta, tensors);
        var writer = new SafetensorsWriter();
        foreach (var (key, value) in meta)
            writer.Metadata[key] = value;
        foreach (var (name, (dtype, shape, data)) in tensors)
            writer.Add(name, dtype, shape, data);
        writer.Write(path);
    }

    /// <summary>Replaces tensor <paramref name="name"/>'s data by a copy changed by <paramref name="change"/>.</summary>
    public static void Patch(Dictionary<string, (SafetensorsDType DType, long[] Shape, byte[] Data)> tensors, string name, Action<byte[]> change)
    {
        var data = tensors[name].Data.ToArray();
        change(data);
        tensors[name] = (tensors[name].DType, tensors[name].Shape, data);
    }

    /// <summary>A safetensors file of <paramref name="header"/> and <paramref name="data"/>.</summary>
    public static byte[] Build(string header, byte[] data)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)json.Length);
        json.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + json.Length);
        return bytes;
    }
}
