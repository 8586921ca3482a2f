using System.Text;
using Squeeze.Formats.Gguf;
using Squeeze.Tensors;
using Squeeze.Tests.Formats;

namespace Squeeze.Tests.Formats.Gguf;

/// <summary>Tensors of more than 2^31 elements: 64-bit shapes, offsets and lengths from the header to the last row.</summary>
public class LargeTensorTests
{
    [Fact]
    public void Tensor_over_two_billion_elements_maps_and_reads_its_last_row()
    {
        const long rows = 65_600, columns = 32_768; // 2,149,580,800 elements of Q4_0: 1.2 GB, a sparse file
        using var temp = new TempDirectory();
        string path = temp.File("large.gguf");
        long dataBytes = GgmlTypes.RowBytes(GgmlType.Q4_0, columns) * rows;
        long dataStart;
        using (var stream = new FileStream(path, FileMode.CreateNew))
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(GgufFile.Magic);
            w.Write(3u);
            w.Write(1UL); // tensors
            w.Write(0UL); // metadata
            byte[] name = Encoding.UTF8.GetBytes("huge.weight");
            w.Write((ulong)name.Length);
            w.Write(name);
            w.Write(2u);
            w.Write((ulong)columns); // ne[0], innermost
            w.Write((ulong)rows);
            w.Write((uint)GgmlType.Q4_0);
            w.Write(0UL);
            w.Flush();
            dataStart = (stream.Position + 31) / 32 * 32;
            stream.SetLength(dataStart + dataBytes);
            // One recognisable block at the very end: scale 1.0 (f16 0x3C00), every nibble 0xF (value 15 − 8 = 7).
            stream.Position = dataStart + dataBytes - 18;
            w.Write((ushort)0x3C00);
            w.Write(Enumerable.Repeat((byte)0xFF, 16).ToArray());
        }

        using var file = GgufFile.Open(path);
        var tensor = Assert.Single(file.Tensors);
        Assert.Equal(rows * columns, tensor.ElementCount);
        Assert.True(tensor.ElementCount > int.MaxValue);
        Assert.Equal(dataBytes, tensor.ByteLength);
        var last = new float[columns];
        Dequantize.Row(tensor.Type, tensor.Row(rows - 1), last);
        Assert.All(last[..^32], v => Assert.Equal(0f, v));
        Assert.All(last[^32..], v => Assert.Equal(7f, v));
    }
}
