using ScottPlot;
using Squeeze.Compression;
using Squeeze.Models;

namespace Squeeze.Charts;

/// <summary>One line or set of points of a chart: a label and (x, y) pairs.</summary>
/// <param name="Label">Legend text.</param>
/// <param name="X">Horizontal values.</param>
/// <param name="Y">Vertical values, as many as <paramref name="X"/>.</param>
/// <param name="Line">Joined by a line (true) or markers only.</param>
/// <param name="PointLabels">Text written beside each point (as many as <paramref name="X"/>), or null for none.</param>
public sealed record ChartSeries(string Label, IReadOnlyList<double> X, IReadOnlyList<double> Y, bool Line, IReadOnlyList<string>? PointLabels = null);

/// <summary>PNG charts of allocations and of size against quality (ScottPlot, rendered headless through SkiaSharp); each
/// written to a temporary file, then renamed.</summary>
public static class AllocationCharts
{
    private static readonly string[] Kinds = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

    /// <summary>
    /// Bits per weight given to each tensor of a compressed model of <paramref name="layers"/> blocks: one group of bars
    /// per layer, one bar per tensor kind (attention q, k, v, output, feed-forward gate, up, down), and a last group for
    /// the tensors outside the blocks (token embedding, output).
    /// </summary>
    public static void BitsPerTensor(IReadOnlyList<TensorReport> tensors, int layers, string path, string title)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        int groupWidth = Kinds.Length + 1;
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var outside = new List<(string Name, double Bits)>();
        foreach (var t in tensors)
        {
            double bits = t.BitsPerWeight;
            int layer = LayerOf(t.Name);
            int kind = Array.FindIndex(Kinds, k => t.Name.EndsWith($".{k}.weight", StringComparison.Ordinal));
            if (layer < 0 || kind < 0)
            {
                outside.Add((t.Name, bits));
                continue;
            }
            plot.Add.Bar(new Bar { Position = layer * groupWidth + kind, Value = bits, FillColor = palette.GetColor(kind), Size = 0.9 });
        }
        for (int o = 0; o < outside.Count; o++)
            plot.Add.Bar(new Bar { Position = layers * groupWidth + o, Value = outside[o].Bits, FillColor = Colors.Gray, Size = 0.9, Label = ShortName(outside[o].Name) });
        var ticks = Enumerable.Range(0, layers).Select(l => (Position: l * groupWidth + (Kinds.Length - 1) / 2.0, Label: $"layer {l}")).ToList();
        if (outside.Count > 0)
            ticks.Add((layers * groupWidth + (outside.Count - 1) / 2.0, string.Join(", ", outside.Select(o => ShortName(o.Name)))));
        plot.Axes.Bottom.SetTicks([.. ticks.Select(t => t.Position)], [.. ticks.Select(t => t.Label)]);
        for (int k = 0; k < Kinds.Length; k++)
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = Kinds[k], FillColor = palette.GetColor(k) });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "outside the blocks", FillColor = Colors.Gray });
        plot.ShowLegend(Alignment.UpperRight);
        double top = tensors.Max(t => t.BitsPerWeight);
        plot.Axes.SetLimitsY(0, top * 1.6); // room for the legend above the bars
        plot.YLabel("bits per weight");
        plot.Title(title);
        Save(plot, path, Math.Max(800, 60 * groupWidth * (layers + 1) / 4), 500);
    }

    /// <summary>Lines and points with a logarithmic vertical axis (values ≤ 0 are left out), each point labelled when its
    /// series has <see cref="ChartSeries.PointLabels"/>.</summary>
    public static void LogScale(IReadOnlyList<ChartSeries> series, string path, string title, string xLabel, string yLabel)
    {
        ArgumentNullException.ThrowIfNull(series);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        double low = double.PositiveInfinity, high = double.NegativeInfinity; // log10 of the plotted values
        for (int s = 0; s < series.Count; s++)
        {
            var labels = series[s].PointLabels;
            if (labels is not null && labels.Count != series[s].X.Count)
                throw new ArgumentException($"series '{series[s].Label}' has {series[s].X.Count} points and {labels.Count} point labels", nameof(series));
            var points = series[s].X.Select((x, i) => (X: x, Y: series[s].Y[i], Label: labels?[i])).Where(p => p.Y > 0).OrderBy(p => series[s].Line ? p.X : 0).ToArray();
            if (points.Length == 0)
                continue;
            low = Math.Min(low, points.Min(p => Math.Log10(p.Y)));
            high = Math.Max(high, points.Max(p => Math.Log10(p.Y)));
            var scatter = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => Math.Log10(p.Y)).ToArray(), palette.GetColor(s));
            scatter.LegendText = series[s].Label;
            scatter.LineWidth = series[s].Line ? 2 : 0;
            scatter.MarkerSize = series[s].Line ? 5 : 9;
            scatter.MarkerShape = series[s].Line ? MarkerShape.FilledCircle : MarkerShape.FilledSquare;
            foreach (var p in points.Where(p => p.Label is not null))
            {
                var text = plot.Add.Text(p.Label!, p.X, Math.Log10(p.Y));
                text.LabelFontColor = palette.GetColor(s);
                text.LabelFontSize = 12;
                text.OffsetX = 7;
                text.OffsetY = -7;
            }
        }
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = y => Math.Pow(10, y).ToString("g3", System.Globalization.CultureInfo.InvariantCulture),
        };
        if (low <= high)
        {
            // A band above the highest point for the legend, so that it covers none.
            double span = Math.Max(high - low, 0.5);
            plot.Axes.SetLimitsY(low - 0.05 * span, high + 0.4 * span);
        }
        plot.ShowLegend(Alignment.UpperRight);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.Title(title);
        Save(plot, path, 900, 600);
    }

    /// <summary>Points of each series against a logarithmic horizontal axis (values ≤ 0 are left out) and a linear
    /// vertical one, each point labelled when its series has <see cref="ChartSeries.PointLabels"/>: the embedding
    /// stores' recall against bytes per vector.</summary>
    public static void LogScaleX(IReadOnlyList<ChartSeries> series, string path, string title, string xLabel, string yLabel)
    {
        ArgumentNullException.ThrowIfNull(series);
        var plot = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int s = 0; s < series.Count; s++)
        {
            var labels = series[s].PointLabels;
            if (labels is not null && labels.Count != series[s].X.Count)
                throw new ArgumentException($"series '{series[s].Label}' has {series[s].X.Count} points and {labels.Count} point labels", nameof(series));
            var points = series[s].X.Select((x, i) => (X: x, Y: series[s].Y[i], Label: labels?[i])).Where(p => p.X > 0).OrderBy(p => series[s].Line ? p.X : 0).ToArray();
            if (points.Length == 0)
                continue;
            var scatter = plot.Add.Scatter(points.Select(p => Math.Log10(p.X)).ToArray(), points.Select(p => p.Y).ToArray(), palette.GetColor(s));
            scatter.LegendText = series[s].Label;
            scatter.LineWidth = series[s].Line ? 2 : 0;
            scatter.MarkerSize = 9;
            scatter.MarkerShape = MarkerShape.FilledCircle;
            foreach (var p in points.Where(p => p.Label is not null))
            {
                var text = plot.Add.Text(p.Label!, Math.Log10(p.X), p.Y);
                text.LabelFontColor = palette.GetColor(s);
                text.LabelFontSize = 11;
                text.OffsetX = 6;
                text.OffsetY = -6;
            }
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = x => Math.Pow(10, x).ToString("g3", System.Globalization.CultureInfo.InvariantCulture),
        };
        plot.ShowLegend(Alignment.LowerRight);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.Title(title);
        Save(plot, path, 900, 600);
    }

    /// <summary>Renders <paramref name="plot"/> to a temporary file beside <paramref name="path"/>, then renames it.</summary>
    private static void Save(Plot plot, string path, int width, int height)
    {
        string temporary = path + ".tmp";
        try
        {
            plot.SavePng(temporary, width, height);
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    private static int LayerOf(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal))
            return -1;
        int dot = name.IndexOf('.', 4);
        return dot > 4 && int.TryParse(name.AsSpan(4, dot - 4), System.Globalization.NumberStyles.None, null, out int layer) ? layer : -1;
    }

    private static string ShortName(string name) => name == TensorNames.TokenEmbedding ? "token_embd" : name.Replace(".weight", "", StringComparison.Ordinal);
}
