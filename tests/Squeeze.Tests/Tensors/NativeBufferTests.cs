using Squeeze.Tensors;
using Squeeze.Tests.Formats;

namespace Squeeze.Tests.Tensors;

/// <summary>A temporary mapped buffer holds what was written into it, and its file is gone once it is released (outside
/// Windows, as soon as it is open: a killed process leaves nothing behind).</summary>
public class NativeBufferTests
{
    [Fact]
    public unsafe void Temporary_buffer_holds_its_bytes_and_deletes_its_file()
    {
        using var dir = new TempDirectory();
        byte[] bytes = [.. Enumerable.Range(0, 100_003).Select(i => (byte)(i * 7))];
        var buffer = NativeBuffer.MapTemporary(bytes.Length, stream => stream.Write(bytes), dir.Path);
        Assert.Equal(OperatingSystem.IsWindows() ? 1 : 0, Directory.GetFiles(dir.Path).Length);
        Assert.Equal(bytes, new ReadOnlySpan<byte>(buffer.Pointer, bytes.Length).ToArray());
        buffer.Dispose();
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public unsafe void A_file_mapped_through_a_symbolic_link_is_its_target()
    {
        using var dir = new TempDirectory();
        string target = Path.Combine(dir.Path, "model.gguf"), link = Path.Combine(dir.Path, "link.gguf");
        byte[] bytes = [.. Enumerable.Range(0, 5000).Select(i => (byte)(i * 11))];
        File.WriteAllBytes(target, bytes);
        File.CreateSymbolicLink(link, target);
        using var buffer = NativeBuffer.MapFile(link);
        Assert.Equal(bytes.Length, buffer.Length); // not the link's own length (its target's name)
        Assert.Equal(bytes, new ReadOnlySpan<byte>(buffer.Pointer, bytes.Length).ToArray());
        // and a model read through one (a GGUF's header checks refused it as truncated)
        string gguf = Path.Combine(dir.Path, "stories260K.gguf");
        File.CreateSymbolicLink(gguf, Squeeze.Tests.Infrastructure.SharedData.Golden("stories260K-f32.gguf"));
        using var model = Squeeze.Formats.ModelLoader.Load(gguf);
        Assert.Equal(512, model.Config.VocabSize);
    }

    [Fact]
    public void Memory_views_values_at_any_offset_until_the_buffer_is_released()
    {
        using var dir = new TempDirectory();
        byte[] bytes = [.. Enumerable.Range(0, 1001).Select(i => (byte)(i * 13 + 5))];
        var buffer = NativeBuffer.MapTemporary(bytes.Length, stream => stream.Write(bytes), dir.Path);
        // An odd offset: values of a safetensors file's companions need not be aligned.
        var halves = buffer.Memory<ushort>(3, 499);
        Assert.Equal(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan(3, 998)).ToArray(), halves.Span.ToArray());
        Assert.Equal(bytes[3..1001], buffer.Memory<byte>(3, 998).ToArray());
        Assert.Equal(halves.Span[10..20].ToArray(), halves[10..20].ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.Memory<ushort>(3, 500)); // one past the end
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.Memory<byte>(-1, 1));
        buffer.Dispose();
        Assert.Throws<ObjectDisposedException>(() => halves.Span[0]);
    }

    [Fact]
    public void Temporary_buffer_refuses_a_short_fill_and_leaves_no_file()
    {
        using var dir = new TempDirectory();
        Assert.Throws<InvalidOperationException>(() => NativeBuffer.MapTemporary(10, stream => stream.Write(new byte[9]), dir.Path));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }
}
