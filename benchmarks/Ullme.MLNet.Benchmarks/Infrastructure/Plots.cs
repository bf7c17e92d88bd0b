namespace Ullme.MLNet.Benchmarks.Infrastructure;

/// <summary>Line charts of the scaling measurements (ScottPlot, PNG).</summary>
public static class Plots
{
    /// <summary>One line per series over shared x values; log-2 x axis labels are the raw values.</summary>
    public static string Lines(string path, string title, string xLabel, string yLabel,
        IReadOnlyList<(string Label, double[] X, double[] Y)> series)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (label, x, y) in series)
        {
            var s = plot.Add.Scatter(x.Select(v => Math.Log2(v)).ToArray(), y);
            s.LegendText = label;
            s.MarkerSize = 7;
        }
        var ticks = series.SelectMany(s => s.X).Distinct().OrderBy(v => v).ToArray();
        plot.Axes.Bottom.SetTicks(ticks.Select(v => Math.Log2(v)).ToArray(), ticks.Select(v => v.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend();
        plot.Axes.Margins(0.08, 0.1);
        plot.SavePng(path, 720, 420);
        return path;
    }

    /// <summary>Grouped bars: one group per category, one bar per series.</summary>
    public static string Bars(string path, string title, string yLabel, IReadOnlyList<string> categories,
        IReadOnlyList<(string Label, double[] Values)> series)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int n = series.Count;
        for (int s = 0; s < n; s++)
        {
            var bars = new List<ScottPlot.Bar>();
            for (int c = 0; c < categories.Count; c++)
                bars.Add(new ScottPlot.Bar { Position = c * (n + 1) + s, Value = series[s].Values[c], FillColor = palette.GetColor(s) });
            var bp = plot.Add.Bars(bars);
            bp.LegendText = series[s].Label;
        }
        plot.Axes.Bottom.SetTicks(categories.Select((_, c) => c * (n + 1) + (n - 1) / 2.0).ToArray(), categories.ToArray());
        plot.Title(title);
        plot.YLabel(yLabel);
        plot.ShowLegend();
        plot.Axes.Margins(bottom: 0);
        plot.SavePng(path, 720, 420);
        return path;
    }
}
