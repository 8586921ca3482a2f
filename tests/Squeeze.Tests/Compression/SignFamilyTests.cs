using Squeeze.Allocation;
using Squeeze.Compression.Representations;
using Squeeze.Compression;
using Squeeze.Formats;
using Squeeze.Formats.Llama2c;
using Squeeze.Formats.Native;
using Squeeze.Runtime;
using Squeeze.Tests.Infrastructure;
using Squeeze.Tuning;
using Squeeze.Weights;

namespace Squeeze.Tests.Compression;

/// <summary>A representation family from outside the library (<see cref="SignFamily"/>), added through the registry
/// alone: parsed, encoded, chosen by the allocator, written, read back and run.</summary>
public sealed class SignFamilyTests : IDisposable
{
    private readonly string root = Path.Combine(Path.GetTempPath(), $"squeeze-sign-{Guid.NewGuid():N}");

    public SignFamilyTests() => NativeRepresentation.Register(SignFamily.Instance);

    public void Dispose()
    {
        if (Directory.Exists(root))
            Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void Sign_specs_parse_through_the_registry_and_the_generated_grammar_lists_the_family()
    {
        Assert.Equal(new SignRepresentation(true), NativeRepresentation.Parse(" SIGN:rms "));
        Assert.Equal("sign:mean", NativeRepresentation.Parse("sign:mean").Spec);
        Assert.Contains("the scale is mean or rms", Assert.Throws<FormatException>(() => NativeRepresentation.Parse("sign:max")).Message, StringComparison.Ordinal);
        Assert.Contains("expected sign:mean|rms", Assert.Throws<FormatException>(() => NativeRepresentation.Parse("sign")).Message, StringComparison.Ordinal);
        var unknown = Assert.Throws<FormatException>(() => NativeRepresentation.Parse("lattice:3"));
        Assert.All(NativeRepresentation.Families, f => Assert.Contains(f.Syntax, unknown.Message, StringComparison.Ordinal));
        Assert.Contains("sign:mean|rms", NativeRepresentation.Grammar, StringComparison.Ordinal);
        Assert.DoesNotContain(NativeRepresentation.Defaults, r => r is SignRepresentation);

        NativeRepresentation.Register(SignFamily.Instance);
        Assert.Single(NativeRepresentation.Families, f => f == SignFamily.Instance);
        Assert.Same(SignNativeScheme.Instance, NativeSchemes.Find("test-sign"));
        var clash = Assert.Throws<ArgumentException>(() => NativeRepresentation.Register(new ClashingFamily()));
        Assert.Contains("keyword 'uniform' belongs to uniform:BITS:GROUP[:sym]", clash.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_sign_model_is_chosen_by_the_allocator_written_read_and_run_as_its_scalar_reference()
    {
        using var model = Llama2cReader.Load(SharedData.Stories260K);
        using var context = Allocator.PrepareNative(model, CompressorTests.CalibrationText, new AllocationOptions
        {
            Compression = new CompressionOptions { Method = CompressionMethod.Gptq, CalibrationTokens = 1024, ContextLength = 64, RefinePasses = 0, Threads = 2 },
            KldChunks = 2,
            SwapChunks = 1,
        }, [.. "sign:mean uniform:8:~64 f16".Split(' ').Select(NativeRepresentation.Parse)]);
        var set = context.Candidates;
        // sign is every matrix's smallest level: at the smallest file's budget the allocator has no other choice
        var allocation = Allocator.Allocate(context, set.BoundBytes(set.Smallest()), SearchMethod.Knapsack);
        for (int i = 0; i < set.Tensors.Count; i++)
            Assert.Equal("sign:mean", set.Chosen(allocation.Selection, i).Level);

        string directory = Path.Combine(root, "sign");
        Assert.Equal(set.FileBytes(allocation.Selection), set.Write(allocation.Selection, directory));
        using var loaded = ModelLoader.Load(directory);
        var reference = new List<LinearWeight>();
        foreach (var tensor in set.Tensors)
        {
            var original = model.Weight(tensor.Name);
            var sign = Assert.IsType<SignWeight>(loaded.Weight(tensor.Name));
            var expected = SignReference(original.Decode(), original.Rows, original.Columns);
            Assert.Equal(expected, sign.Decode());
            reference.Add(new DenseWeight(tensor.Name, original.Rows, original.Columns, expected));
        }
        using var decoded = model.WithWeights(reference);
        int[] tokens = [1, 50, 300, 7, 8, 99];
        using var a = new Transformer(loaded, new RuntimeOptions { Threads = 1 });
        using var b = new Transformer(decoded, new RuntimeOptions { Threads = 1 });
        var logits = a.Forward(tokens, tokens.Length).ToArray();
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        Assert.Equal(b.Forward(tokens, tokens.Length).ToArray(), logits);
    }

    [Fact]
    public void The_family_registers_its_tunable_row_scales()
    {
        var random = new Random(42);
        float[] values = [.. Enumerable.Range(0, 3 * 10).Select(_ => (float)random.NextDouble() - 0.5f)];
        var weight = SignWeight.Encode("w", values, 3, 10, rms: false);
        var tunable = Assert.IsType<TunableSigns>(TunableWeight.For(weight));
        var dense = new float[values.Length];
        tunable.Decode(dense);
        Assert.Equal(weight.Decode(), dense);

        float[] denseGradient = [.. Enumerable.Range(0, values.Length).Select(_ => (float)random.NextDouble())];
        var gradient = new float[3];
        tunable.Backward(denseGradient, gradient);
        for (int r = 0; r < 3; r++)
            Assert.Equal(Enumerable.Range(0, 10).Sum(c => (double)denseGradient[r * 10 + c] * Math.Sign(dense[r * 10 + c])), gradient[r], 1e-5);

        tunable.Values[1] *= 2; // doubling an f16 value is exact
        var tuned = Assert.IsType<SignWeight>(tunable.Build()).Decode();
        for (int c = 0; c < 10; c++)
            Assert.Equal(2 * dense[10 + c], tuned[10 + c]);
    }

    /// <summary>The definition: W[r, c] = sign(w) · f16(mean_c |w[r, c]|), a zero counted positive.</summary>
    private static float[] SignReference(float[] values, int rows, int columns)
    {
        var result = new float[values.Length];
        for (int r = 0; r < rows; r++)
        {
            float scale = (float)(Half)values.AsSpan(r * columns, columns).ToArray().Average(v => (double)Math.Abs(v));
            for (int c = 0; c < columns; c++)
                result[r * columns + c] = values[r * columns + c] < 0 ? -scale : scale;
        }
        return result;
    }

    /// <summary>Decoded values in f32, multiplied by the default product as any representation is.</summary>
    private sealed class DenseWeight(string name, int rows, int columns, float[] values) : LinearWeight(name, rows, columns)
    {
        public override long StoredBytes => 4L * values.Length;

        public override string Scheme => "dense";

        public override void DecodeRow(int row, Span<float> destination)
        {
            CheckRow(row, destination);
            values.AsSpan(row * Columns, Columns).CopyTo(destination);
        }
    }

    private sealed class ClashingFamily : RepresentationFamily
    {
        public override IReadOnlyList<string> Keywords => ["uniform"];

        public override string Syntax => "uniform:ANYTHING";

        public override string Help => "a second claim on a keyword";

        public override NativeRepresentation Parse(RepresentationSpec spec) => throw new NotSupportedException();
    }
}
