using Squeeze.Formats.Gguf;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Formats.Gguf;

public class GgufModelWriterTests
{
    [Fact]
    public void Written_model_has_llama_cpp_metadata_and_identical_tensors()
    {
        string golden = SharedData.Golden("stories15M-f32.gguf");
        using var model = GgufModelReader.Load(golden);
        string path = Path.Combine(Path.GetTempPath(), $"squeeze-{Guid.NewGuid():N}.gguf");
        try
        {
            GgufModelWriter.Write(model, path, fileType: 0, EncodedTensor.Copy, name: "llama");
            using var expected = GgufFile.Open(golden);
            using var actual = GgufFile.Open(path);
            foreach (var (key, value) in expected.Values)
            {
                Assert.True(actual.Values.ContainsKey(key), $"key {key} is missing");
                Assert.Equal(value.Type, actual.Values[key].Type);
                Assert.Equal(value.Plain, actual.Values[key].Plain);
            }
            Assert.Equal(expected.TensorInfos.Select(t => (t.Name, t.Type, string.Join(",", t.Shape))), actual.TensorInfos.Select(t => (t.Name, t.Type, string.Join(",", t.Shape))));
            foreach (var tensor in expected.Tensors)
            {
                Assert.True(actual.TryGetTensor(tensor.Name, out var written));
                for (long r = 0; r < tensor.Rows; r++)
                    Assert.True(tensor.Row(r).SequenceEqual(written.Row(r)), $"{tensor.Name} row {r} differs");
            }
            Assert.Equal(0, actual.DataOffset % 32);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Missing_output_directory_is_a_clear_error_and_leaves_nothing()
    {
        using var model = GgufModelReader.Load(SharedData.Golden("stories260K-f32.gguf"));
        string directory = Path.Combine(Path.GetTempPath(), $"squeeze-missing-{Guid.NewGuid():N}");
        var e = Assert.Throws<DirectoryNotFoundException>(() => GgufModelWriter.Write(model, Path.Combine(directory, "out.gguf"), 0, EncodedTensor.Copy));
        Assert.Contains(directory, e.Message);
        Assert.False(Directory.Exists(directory));
    }

    [Fact]
    public void Failure_while_writing_leaves_no_partial_file()
    {
        using var model = GgufModelReader.Load(SharedData.Golden("stories260K-f32.gguf"));
        string directory = Directory.CreateTempSubdirectory("squeeze-fail-").FullName;
        try
        {
            string path = Path.Combine(directory, "out.gguf");
            int written = 0;
            Assert.Throws<IOException>(() => GgufModelWriter.Write(model, path, 0, t => ++written < 10
                ? EncodedTensor.Copy(t)
                : new EncodedTensor(t.Type, _ => throw new IOException("No space left on device"))));
            Assert.Empty(Directory.GetFileSystemEntries(directory));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
