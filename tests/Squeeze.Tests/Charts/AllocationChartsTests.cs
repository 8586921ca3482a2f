using Squeeze.Charts;
using Squeeze.Tests.Formats;

namespace Squeeze.Tests.Charts;

public class AllocationChartsTests
{
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    [Fact]
    public void Log_scale_chart_with_point_labels_is_written_as_a_png_through_a_temporary_file()
    {
        using var temp = new TempDirectory();
        string path = temp.File("chart.png");
        File.WriteAllText(path, "an earlier chart");
        AllocationCharts.LogScale(
            [
                new ChartSeries("rounding", [8.9, 7.3], [0.0014, 0.115], Line: false, ["Q8_0", "Q4_0"]),
                new ChartSeries("original", [32.0], [0.0], Line: false, ["F32"]), // KLD 0 has no place on a log axis
            ],
            path, "title", "bits per weight", "mean KLD");
        Assert.Equal(PngSignature, File.ReadAllBytes(path).Take(PngSignature.Length));
        Assert.Equal(["chart.png"], Directory.GetFiles(temp.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Point_labels_must_match_the_points()
    {
        using var temp = new TempDirectory();
        var e = Assert.Throws<ArgumentException>(() => AllocationCharts.LogScale(
            [new ChartSeries("rounding", [8.9, 7.3], [0.0014, 0.115], Line: false, ["Q8_0"])], temp.File("chart.png"), "title", "x", "y"));
        Assert.Contains("2 points and 1 point labels", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFiles(temp.Path));
    }
}
