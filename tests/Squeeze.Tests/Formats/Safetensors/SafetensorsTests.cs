using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Squeeze.Formats;
using Squeeze.Formats.Safetensors;
using Squeeze.Tensors;

namespace Squeeze.Tests.Formats.Safetensors;

public class SafetensorsTests
{
    /// <summary>A file assembled by hand from the spec: u64 header length, JSON header, data.</summary>
    internal static byte[] Build(string header, byte[] data)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)json.Length);
        json.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + json.Length);
        return bytes;
    }

    internal static SafetensorsWriter SampleWriter()
    {
        var w = new SafetensorsWriter();
        w.Metadata["format"] = "pt";
        w.Metadata["note"] = "sample";
        w.Add("a.f32", SafetensorsDType.F32, [3, 4], Enumerable.Range(0, 48).Select(i => (byte)i).ToArray());
        w.Add("b.f16", SafetensorsDType.F16, [5], Enumerable.Range(0, 10).Select(i => (byte)(100 + i)).ToArray());
        w.Add("c.bf16", SafetensorsDType.BF16, [2, 2], new byte[8] { 1, 2, 3, 4, 5, 6, 7, 8 });
        w.Add("d.u8", SafetensorsDType.U8, [7], new byte[7] { 9, 8, 7, 6, 5, 4, 3 });
        w.Add("e.i64", SafetensorsDType.I64, [2], BitConverter.GetBytes(-5L).Concat(BitConverter.GetBytes(long.MaxValue)).ToArray());
        w.Add("f.empty", SafetensorsDType.I32, [0, 3], Array.Empty<byte>());
        w.Add("g.scalar", SafetensorsDType.F64, [], BitConverter.GetBytes(Math.PI));
        return w;
    }

    private static SafetensorsFile OpenBytes(TempDirectory dir, byte[] bytes, string name = "x.safetensors")
    {
        string path = dir.File(name);
        File.WriteAllBytes(path, bytes);
        return SafetensorsFile.Open(path);
    }

    [Fact]
    public void Reads_a_hand_built_file()
    {
        using var dir = new TempDirectory();
        var data = new byte[16 + 4];
        for (int i = 0; i < data.Length; i++)
            data[i] = (byte)(i * 3);
        using var f = OpenBytes(dir, Build("""{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"foo":"bar"},"w":{"dtype":"F16","shape":[2],"data_offsets":[16,20]}}  """, data));
        Assert.Equal("bar", f.Metadata["foo"]);
        Assert.Equal(["test", "w"], f.Tensors.Select(t => t.Name));
        var test = f.GetInfo("test");
        Assert.Equal((SafetensorsDType.I32, 0L, 16L), (test.DType, test.Begin, test.End));
        Assert.Equal(new long[] { 2, 2 }, test.Shape);
        Assert.Equal(data[..16], f.GetBytes(test).ToArray());
        var w = f.GetTensor("w", "renamed");
        Assert.Equal(("renamed", GgmlType.F16, 2L), (w.Name, w.Type, w.ElementCount));
        Assert.Equal(f.DataStart + 16, w.Offset);
        Assert.Equal(data[16..], w.Row(0).ToArray());
        var e = Assert.Throws<ModelFormatException>(() => f.GetTensor("test"));
        Assert.Contains("I32", e.Message);
    }

    [Fact]
    public void Writer_round_trips_every_dtype_and_metadata()
    {
        using var dir = new TempDirectory();
        string path = dir.File("sample.safetensors");
        SampleWriter().Write(path);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal("sample", f.Metadata["note"]);
        Assert.Equal(7, f.Tensors.Count);
        Assert.Equal(0, f.DataStart % 8);
        Assert.Equal(Enumerable.Range(0, 48).Select(i => (byte)i), f.GetBytes(f.GetInfo("a.f32")).ToArray());
        Assert.Equal(new long[] { 0, 3 }, f.GetInfo("f.empty").Shape);
        Assert.Equal(0, f.GetInfo("f.empty").ByteLength);
        Assert.Empty(f.GetInfo("g.scalar").Shape);
        Assert.Equal(Math.PI, BitConverter.ToDouble(f.GetBytes(f.GetInfo("g.scalar"))));
        Assert.Equal(long.MaxValue, BinaryPrimitives.ReadInt64LittleEndian(f.GetBytes(f.GetInfo("e.i64"))[8..]));
        Assert.Throws<ModelFormatException>(() => f.GetTensor("g.scalar")); // F64 is not a runtime type
        Assert.Throws<ModelFormatException>(() => f.GetTensor("f.empty"));
        // Every tensor is aligned to its element size: 8-byte types first, then 4, 2, 1; names in order within a size.
        Assert.Equal(["e.i64", "g.scalar", "a.f32", "f.empty", "b.f16", "c.bf16", "d.u8"], f.Tensors.Select(t => t.Name));
        Assert.All(f.Tensors, t => Assert.Equal(0, (f.DataStart + t.Begin) % SafetensorsDTypes.Size(t.DType)));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    [Fact]
    public void Header_is_spec_json_padded_with_spaces()
    {
        using var dir = new TempDirectory();
        string path = dir.File("s.safetensors");
        SampleWriter().Write(path);
        byte[] bytes = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0, (8 + n) % 8);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        Assert.Equal(header.TrimEnd(' ').Length, header.TrimEnd().Length);
        using var doc = JsonDocument.Parse(header);
        var a = doc.RootElement.GetProperty("a.f32");
        Assert.Equal("F32", a.GetProperty("dtype").GetString());
        Assert.Equal([3, 4], a.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()));
        long begin = a.GetProperty("data_offsets")[0].GetInt64(), end = a.GetProperty("data_offsets")[1].GetInt64();
        Assert.Equal(48, end - begin);
        Assert.Equal(0, bytes[8 + n + begin]);
        Assert.Equal(47, bytes[8 + n + begin + 47]);
        Assert.Equal("pt", doc.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
    }

    [Fact]
    public void Output_does_not_depend_on_insertion_order_and_replaces_existing_files()
    {
        using var dir = new TempDirectory();
        string first = dir.File("1.safetensors"), second = dir.File("2.safetensors");
        SampleWriter().Write(first);
        var reversed = new SafetensorsWriter();
        using (var source = SafetensorsFile.Open(first))
        {
            foreach (var t in source.Tensors.Reverse())
                reversed.Add(t.Name, t.DType, t.Shape, source.GetBytes(t).ToArray());
            foreach (var (k, v) in source.Metadata.Reverse())
                reversed.Metadata[k] = v;
        }
        File.WriteAllText(second, "old contents");
        reversed.Write(second);
        Assert.Equal(File.ReadAllBytes(first), File.ReadAllBytes(second));
        Assert.Equal(2, Directory.GetFiles(dir.Path).Length);
    }

    [Fact]
    public unsafe void Writer_takes_runtime_tensors_and_rejects_quantized_ones()
    {
        using var buffer = NativeBuffer.Allocate(64 + 18);
        for (int i = 0; i < 64; i++)
            buffer.Pointer[i] = (byte)(255 - i);
        var f32 = new Tensor("m", GgmlType.F32, [4, 4], buffer, 0);
        var w = new SafetensorsWriter();
        w.Add(f32, "model.m");
        Assert.Throws<NotSupportedException>(() => w.Add(new Tensor("q", GgmlType.Q4_0, [32], buffer, 64)));
        Assert.Throws<ArgumentException>(() => w.Add(f32, "model.m"));
        Assert.Throws<ArgumentException>(() => w.Add("__metadata__", SafetensorsDType.U8, [1], new byte[1]));
        Assert.Throws<ArgumentException>(() => w.Add("short", SafetensorsDType.F32, [2], new byte[7]));
        using var dir = new TempDirectory();
        w.Write(dir.File("t.safetensors"));
        using var f = SafetensorsFile.Open(dir.File("t.safetensors"));
        var t = f.GetTensor("model.m");
        Assert.Equal(new long[] { 4, 4 }, t.Shape);
        Assert.Equal(new ReadOnlySpan<byte>(buffer.Pointer, 64).ToArray(), new ReadOnlySpan<byte>(t.Data, 64).ToArray());
    }

    [Theory]
    [InlineData("""{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,2]}}""", 2, "unknown dtype \"F4\"")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}""", 4, "needs 8")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4, "run past the end")]
    [InlineData("""{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}""", 6, "overlaps")]
    [InlineData("""{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}""", 6, "belong to no tensor")]
    [InlineData("""{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}""", 5, "forbids trailing bytes")]
    [InlineData("""{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,0]}}""", 2, "0 <= begin <= end")]
    [InlineData("""{"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}}""", 2, "not a non-negative integer")]
    [InlineData("""{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,2]}}""", 2, "too large")]
    [InlineData("""{"a":{"dtype":"U8","shape":[2]}}""", 2, "data_offsets")]
    [InlineData("""{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}""", 2, "names 'a' twice")]
    [InlineData("""{"__metadata__":{"k":1}}""", 0, "not a string")]
    [InlineData("""{"a":[1,2]}""", 0, "not an object")]
    [InlineData("""{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]""", 2, "not valid JSON")]
    [InlineData("""[1,2,3]""", 0, "does not start with '{'")]
    public void Invalid_headers_are_rejected_with_the_problem_named(string header, int dataBytes, string message)
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<ModelFormatException>(() => OpenBytes(dir, Build(header, new byte[dataBytes])));
        Assert.Contains(message, e.Message);
        Assert.Equal(dir.File("x.safetensors"), e.Path);
    }

    [Theory]
    [InlineData(ulong.MaxValue, "exceeds")]
    [InlineData(200_000_000UL, "exceeds")]
    [InlineData(1000UL, "runs past the end")]
    [InlineData(1UL, "too short")]
    public void Absurd_header_lengths_are_rejected(ulong length, string message)
    {
        using var dir = new TempDirectory();
        var bytes = Build("{}      ", []);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length);
        var e = Assert.Throws<ModelFormatException>(() => OpenBytes(dir, bytes));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Files_shorter_than_eight_bytes_are_rejected()
    {
        using var dir = new TempDirectory();
        var e = Assert.Throws<ModelFormatException>(() => OpenBytes(dir, new byte[5]));
        Assert.Contains("5 bytes", e.Message);
    }
}
