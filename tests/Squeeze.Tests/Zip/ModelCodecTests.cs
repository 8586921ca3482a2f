using System.Text;
using Squeeze.Coding;
using Squeeze.Formats;
using Squeeze.Models;
using Squeeze.Tests.Infrastructure;
using Squeeze.Weights;
using Squeeze.Zip;

namespace Squeeze.Tests.Zip;

/// <summary>Round trips of <see cref="ModelCodec"/> on stories260K (fast) over pieces of every corpus file, binary,
/// empty and 1-byte inputs; one stories15M round trip; corrupt and wrong-model files.</summary>
public class ModelCodecTests
{
    private static readonly Lazy<Model> Stories260K = new(() => ModelLoader.Load(SharedData.Stories260K, SharedData.Stories260KTokenizer));

    private static (byte[] Sqz, ZipResult Result) Zip(Model model, byte[] input, ZipOptions? options = null)
    {
        using var output = new MemoryStream();
        var result = ModelCodec.Compress(model, new MemoryStream(input), output, options ?? new ZipOptions { Threads = 2 });
        Assert.Equal(output.Length, result.OutputBytes);
        return (output.ToArray(), result);
    }

    private static byte[] Unzip(Model model, byte[] sqz, int threads = 2)
    {
        using var output = new MemoryStream();
        ModelCodec.Decompress(model, new MemoryStream(sqz), output, "test.sqz", threads);
        return output.ToArray();
    }

    public static TheoryData<string> Corpora => new(Directory.GetFiles(SharedData.Path("corpora")).Select(Path.GetFileName).Order()!);

    [Theory]
    [MemberData(nameof(Corpora))]
    public void Pieces_of_every_corpus_file_round_trip(string name)
    {
        byte[] all = File.ReadAllBytes(SharedData.Corpus(name));
        // three pieces: the start, a piece from the middle cut at an arbitrary byte (maybe inside a UTF-8 character), the end
        byte[][] pieces = [all[..Math.Min(all.Length, 1500)], all[(all.Length / 2 + 1)..Math.Min(all.Length, all.Length / 2 + 901)], all[Math.Max(0, all.Length - 700)..]];
        foreach (byte[] piece in pieces)
        {
            var (sqz, result) = Zip(Stories260K.Value, piece, new ZipOptions { Threads = 2, SegmentBytes = 400, Lanes = 3, Overlap = 8, ContextLength = 64 });
            Assert.Equal(piece, Unzip(Stories260K.Value, sqz));
            Assert.True(result.Segments >= 2);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3000)]
    public void Random_binary_round_trips(int length)
    {
        var bytes = new byte[length];
        new Random(length).NextBytes(bytes);
        var (sqz, result) = Zip(Stories260K.Value, bytes);
        Assert.Equal(bytes, Unzip(Stories260K.Value, sqz));
        Assert.Equal(length, result.InputBytes);
        // the model would expand random bytes: such blocks are stored as they are
        Assert.True(sqz.Length <= length + 110, $"{length} random bytes became {sqz.Length}");
    }

    [Fact]
    public void One_byte_and_empty_inputs_make_small_files()
    {
        var (empty, emptyResult) = Zip(Stories260K.Value, []);
        Assert.Empty(Unzip(Stories260K.Value, empty));
        Assert.Equal(0, emptyResult.Segments);
        var (one, _) = Zip(Stories260K.Value, "A"u8.ToArray());
        Assert.Equal("A"u8.ToArray(), Unzip(Stories260K.Value, one));
        Assert.True(one.Length < empty.Length + 16);
    }

    [Fact]
    public void Long_segments_restart_their_window_and_round_trip()
    {
        byte[] text = File.ReadAllBytes(SharedData.Corpus("tinystories-sample.txt"));
        foreach (int overlap in new[] { 0, 5 })
        {
            var (sqz, result) = Zip(Stories260K.Value, text, new ZipOptions { Threads = 1, ContextLength = 32, Overlap = overlap, SegmentBytes = 4096 });
            Assert.True(result.Tokens > 32 * 10);
            Assert.Equal(text, Unzip(Stories260K.Value, sqz, threads: 1));
        }
    }

    [Fact]
    public void Streams_come_close_to_the_models_cross_entropy()
    {
        byte[] text = File.ReadAllBytes(SharedData.Corpus("tinystories-sample.txt"));
        using var model = ModelLoader.Load(SharedData.Stories15M);
        var (sqz, result) = Zip(model, text[..1200]);
        Assert.Equal(text[..1200], Unzip(model, sqz));
        Assert.Equal(0, result.Escapes);
        // the streams: within 0.1% of Σ −log2 p, plus the 2 bytes that end each block's stream
        double streamBits = 8.0 * (result.OutputBytes - result.OverheadBytes);
        Assert.InRange(streamBits, 0.99 * result.ModelBits, 1.001 * result.ModelBits + 16);
        Assert.True(streamBits / 1200 < 1.2, $"{streamBits / 1200:0.000} bits per byte in the streams");
    }

    [Fact]
    public void The_same_input_gives_the_same_file_at_any_thread_count()
    {
        byte[] text = Encoding.UTF8.GetBytes(File.ReadAllText(SharedData.Corpus("alice29.txt"))[..3000]);
        var (a, _) = Zip(Stories260K.Value, text, new ZipOptions { Threads = 1, SegmentBytes = 500 });
        var (b, _) = Zip(Stories260K.Value, text, new ZipOptions { Threads = 2, SegmentBytes = 500 });
        Assert.Equal(a, b);
        Assert.Equal(Unzip(Stories260K.Value, a, threads: 1), Unzip(Stories260K.Value, a, threads: 2));
    }

    /// <summary>Stories sampled from stories15M, separated by blank lines (as in tinystories-eval), with LF or CRLF line ends.</summary>
    private static byte[] Stories(bool crlf)
    {
        string text = string.Join("\n\n\n\n", File.ReadAllText(SharedData.Corpus("tinystories-eval.txt")).Split("\n\n\n\n")[..4]);
        return Encoding.UTF8.GetBytes(crlf ? text.Replace("\n", "\r\n", StringComparison.Ordinal) : text);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_encoder_chooses_document_breaks_and_bos_tokens_where_they_pay(bool crlf)
    {
        byte[] text = Stories(crlf);
        using var model = ModelLoader.Load(SharedData.Stories15M);
        var (plain, plainResult) = Zip(model, text, new ZipOptions { Threads = 2, Lookahead = 0 });
        var (searched, result) = Zip(model, text, new ZipOptions { Threads = 2 });
        Assert.Equal(0, plainResult.Breaks + plainResult.BosTokens);
        Assert.True(result.Breaks >= 2, $"{result.Breaks} breaks");   // the stories start after blank lines
        Assert.True(result.BosTokens >= 1, $"{result.BosTokens} BOS"); // a sample runs on into a new story after a full stop
        Assert.True(searched.Length < 0.93 * plain.Length, $"{searched.Length} bytes against {plain.Length} without the search");
        Assert.Equal(text, Unzip(model, searched, threads: 1));
        if (crlf)
            return; // the line endings change the text, not the codec: one round trip is enough for them
        Assert.Equal(text, Unzip(model, plain, threads: 2));
        var (again, _) = Zip(model, text, new ZipOptions { Threads = 1 });
        Assert.Equal(searched, again);
    }

    [Fact]
    public void Trials_back_off_to_every_16th_candidate_when_they_keep_failing()
    {
        var trials = new Trials();
        for (int i = 0; i < 9; i++)
        {
            Assert.True(trials.Take());
            trials.Report(success: false);
        }
        // nine failures, no success: one candidate in 16
        Assert.Equal(1, Enumerable.Range(0, 16).Count(_ => trials.Take()));
        trials.Report(success: true); // 8 · 1 ≥ 10 − 8: every candidate again
        Assert.True(trials.Take());
        Assert.True(trials.Take());
    }

    [Fact]
    public void A_version_1_file_is_still_read()
    {
        // written by the build before version 2 (commit c44545e): squeeze zip stories260K.bin tinystories-sample.txt
        byte[] sqz = File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Zip", "Fixtures", "tinystories-sample.stories260K.v1.sqz"));
        Assert.Equal(1, BitConverter.ToUInt16(sqz, 8));
        Assert.Equal(File.ReadAllBytes(SharedData.Corpus("tinystories-sample.txt")), Unzip(Stories260K.Value, sqz));
    }

    [Fact]
    public void Another_model_is_refused_by_name()
    {
        var (sqz, _) = Zip(Stories260K.Value, "Once upon a time"u8.ToArray());
        using var other = ModelLoader.Load(SharedData.Stories15M);
        var e = Assert.Throws<InvalidDataException>(() => Unzip(other, sqz));
        Assert.Contains("another model (stories260K.bin", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_model_with_native_weights_round_trips_and_its_fingerprint_covers_them()
    {
        var model = Stories260K.Value;
        var name = TensorNames.Up(1);
        var values = model.Weight(name).Decode();
        var rows = model.Weight(name).Rows;
        var columns = model.Weight(name).Columns;
        using var three = model.WithWeights([Squeeze.Weights.UniformWeight.Encode(name, values, rows, columns, new Squeeze.Weights.UniformScheme(3, 32, false))]);
        using var four = model.WithWeights([Squeeze.Weights.UniformWeight.Encode(name, values, rows, columns, new Squeeze.Weights.UniformScheme(4, 32, false))]);
        Assert.NotEqual(ModelFingerprint.Of(three), ModelFingerprint.Of(four));
        Assert.NotEqual(ModelFingerprint.Of(model), ModelFingerprint.Of(three));
        byte[] text = "Once upon a time, there was a little dog. He liked to run."u8.ToArray();
        var (sqz, _) = Zip(three, text);
        Assert.Equal(text, Unzip(three, sqz, threads: 1));
        Assert.Throws<InvalidDataException>(() => Unzip(four, sqz));
    }

    [Fact]
    public void Every_corrupted_byte_is_an_error_never_wrong_output()
    {
        byte[] text = "Once upon a time, there was a little girl named Lily. She loved to play outside."u8.ToArray();
        var (sqz, _) = Zip(Stories260K.Value, text);
        for (int i = 0; i < sqz.Length; i++)
        {
            if (i >= 72 && i < 72 + 1 + "stories260K.bin".Length)
                continue; // the model's name is informational only
            byte[] bad = (byte[])sqz.Clone();
            bad[i] ^= 0x10;
            Assert.Throws<InvalidDataException>(() => Unzip(Stories260K.Value, bad));
        }
        Assert.Throws<InvalidDataException>(() => Unzip(Stories260K.Value, sqz[..^1]));
        Assert.Throws<InvalidDataException>(() => Unzip(Stories260K.Value, [.. sqz, 0]));
        Assert.Throws<InvalidDataException>(() => Unzip(Stories260K.Value, "not a squeeze file at all, just some text"u8.ToArray()));
    }

    [Fact]
    public void Segments_end_after_a_newline_when_one_is_near()
    {
        byte[] text = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("a line of text é\n", 100)));
        var bounds = ModelCodec.SegmentBounds(text, 7);
        Assert.Equal(7, bounds.Count);
        Assert.Equal(0, bounds[0].Start);
        Assert.Equal(text.Length, bounds[^1].End);
        for (int i = 0; i < bounds.Count - 1; i++)
        {
            Assert.Equal(bounds[i].End, bounds[i + 1].Start);
            Assert.Equal((byte)'\n', text[bounds[i].End - 1]);
        }
    }
}
