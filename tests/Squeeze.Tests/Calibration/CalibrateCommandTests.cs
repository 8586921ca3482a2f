using Squeeze.Calibration;
using Squeeze.Cli.Commands;
using Squeeze.Formats.Llama2c;
using Squeeze.Tests.Infrastructure;

namespace Squeeze.Tests.Calibration;

public sealed class CalibrateCommandTests
{
    [Fact]
    public void Calibrate_writes_a_stats_file_that_reads_back_for_the_same_model()
    {
        string path = Path.Combine(Path.GetTempPath(), $"squeeze-calibrate-{Environment.ProcessId}-{Guid.NewGuid():N}.stats");
        try
        {
            int rc = CalibrateCommand.Execute(new CalibrateCommand.Options(SharedData.Stories260K, null, SharedData.Corpus("tinystories-calib.txt"),
                Tokens: 128, Context: 64, Gram: true, Layers: "-1,1-2", Output: path, Threads: 1, Json: true));
            Assert.Equal(0, rc);
            using var model = Llama2cReader.Load(SharedData.Stories260K);
            var stats = CalibrationFile.Read(path, model);
            Assert.Equal(128, stats.TokenCount);
            Assert.Equal(64, stats.ContextLength);
            Assert.Equal([-1, 1, 1, 1, 1, 2, 2, 2, 2], stats.Entries.Select(e => e.Layer));
            Assert.All(stats.Entries, e => Assert.NotNull(e.Gram));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("1,3-4", new[] { 1, 3, 4 })]
    [InlineData("-1", new[] { -1 })]
    [InlineData(" 2 , 0 ", new[] { 0, 2 })]
    public void Layer_lists_parse(string spec, int[] expected) => Assert.Equal(expected, CalibrateCommand.ParseLayers(spec));

    [Theory]
    [InlineData("x")]
    [InlineData("4-2")]
    [InlineData("-3")]
    [InlineData(",")]
    public void Bad_layer_lists_are_refused(string spec) => Assert.Throws<ArgumentException>(() => CalibrateCommand.ParseLayers(spec));
}
