using ScottPlot;

namespace Ullme.Cli.Training;

/// <summary>
/// <c>losses.png</c>: the curve of every trained loss term and the weighted total against the optimizer step, with
/// the learning rate on a second axis (warm-up and decay explain most bends in the curves). Skipped steps (NaN/∞)
/// have no point. Per-step losses are noisy with small batches, so each curve is drawn faintly with a moving
/// average on top.
/// </summary>
internal static class LossPlot
{
    public const string FileName = "losses.png";

    public static void Save(string path, IReadOnlyList<LossRow> rows, string title, string? evaluation = null)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss");
        var terms = new (string Name, Func<LossRow, double?> Get)[]
        {
            ("total", r => r.Total), ("contrastive", r => r.Contrastive), ("lm", r => r.LanguageModel),
            ("preference", r => r.Preference), ("kl", r => r.Consistency), ("mntp", r => r.MaskedNextToken),
        };
        var palette = new ScottPlot.Palettes.Category10();
        int colour = 0;
        int window = Math.Max(1, rows.Count / 20);
        foreach (var (name, get) in terms)
        {
            var points = rows.Where(r => r.Applied && get(r) is double v && double.IsFinite(v)).Select(r => (X: (double)r.Step, Y: get(r)!.Value)).ToArray();
            if (points.Length == 0 || (name == "total" && terms.Skip(1).Count(t => rows.Any(r => t.Get(r) is not null)) == 1)) continue;
            var color = palette.GetColor(colour++);
            var raw = plot.Add.Scatter(points.Select(p => p.X).ToArray(), points.Select(p => p.Y).ToArray(), color.WithAlpha(0.3));
            raw.MarkerSize = 0;
            raw.LineWidth = 1;
            var smooth = plot.Add.Scatter(points.Select(p => p.X).ToArray(), MovingAverage(points.Select(p => p.Y).ToArray(), window), color);
            smooth.MarkerSize = 0;
            smooth.LineWidth = 2;
            smooth.LegendText = name;
        }
        var scored = rows.Where(r => r.Evaluation is double v && double.IsFinite(v)).ToArray();
        if (scored.Length > 0)
        {
            // The dev metric on the right axis (the learning rate stays in losses.csv).
            var eval = plot.Add.Scatter(scored.Select(r => (double)r.Step).ToArray(), scored.Select(r => r.Evaluation!.Value).ToArray(), Colors.Black);
            eval.MarkerSize = 6;
            eval.LineWidth = 1.5f;
            eval.LegendText = evaluation ?? "dev metric";
            var right = plot.Axes.Right;
            eval.Axes.YAxis = right;
            right.Label.Text = evaluation ?? "dev metric";
        }
        else if (rows.Count > 0)
        {
            var lr = plot.Add.Scatter(rows.Select(r => (double)r.Step).ToArray(), rows.Select(r => r.LearningRate).ToArray(), Colors.Gray);
            lr.MarkerSize = 0;
            lr.LinePattern = LinePattern.Dashed;
            lr.LegendText = "learning rate";
            var right = plot.Axes.Right;
            lr.Axes.YAxis = right;
            right.Label.Text = "learning rate";
        }
        plot.ShowLegend(Alignment.UpperRight);
        plot.SavePng(path, 1000, 560);
    }

    /// <summary>Trailing moving average over <paramref name="window"/> points (fewer at the start).</summary>
    internal static double[] MovingAverage(double[] values, int window)
    {
        var result = new double[values.Length];
        double sum = 0;
        for (int i = 0; i < values.Length; i++)
        {
            sum += values[i];
            if (i >= window) sum -= values[i - window];
            result[i] = sum / Math.Min(i + 1, window);
        }
        return result;
    }
}
