using Squeeze.Formats.Gguf;
using Squeeze.Tensors;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats.Gguf;

public sealed class GgufWriterTests : IDisposable
{
    private readonly string dir = Directory.CreateTempSubdirectory("squeeze-gguf-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Theory]
    [InlineData("stories260K-f32.gguf")]
    [InlineData("synthetic/synthetic-Q4_K.gguf")]
    [InlineData("synthetic/synthetic-IQ4_NL.gguf")]
    public void Round_trip_keeps_metadata_types_and_tensor_bytes(string name)
    {
        string source = SharedData.Golden(name);
        string copy = Path.Combine(dir, "copy.gguf");
        using (var original = GgufFile.Open(source))
        {
            var w = new GgufWriter();
            w.AddMetadata(original.Values);
            foreach (var t in original.Tensors)
                w.AddTensor(t);
            w.Write(copy);
        }
        Assert.Single(Directory.GetFiles(dir)); // no temporary file left behind

        using var a = GgufFile.Open(source);
        using var b = GgufFile.Open(copy);
        Assert.Equal(a.Values.Keys, b.Values.Keys);
        foreach (var (key, va) in a.Values)
        {
            var vb = b.Values[key];
            Assert.Equal(va.Type, vb.Type);
            Assert.Equal(va.ElementType, vb.ElementType);
            if (va.Value is Array arr)
                Assert.Equal(arr.Cast<object>(), ((Array)vb.Value).Cast<object>());
            else
                Assert.Equal(va.Value, vb.Value);
        }
        Assert.Equal(a.TensorInfos.Count, b.TensorInfos.Count);
        for (int i = 0; i < a.TensorInfos.Count; i++)
        {
            Assert.Equal(a.TensorInfos[i], b.TensorInfos[i] with { Shape = a.TensorInfos[i].Shape });
            Assert.Equal(a.TensorInfos[i].Shape, b.TensorInfos[i].Shape);
            Assert.True(Bytes(a.Tensors[i]).SequenceEqual(Bytes(b.Tensors[i])), a.Tensors[i].Name);
        }
        // llama.cpp lays a file out the same way (file-order tensors, aligned offsets, padded end): identical bytes.
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(copy));
    }

    [Fact]
    public void A_file_begun_then_filled_in_reverse_order_is_byte_identical_to_one_written_at_once()
    {
        string source = SharedData.Golden("synthetic/synthetic-Q4_K.gguf");
        string copy = Path.Combine(dir, "partial.gguf");
        using (var original = GgufFile.Open(source))
        {
            var w = new GgufWriter();
            w.AddMetadata(original.Values);
            foreach (var t in original.Tensors)
                w.AddTensor(t.Name, t.Type, t.Shape);
            using var file = w.Begin(copy);
            Assert.True(File.Exists(file.TemporaryPath));
            foreach (var t in original.Tensors.Reverse())
            {
                Assert.Contains(t.Name, file.Missing);
                file.WriteTensor(t.Name, Bytes(t));
            }
            Assert.Empty(file.Missing);
            Assert.Throws<ArgumentException>(() => file.WriteTensor(original.Tensors[0].Name, Bytes(original.Tensors[0])));
            file.Commit();
            Assert.False(File.Exists(file.TemporaryPath));
        }
        Assert.Single(Directory.GetFiles(dir));
        Assert.Equal(File.ReadAllBytes(source), File.ReadAllBytes(copy));
    }

    [Fact]
    public void A_file_left_unfinished_is_deleted_and_cannot_be_committed()
    {
        string path = Path.Combine(dir, "unfinished.gguf");
        var w = new GgufWriter();
        w.AddMetadata("general.architecture", new GgufValue(GgufValueType.String, "llama"));
        w.AddTensor("a", GgmlType.F32, [2, 4]);
        w.AddTensor("b", GgmlType.F32, [4]);
        using (var file = w.Begin(path))
        {
            Assert.Throws<ArgumentException>(() => file.WriteTensor("a", new byte[8]));
            Assert.Throws<ArgumentException>(() => file.WriteTensor("c", new byte[16]));
            file.WriteTensor("a", new byte[32]);
            var error = Assert.Throws<InvalidOperationException>(file.Commit);
            Assert.Contains("'b'", error.Message);
        }
        Assert.Empty(Directory.GetFiles(dir));
        // A writer whose data comes later cannot write the file in one go.
        Assert.Throws<InvalidOperationException>(() => w.Write(path));
    }

    [Fact]
    public void Nested_arrays_and_every_scalar_type_round_trip()
    {
        byte[] bytes = TinyGguf.Model();
        using var f = GgufFile.Parse(bytes);
        Assert.Equal((byte)200, f.Metadata["test.u8"]);
        Assert.Equal((sbyte)-100, f.Metadata["test.i8"]);
        Assert.Equal((ushort)60000, f.Metadata["test.u16"]);
        Assert.Equal((short)-30000, f.Metadata["test.i16"]);
        Assert.Equal(-5, f.Metadata["test.i32"]);
        Assert.Equal(ulong.MaxValue, f.Metadata["test.u64"]);
        Assert.Equal(long.MinValue, f.Metadata["test.i64"]);
        Assert.Equal(Math.PI, f.Metadata["test.f64"]);
        var nested = Assert.IsType<object[]>(f.Metadata["test.nested"]);
        Assert.Equal(new short[] { 1, -2 }, nested[0]);
        Assert.Equal(new[] { "a", "bc" }, nested[1]);
        Assert.Equal(new[] { true, false }, nested[2]);
        Assert.Equal(GgufValueType.Array, f.Values["test.nested"].ElementType);

        var w = new GgufWriter();
        w.AddMetadata(f.Values);
        foreach (var t in f.Tensors)
            w.AddTensor(t);
        var ms = new MemoryStream();
        w.Write(ms);
        Assert.Equal(bytes, ms.ToArray());
    }

    [Fact]
    public void Writer_rejects_mismatched_values_and_data()
    {
        var w = new GgufWriter();
        Assert.Throws<ArgumentException>(() => w.AddMetadata("k", GgufValue.Scalar(GgufValueType.UInt32, 5)));  // int, not uint
        Assert.Throws<ArgumentException>(() => w.AddMetadata("k", GgufValue.Array(GgufValueType.Float32, new int[2])));
        Assert.Throws<ArgumentException>(() => w.AddMetadata(GgufFile.AlignmentKey, GgufValue.Scalar(GgufValueType.UInt32, 24u)));
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", GgmlType.Q4_0, [2, 32], new byte[35]));
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", GgmlType.Q4_K, [1, 32], new byte[144]));
        w.AddTensor("t", GgmlType.F32, [2], new byte[8]);
        Assert.Throws<ArgumentException>(() => w.AddTensor("t", GgmlType.F32, [2], new byte[8]));
    }

    private static unsafe byte[] Bytes(Tensor t) => new ReadOnlySpan<byte>(t.Data, checked((int)t.ByteLength)).ToArray();
}
