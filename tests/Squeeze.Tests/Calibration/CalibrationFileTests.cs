using Squeeze.Calibration;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Runtime;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Calibration;

public sealed class CalibrationFileTests
{
    private static CalibrationStatistics Synthetic(int seed = 1)
    {
        var random = new Random(seed);
        var entries = new List<ActivationStatistics>();
        foreach (var (layer, kind, width, gram) in new[] { (-1, LinearInput.Output, 4, false), (0, LinearInput.Attention, 3, true), (0, LinearInput.FeedForwardDown, 5, false) })
        {
            var s = new ActivationStatistics(layer, kind, width, gram);
            var x = new float[6 * width];
            for (int i = 0; i < x.Length; i++)
                x[i] = (float)(random.NextDouble() - 0.5);
            s.Accumulate(x, 6);
            entries.Add(s);
        }
        // A routed experts' input: experts 0 and 2 see rows, expert 1 none (stored as a count of 0).
        var routed = new ActivationStatistics(1, LinearInput.ExpertFeedForward, 3, collectGram: true);
        foreach (var (expert, rows) in new[] { (0, 2), (2, 4) })
        {
            var x = new float[rows * 3];
            for (int i = 0; i < x.Length; i++)
                x[i] = (float)(random.NextDouble() - 0.5);
            routed.AccumulateExpert(expert, x, rows);
        }
        entries.Add(routed);
        return new CalibrationStatistics(new ModelIdentity(0x1234_5678_9abc_def0, "synthetic (llama, dim 4)"), 77, 6, 6, entries);
    }

    private static byte[] Bytes(CalibrationStatistics stats)
    {
        using var stream = new MemoryStream();
        CalibrationFile.Write(stream, stats);
        return stream.ToArray();
    }

    private static CalibrationStatistics Read(byte[] bytes)
    {
        using var stream = new MemoryStream(bytes, writable: false);
        return CalibrationFile.Read(stream, "stats.bin");
    }

    [Fact]
    public void Round_trip_keeps_every_value()
    {
        var stats = Synthetic();
        var back = Read(Bytes(stats));
        Assert.Equal(stats.Model, back.Model);
        Assert.Equal(stats.TextHash, back.TextHash);
        Assert.Equal(stats.TokenCount, back.TokenCount);
        Assert.Equal(stats.ContextLength, back.ContextLength);
        Assert.Equal(stats.Entries.Count, back.Entries.Count);
        for (int k = 0; k < stats.Entries.Count; k++)
        {
            var a = stats.Entries[k];
            var b = back.Entries[k];
            Assert.Equal((a.Layer, a.Kind, a.Width, a.TokenCount), (b.Layer, b.Kind, b.Width, b.TokenCount));
            Assert.Equal(a.SumSquares, b.SumSquares);
            Assert.Equal(a.SumAbs, b.SumAbs);
            Assert.Equal(a.MaxAbs, b.MaxAbs);
            Assert.Equal(a.Gram, b.Gram);
            Assert.Equal(a.Experts.Count, b.Experts.Count);
            for (int e = 0; e < a.Experts.Count; e++)
            {
                Assert.Equal(a.Experts[e]?.TokenCount, b.Experts[e]?.TokenCount);
                Assert.Equal(a.Experts[e]?.SumSquares, b.Experts[e]?.SumSquares);
                Assert.Equal(a.Experts[e]?.SumAbs, b.Experts[e]?.SumAbs);
                Assert.Equal(a.Experts[e]?.MaxAbs, b.Experts[e]?.MaxAbs);
                Assert.Equal(a.Experts[e]?.Gram, b.Experts[e]?.Gram);
            }
        }
        Assert.Equal([2L, 0, 4], back.Entries[^1].Experts.Select(e => e?.TokenCount ?? 0));
    }

    /// <summary>A file of version 1 (no expert counts) still reads: the same bytes without the version-2 fields.</summary>
    [Fact]
    public void Version_1_files_still_read()
    {
        var stats = Synthetic();
        var dense = new CalibrationStatistics(stats.Model, stats.TextHash, stats.TokenCount, stats.ContextLength, [.. stats.Entries.Where(e => e.Experts.Count == 0)]);
        byte[] v2 = Bytes(dense);
        // Remove each entry's i32 expert count (0): entries are header (21 bytes) + 20·width (+ 8·width(width+1)/2 with XᵀX).
        var v1 = new List<byte>(v2[..(8 + 4 + 8 + 2)]);
        int at = v1.Count;
        int descriptionLength = BitConverter.ToUInt16(v2, 20);
        v1.AddRange(v2[at..(at + descriptionLength + 8 + 8 + 4 + 4)]);
        at += descriptionLength + 24;
        foreach (var e in dense.Entries)
        {
            int length = 21 + 20 * e.Width + (e.Gram is null ? 0 : 8 * e.Width * (e.Width + 1) / 2);
            v1.AddRange(v2[at..(at + length)]);
            Assert.Equal(0, BitConverter.ToInt32(v2, at + length));
            at += length + 4;
        }
        Assert.Equal(v2.Length - 8, at);
        v1.AddRange(new byte[8]);
        byte[] bytes = [.. v1];
        BitConverter.TryWriteBytes(bytes.AsSpan(8), 1u);
        FixChecksum(bytes);
        var back = Read(bytes);
        Assert.Equal(dense.Entries.Select(e => (e.Layer, e.Kind, e.TokenCount)), back.Entries.Select(e => (e.Layer, e.Kind, e.TokenCount)));
        Assert.Equal(dense.Entries[1].Gram, back.Entries[1].Gram);
    }

    /// <summary>Experts whose token counts do not add up to their entry's, or experts on an input that is not routed, are
    /// named.</summary>
    [Fact]
    public void Experts_that_disagree_with_their_entry_are_named()
    {
        var stats = Synthetic();
        byte[] good = Bytes(stats);
        // The last entry's expert 2 token count sits 8 bytes before its sums (20·3 + 8·6 bytes), which end at the checksum.
        int expert2 = good.Length - 8 - (20 * 3 + 8 * 6) - 8;
        Assert.Equal(4, BitConverter.ToInt64(good, expert2));
        byte[] fewer = (byte[])good.Clone();
        BitConverter.TryWriteBytes(fewer.AsSpan(expert2), 3L);
        FixChecksum(fewer);
        Assert.Contains("entry 3: its experts hold 5 tokens, the entry 6", Assert.Throws<ModelFormatException>(() => Read(fewer)).Message);

        var notRouted = new ActivationStatistics(0, LinearInput.FeedForward, 3, collectGram: false);
        notRouted.AccumulateExpert(0, new float[] { 1, 2, 3 }, 1);
        byte[] bytes = Bytes(new CalibrationStatistics(stats.Model, stats.TextHash, stats.TokenCount, stats.ContextLength, [notRouted]));
        Assert.Contains("entry 0: FeedForward is not a routed experts' input but holds 1 experts", Assert.Throws<ModelFormatException>(() => Read(bytes)).Message);
    }

    [Fact]
    public void Collecting_block_by_block_into_a_file_writes_the_bytes_of_writing_all_statistics_at_once()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        string text = CalibratorTests.CalibrationText(6000);
        var options = new CalibrationOptions { ContextLength = 64, MaxTokens = 256, CollectGram = true, Threads = 2 };
        string dir = Directory.CreateTempSubdirectory("squeeze-calib-file-").FullName;
        try
        {
            string whole = Path.Combine(dir, "whole.stats"), streamed = Path.Combine(dir, "streamed.stats");
            var all = Calibrator.Run(model, text, options);
            CalibrationFile.Write(whole, all);
            var (summary, entries) = CalibrationFile.Collect(streamed, model, text, options);
            Assert.Equal(all.Entries.Count, entries);
            Assert.Equal(all.TokenCount, summary.TokenCount);
            Assert.Empty(summary.Entries);
            Assert.Equal(File.ReadAllBytes(whole), File.ReadAllBytes(streamed));
            Assert.Equal(["streamed.stats", "whole.stats"], Directory.GetFiles(dir).Select(Path.GetFileName).Order());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Each_kind_of_damage_is_named()
    {
        byte[] good = Bytes(Synthetic());
        byte[] magic = (byte[])good.Clone();
        magic[0] = (byte)'X';
        Assert.Contains("bad magic", Assert.Throws<ModelFormatException>(() => Read(magic)).Message);
        byte[] version = (byte[])good.Clone();
        version[8] = 9;
        Assert.Contains("version 9", Assert.Throws<ModelFormatException>(() => Read(version)).Message);
        var truncated = Assert.Throws<ModelFormatException>(() => Read(good[..^3]));
        Assert.Contains("stats.bin", truncated.Message);
        Assert.Contains("truncated", truncated.Message);
        byte[] flipped = (byte[])good.Clone();
        flipped[good.Length - 20] ^= 0x01;
        Assert.Contains("checksum", Assert.Throws<ModelFormatException>(() => Read(flipped)).Message);
        Assert.Contains("unexpected bytes", Assert.Throws<ModelFormatException>(() => Read([.. good, 0])).Message);
    }

    [Fact]
    public void Ten_thousand_mutations_either_load_or_throw_ModelFormatException()
    {
        byte[] good = Bytes(Synthetic());
        var random = new Random(42);
        int loaded = 0, refused = 0;
        for (int trial = 0; trial < 12_000; trial++)
        {
            byte[] bytes = (byte[])good.Clone();
            switch (trial % 4)
            {
                case 0: // flip random bits
                    for (int k = random.Next(1, 4); k > 0; k--)
                        bytes[random.Next(bytes.Length)] ^= (byte)(1 << random.Next(8));
                    break;
                case 1: // truncate
                    bytes = bytes[..random.Next(bytes.Length)];
                    break;
                case 2: // overwrite a 4-byte field with an extreme value, then fix the checksum so the field checks run
                    {
                        int at = random.Next(bytes.Length - 12);
                        int value = random.Next(4) switch { 0 => int.MaxValue, 1 => int.MinValue, 2 => -1, _ => random.Next() };
                        BitConverter.TryWriteBytes(bytes.AsSpan(at), value);
                        FixChecksum(bytes);
                        break;
                    }
                default: // random byte, checksum fixed
                    bytes[random.Next(bytes.Length - 8)] = (byte)random.Next(256);
                    FixChecksum(bytes);
                    break;
            }
            try
            {
                var stats = Read(bytes);
                Assert.All(stats.Entries, e => Assert.All(e.SumSquares, v => Assert.True(double.IsFinite(v) && v >= 0)));
                loaded++;
            }
            catch (ModelFormatException e)
            {
                Assert.StartsWith("stats.bin: ", e.Message);
                refused++;
            }
        }
        Assert.True(refused > 5000, $"only {refused} of {loaded + refused} mutations were refused");
    }

    private static void FixChecksum(byte[] bytes)
    {
        ulong hash = System.IO.Hashing.XxHash64.HashToUInt64(bytes.AsSpan(0, bytes.Length - 8));
        BitConverter.TryWriteBytes(bytes.AsSpan(bytes.Length - 8), hash);
    }

    [Fact]
    public void A_file_from_another_model_names_both_models()
    {
        using var small = Llama2cReader.Load(SharedData.Stories260K);
        using var large = Llama2cReader.Load(SharedData.Stories15M);
        var stats = Calibrator.Run(small, CalibratorTests.CalibrationText(3000), new CalibrationOptions { ContextLength = 32, MaxTokens = 32, Threads = 1 });
        string path = Path.Combine(Path.GetTempPath(), $"squeeze-calib-{Environment.ProcessId}-{Guid.NewGuid():N}.stats");
        try
        {
            CalibrationFile.Write(path, stats);
            Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, Path.GetFileName(path) + ".tmp*"));
            var back = CalibrationFile.Read(path, small);
            Assert.Equal(stats.Entries.Count, back.Entries.Count);
            var e = Assert.Throws<ModelFormatException>(() => CalibrationFile.Read(path, large));
            Assert.Contains(path, e.Message);
            Assert.Contains("stories260K", e.Message);
            Assert.Contains("stories15M", e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
