using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Training.Sweeps;

/// <summary>How a sweep picks its trials.</summary>
public enum SweepSearch
{
    /// <summary>Every point of the space (capped by <see cref="SweepOptions.MaxTrials"/>).</summary>
    Grid,

    /// <summary><see cref="SweepOptions.MaxTrials"/> distinct points drawn with <see cref="SweepOptions.Seed"/>.</summary>
    Random,

    /// <summary>Model-based: a few random points, then each next point where a Gaussian-process surrogate of the metric
    /// expects the largest improvement (in the spirit of ML.NET AutoML's SMAC tuner; see <see cref="SweepOptions"/>).
    /// Needs <see cref="SweepOptions.MaxTrials"/> or <see cref="SweepOptions.MaxTime"/>.</summary>
    Bayesian,
}

/// <summary>Settings of a <see cref="GrlSweep"/>.</summary>
public sealed record SweepOptions
{
    /// <summary>Every trial starts from these settings and applies its point on top.</summary>
    public FineTuneOptions BaseOptions { get; init; } = new();

    public SweepSearch Search { get; init; } = SweepSearch.Grid;

    /// <summary>Random search: the number of trials (required unless <see cref="MaxTime"/> is set). Grid and Bayesian:
    /// a cap (null = the whole grid).</summary>
    public int? MaxTrials { get; init; }

    /// <summary>A time budget, as AutoML's experiment time: no trial starts after it, and a trial still running when it
    /// runs out is stopped (recorded, not ranked). Null = no limit.</summary>
    public TimeSpan? MaxTime { get; init; }

    /// <summary><see cref="SweepSearch.Bayesian"/>: random points before the surrogate is used; null = max(3, dimensions + 1).</summary>
    public int? InitialTrials { get; init; }

    /// <summary>Median stopping: score every trial on the sweep's metric every N optimizer steps; a trial whose score
    /// at an evaluation is worse than the median of the earlier trials' scores at that step (once
    /// <see cref="MedianStoppingMinTrials"/> trials reached it) is stopped there, as Optuna's MedianPruner and Vizier's
    /// median rule do. A stopped trial is recorded with its last score but not ranked. 0 (default) = off.</summary>
    public int MedianStoppingEvery { get; init; }

    /// <summary>Earlier trials needed at a step before median stopping judges it. Default 3.</summary>
    public int MedianStoppingMinTrials { get; init; } = 3;

    /// <summary>Seed of the random search (the training seed is <see cref="FineTuneOptions.Seed"/>).</summary>
    public int Seed { get; init; }

    /// <summary>Where <c>leaderboard.csv</c>, <c>leaderboard.json</c> and the best model's folder <c>best/</c> go;
    /// null = nothing is written.</summary>
    public string? OutputDirectory { get; init; }

    /// <summary>Receives the sweep's warnings, e.g. that no trial beat the untrained baseline
    /// (<see cref="SweepResult.BaselineNote"/>); null = none.</summary>
    public Microsoft.Extensions.Logging.ILogger? Logger { get; init; }
}

/// <summary>One trial: its settings, its dev metric (NaN if it failed) and its training run.</summary>
/// <param name="Index">Position in the order trials ran (0-based).</param>
/// <param name="Point">The swept settings.</param>
/// <param name="Metric">Dev metric of the tuned model; NaN when the trial failed.</param>
/// <param name="Training">The training run (null when it failed before training ended).</param>
/// <param name="Elapsed">Training plus evaluation time.</param>
/// <param name="Error">Why the trial failed, or null.</param>
public sealed record SweepTrial(int Index, SweepPoint Point, double Metric, FineTuneResult? Training, TimeSpan Elapsed, string? Error)
{
    public bool Succeeded => Error is null && double.IsFinite(Metric);

    /// <summary>The step median stopping stopped the trial at (<see cref="SweepOptions.MedianStoppingEvery"/>), or null.</summary>
    public int? StoppedAtStep { get; init; }

    /// <summary>The trial's scores at its evaluation steps (<see cref="SweepOptions.MedianStoppingEvery"/>), in order.</summary>
    public IReadOnlyList<double> Evaluations { get; init; } = [];
}

/// <summary>A finished sweep: trials ranked best first, the untrained baseline, and where the best model went.</summary>
public sealed class SweepResult
{
    internal SweepResult(string metricName, bool higherIsBetter, double baselineMetric, IReadOnlyList<SweepTrial> ranked, string? bestModelFolder)
    {
        MetricName = metricName;
        HigherIsBetter = higherIsBetter;
        BaselineMetric = baselineMetric;
        Trials = ranked;
        BestModelFolder = bestModelFolder;
    }

    public string MetricName { get; }
    public bool HigherIsBetter { get; }

    /// <summary>The metric of the base model, untrained, embedding with the base options' pooling and attention.</summary>
    public double BaselineMetric { get; }

    /// <summary>All trials, best first; failed trials last.</summary>
    public IReadOnlyList<SweepTrial> Trials { get; }

    /// <summary>The best successful trial, or null if every trial failed.</summary>
    public SweepTrial? Best => Trials.Count > 0 && Trials[0].Succeeded ? Trials[0] : null;

    /// <summary>The exported folder of the best model (<see cref="SweepOptions.OutputDirectory"/>/best), or null.</summary>
    public string? BestModelFolder { get; }

    /// <summary>Whether the best trial's metric is strictly better than the untrained base model's. False when every
    /// trial failed, or when the best tuned model is no better than no training at all.</summary>
    public bool BeatBaseline => Best is { } b && (!double.IsFinite(BaselineMetric)
        || (HigherIsBetter ? b.Metric > BaselineMetric : b.Metric < BaselineMetric));

    /// <summary>
    /// A plain sentence when <see cref="BeatBaseline"/> is false (no trial improved on the untrained model, so the
    /// "best" model is worse than or equal to the base model), else null. Part of <see cref="Leaderboard"/> and of
    /// the JSON (<c>beat_baseline</c>, <c>note</c>), and logged as a warning.
    /// </summary>
    public string? BaselineNote => BeatBaseline ? null : Best is { } b
        ? string.Create(CultureInfo.InvariantCulture,
            $"No trial beat the untrained baseline: the best trial's {MetricName} is {b.Metric:F4}, the base model's {BaselineMetric:F4} ({(HigherIsBetter ? "higher" : "lower")} is better). " +
            $"The exported 'best' model is no improvement: keep the base model, or change the search (more data or steps, other learning rates or objectives).")
        : "No trial succeeded: there is no best model (see each trial's error).";

    private IReadOnlyList<string> SettingNames => Trials.Count == 0 ? [] : Trials[0].Point.Settings.Select(s => s.Key).ToList();

    private IEnumerable<string[]> Rows()
    {
        yield return ["rank", "trial", .. SettingNames, MetricName, "final_loss", "steps", "seconds", "error"];
        for (int r = 0; r < Trials.Count; r++)
        {
            var t = Trials[r];
            yield return
            [
                (r + 1).ToString(CultureInfo.InvariantCulture), t.Index.ToString(CultureInfo.InvariantCulture),
                .. t.Point.Settings.Select(s => s.Value),
                double.IsFinite(t.Metric) ? t.Metric.ToString("F4", CultureInfo.InvariantCulture) : "",
                t.Training?.FinalLosses is { } l ? l.Total.ToString("F4", CultureInfo.InvariantCulture) : "",
                t.Training?.StepsDone.ToString(CultureInfo.InvariantCulture) ?? "",
                t.Elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture),
                t.Error ?? "",
            ];
        }
    }

    /// <summary>The leaderboard as an aligned text table (best first), with the baseline underneath.</summary>
    public string Leaderboard()
    {
        var rows = Rows().ToList();
        int columns = rows[0].Length;
        bool anyError = Trials.Any(t => t.Error is not null);
        if (!anyError) { columns--; rows = rows.Select(r => r[..columns]).ToList(); }
        var widths = Enumerable.Range(0, columns).Select(c => rows.Max(r => r[c].Length)).ToArray();
        var sb = new StringBuilder();
        foreach (var row in rows)
            sb.AppendLine(string.Join("  ", row.Select((v, c) => v.PadRight(widths[c]))).TrimEnd());
        sb.Append(CultureInfo.InvariantCulture, $"baseline (untrained) {MetricName}: {BaselineMetric:F4}");
        if (BaselineNote is { } note) sb.AppendLine().Append("WARNING: ").Append(note);
        return sb.ToString();
    }

    /// <summary>The leaderboard as CSV (RFC 4180 quoting), best first.</summary>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        foreach (var row in Rows()) sb.AppendLine(string.Join(",", row.Select(Quote)));
        return sb.ToString();

        static string Quote(string v) => v.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + v.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : v;
    }

    /// <summary>
    /// The leaderboard as a plot (SVG, no dependencies): each trial's metric in run order (filled: ranked; hollow: stopped
    /// early or by the budget, at its last score), the best so far as a line, and the untrained baseline dashed.
    /// </summary>
    public string ToSvg()
    {
        const double width = 720, height = 400, left = 70, right = 20, top = 40, bottom = 50;
        var byRun = Trials.OrderBy(t => t.Index).ToList();
        var values = byRun.Where(t => double.IsFinite(t.Metric)).Select(t => t.Metric).ToList();
        if (double.IsFinite(BaselineMetric)) values.Add(BaselineMetric);
        double lo = values.Count > 0 ? values.Min() : 0, hi = values.Count > 0 ? values.Max() : 1;
        if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
        double pad = (hi - lo) * 0.08;
        lo -= pad; hi += pad;
        int n = Math.Max(1, byRun.Count);
        string X(double i) => (left + (width - left - right) * (n == 1 ? 0.5 : i / (n - 1))).ToString("F1", CultureInfo.InvariantCulture);
        string Y(double v) => (top + (height - top - bottom) * (hi - v) / (hi - lo)).ToString("F1", CultureInfo.InvariantCulture);
        string F(double v) => v.ToString("G4", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append(CultureInfo.InvariantCulture, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{Escape(MetricName)} by trial ({(HigherIsBetter ? "higher" : "lower")} is better)</text>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{height - bottom}\" x2=\"{width - right}\" y2=\"{height - bottom}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{height - bottom}\" stroke=\"black\"/>\n");
        for (int k = 0; k <= 4; k++)
        {
            double v = lo + (hi - lo) * k / 4;
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{left - 6}\" y=\"{Y(v)}\" text-anchor=\"end\" dominant-baseline=\"middle\">{F(v)}</text>\n");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{(left + width - right) / 2}\" y=\"{height - 12}\" text-anchor=\"middle\">trial (run order)</text>\n");
        if (double.IsFinite(BaselineMetric))
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{Y(BaselineMetric)}\" x2=\"{width - right}\" y2=\"{Y(BaselineMetric)}\" stroke=\"gray\" stroke-dasharray=\"5,4\"><title>baseline {F(BaselineMetric)}</title></line>\n");
        var best = new List<string>();
        double? leader = null;
        for (int i = 0; i < byRun.Count; i++)
        {
            var t = byRun[i];
            if (t.Succeeded && (leader is null || (HigherIsBetter ? t.Metric > leader : t.Metric < leader))) leader = t.Metric;
            if (leader is double b) best.Add($"{X(i)},{Y(b)}");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{X(i)}\" y=\"{height - bottom + 16}\" text-anchor=\"middle\">{t.Index}</text>\n");
            if (!double.IsFinite(t.Metric)) continue;
            string fill = t.Succeeded ? "steelblue" : "white";
            sb.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{X(i)}\" cy=\"{Y(t.Metric)}\" r=\"5\" fill=\"{fill}\" stroke=\"steelblue\"><title>{Escape($"trial {t.Index}: {t.Point} → {F(t.Metric)}{(t.Error is null ? "" : " (" + t.Error + ")")}")}</title></circle>\n");
        }
        if (best.Count > 0) sb.Append(CultureInfo.InvariantCulture, $"<polyline points=\"{string.Join(' ', best)}\" fill=\"none\" stroke=\"darkorange\" stroke-width=\"2\"><title>best so far</title></polyline>\n");
        sb.Append("</svg>\n");
        return sb.ToString();

        static string Escape(string text) => text.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal).Replace("\"", "&quot;", StringComparison.Ordinal);
    }

    /// <summary>The leaderboard as JSON: metric, baseline, best folder and the ranked trials with their settings.</summary>
    public string ToJson()
    {
        var trials = new JsonArray();
        for (int r = 0; r < Trials.Count; r++)
        {
            var t = Trials[r];
            var settings = new JsonObject();
            foreach (var (k, v) in t.Point.Settings) settings[k] = v;
            trials.Add(new JsonObject
            {
                ["rank"] = r + 1,
                ["trial"] = t.Index,
                ["settings"] = settings,
                [MetricName] = double.IsFinite(t.Metric) ? t.Metric : null,
                ["final_losses"] = t.Training?.FinalLosses is { } l ? new JsonObject(l.ToDictionary().Select(kv => new KeyValuePair<string, JsonNode?>(kv.Key, kv.Value))) : null,
                ["steps"] = t.Training?.StepsDone,
                ["seconds"] = Math.Round(t.Elapsed.TotalSeconds, 3),
                ["error"] = t.Error,
                ["stopped_at_step"] = t.StoppedAtStep,
                ["evaluations"] = t.Evaluations.Count == 0 ? null : new JsonArray(t.Evaluations.Select(v => (JsonNode?)(double.IsFinite(v) ? v : null)).ToArray()),
            });
        }
        var root = new JsonObject
        {
            ["metric"] = MetricName,
            ["higher_is_better"] = HigherIsBetter,
            ["baseline"] = double.IsFinite(BaselineMetric) ? BaselineMetric : null,
            ["beat_baseline"] = BeatBaseline,
            ["note"] = BaselineNote,
            ["best_model_folder"] = BestModelFolder,
            ["trials"] = trials,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }
}

/// <summary>
/// A small AutoML-style sweep over fine-tuning settings (strategy, temperature, LoRA rank, λ weights, pooling,
/// attention, learning rate, or any custom setting). Each trial trains a fresh copy of the base model
/// (<see cref="UllmeModel.Clone"/>: trials never see each other's weights) with <see cref="UllmeFineTuner"/>, scores it
/// on a dev metric (<see cref="StsSpearmanMetric"/> by default), and the best model so far is exported as a Hugging
/// Face / sentence-transformers folder. The leaderboard is returned and written as CSV and JSON.
/// <code>
/// var space = new SweepSpace(SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.Grl),
///                            SweepDimension.Temperature(0.02, 0.05));
/// var result = new GrlSweep(model, space, StsSpearmanMetric.FromStsBenchmark("sts-dev.csv"),
///     new SweepOptions { BaseOptions = options, OutputDirectory = "sweep" }).Run(train);
/// Console.WriteLine(result.Leaderboard());
/// </code>
/// </summary>
public sealed class GrlSweep
{
    private readonly UllmeModel _baseModel;
    private readonly SweepSpace _space;
    private readonly ISweepMetric _metric;
    private readonly SweepOptions _options;

    public GrlSweep(UllmeModel baseModel, SweepSpace space, ISweepMetric metric, SweepOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        ArgumentNullException.ThrowIfNull(space);
        ArgumentNullException.ThrowIfNull(metric);
        _baseModel = baseModel;
        _space = space;
        _metric = metric;
        _options = options ?? new SweepOptions();
        SweepRunner.Validate(_options);
    }

    /// <summary>The points the sweep will run, in order (not for <see cref="SweepSearch.Bayesian"/>, which picks each
    /// point after the trials before it).</summary>
    public IReadOnlyList<SweepPoint> Points() => SweepRunner.Points(_space, _options);

    /// <summary>Runs every trial on <paramref name="train"/>. A trial whose settings are invalid or whose training
    /// fails is recorded with its error and the sweep goes on; cancellation stops the sweep.</summary>
    /// <param name="train">Training examples every trial uses.</param>
    /// <param name="progress">Receives each finished trial (synchronously).</param>
    /// <param name="cancellationToken">Stops the sweep (between training steps of the running trial).</param>
    public SweepResult Run(IReadOnlyList<TrainingExample> train, IProgress<SweepTrial>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(train);
        if (train.Count == 0) throw new UllmeException("The sweep has no training examples.");
        double baseline = _metric.Evaluate(_baseModel, _options.BaseOptions.EvaluationEmbedding(_baseModel));
        var result = SweepRunner.Run<UllmeModel>(_space, _options, _metric.Name, _metric.HigherIsBetter, baseline,
            trial: (options, state, ct) =>
            {
                state.Model = _baseModel.Clone(Defaults(options));
                state.Training = new UllmeFineTuner(state.Model, options).Train(train, null, ct);
                return _metric.Evaluate(state.Model, options.EvaluationEmbedding(state.Model));
            },
            saveBest: (model, options, output) => SweepRunner.ReplaceFolder(Path.Combine(output, "best"), f => model.SaveFolder(f, Defaults(options))),
            release: model => model.Dispose(), keepBest: false,
            progress, log: null, cancellationToken, out _, trainingMetric: _metric);
        return result;
    }

    private static EmbeddingDefaults Defaults(FineTuneOptions o) => new(o.Pooling, o.EmbeddingAttention, true, o.MaxLength);

}
