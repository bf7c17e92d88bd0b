using System.Globalization;
using System.Text.Json.Serialization;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;

namespace Ullme.MLNet.Transforms;

/// <summary>Settings of a <see cref="GrlTrainerSweep"/>: the base trainer settings every trial starts from, and how
/// trials are picked and saved.</summary>
public sealed class GrlTrainerSweepOptions
{
    /// <summary>Every trial is a <see cref="GrlTrainer"/> with these settings and the trial's point applied to
    /// <see cref="GrlTrainerOptions.FineTune"/>. Its <see cref="GrlTrainerOptions.ExportFolder"/> is ignored (the
    /// sweep saves the best model itself) and checkpointing is off in trials.</summary>
    public GrlTrainerOptions Trainer { get; set; } = new();

    /// <summary>Grid (every point, capped by <see cref="MaxTrials"/>) or random search.</summary>
    public SweepSearch Search { get; set; } = SweepSearch.Grid;

    /// <summary>Random search: the number of trials (required). Grid: a cap (null = the whole grid).</summary>
    public int? MaxTrials { get; set; }

    /// <summary>A time budget: no trial starts after it, and a running trial is stopped when it runs out (see
    /// <see cref="SweepOptions.MaxTime"/>). Null = no limit.</summary>
    public TimeSpan? MaxTime { get; set; }

    /// <summary><see cref="SweepSearch.Bayesian"/>: random points before the surrogate is used (see <see cref="SweepOptions.InitialTrials"/>).</summary>
    public int? InitialTrials { get; set; }

    /// <summary>Seed of the random search (the training seed is the base options' <see cref="FineTuneOptions.Seed"/>).</summary>
    public int Seed { get; set; }

    /// <summary>Where <c>leaderboard.{txt,csv,json}</c>, the best model's export folder <c>best/</c> and its ML.NET
    /// model <c>best.zip</c> go; null = nothing is written (the best transformer is still returned).</summary>
    public string? OutputDirectory { get; set; }

    /// <summary>Also save the best transformer with <c>mlContext.Model.Save</c> as <c>best.zip</c>. Default true.</summary>
    public bool SaveMLNetModel { get; set; } = true;

    /// <summary>Receives each finished trial, synchronously.</summary>
    [JsonIgnore] public IProgress<SweepTrial>? Progress { get; set; }

    /// <summary>Stops the sweep (between training steps of the running trial). <c>MLContext.CancelExecution()</c>
    /// and the base trainer's token work too.</summary>
    [JsonIgnore] public CancellationToken CancellationToken { get; set; }

    /// <summary>A copy (the trainer settings are copied too).</summary>
    public GrlTrainerSweepOptions Clone()
    {
        var c = (GrlTrainerSweepOptions)MemberwiseClone();
        c.Trainer = Trainer?.Clone()!;
        return c;
    }

    /// <summary>The engine-level sweep settings (<see cref="SweepOptions"/>) these options stand for.</summary>
    internal SweepOptions ToSweepOptions() => new()
    {
        BaseOptions = Trainer.FineTune, Search = Search, MaxTrials = MaxTrials, MaxTime = MaxTime, InitialTrials = InitialTrials, Seed = Seed, OutputDirectory = OutputDirectory,
    };

    /// <summary>Checks every option; errors name the option.</summary>
    public void Validate(bool modelIsLoaded = false)
    {
        if (Trainer is null) throw new UllmeException("GrlTrainerSweepOptions.Trainer is null.");
        Trainer.Validate(modelIsLoaded);
        SweepRunner.Validate(ToSweepOptions());
    }
}

/// <summary>A finished <see cref="GrlTrainerSweep"/>: the ranked leaderboard and the best model, in memory and on disk.</summary>
public sealed class GrlTrainerSweepResult
{
    internal GrlTrainerSweepResult(SweepResult sweep, UllmeEmbeddingTransformer? bestModel, string? bestModelZip)
    {
        Sweep = sweep;
        BestModel = bestModel;
        BestModelZip = bestModelZip;
    }

    /// <summary>Trials best first, the untrained baseline, the leaderboard as text/CSV/JSON, and the export folder.</summary>
    public SweepResult Sweep { get; }

    /// <summary>The best successful trial, or null if every trial failed.</summary>
    public SweepTrial? Best => Sweep.Best;

    /// <summary>The best trial's transformer (embeds <see cref="GrlTrainerOptions.EffectiveInputColumnName"/> like a
    /// <see cref="GrlTrainer"/> fit), or null if every trial failed. The caller owns its model.</summary>
    public UllmeEmbeddingTransformer? BestModel { get; }

    /// <summary>The best transformer saved with <c>mlContext.Model.Save</c> (<c>OutputDirectory/best.zip</c>), or null.</summary>
    public string? BestModelZip { get; }

    /// <summary>The export folder of the best model (<c>OutputDirectory/best</c>), or null.</summary>
    public string? BestModelFolder => Sweep.BestModelFolder;

    /// <summary>The leaderboard as an aligned text table, best first, with the baseline underneath.</summary>
    public string Leaderboard() => Sweep.Leaderboard();
}

/// <summary>
/// A small AutoML-style sweep over <see cref="GrlTrainer"/> settings (strategy, temperature, LoRA rank, λ weights,
/// pooling, attention, learning rate, ...), scored with ML.NET evaluation. Built by
/// <c>mlContext.Transforms.UllmeGrlSweep(...)</c>.
/// <para>
/// Each trial applies its <see cref="SweepPoint"/> to the base <see cref="GrlTrainerOptions.FineTune"/>, fits a
/// <see cref="GrlTrainer"/> on the training <see cref="IDataView"/> (every fit trains a fresh copy of the base model,
/// so trials never see each other's weights), and scores the tuned transformer with a
/// <see cref="TransformerSweepMetric"/> — any ML.NET evaluation over a dev IDataView. The points, the trial loop,
/// failure handling, ranking and leaderboard files are those of <see cref="GrlSweep"/> (one shared runner). The best
/// transformer so far is kept in memory and written as <c>best/</c> (Hugging Face / sentence-transformers folder)
/// and <c>best.zip</c> (<c>mlContext.Model.Save</c>). Trials and their metrics go to the MLContext's log (channel
/// "GrlTrainerSweep"); each trial's training steps go to GrlTrainer's channels as usual.
/// </para>
/// </summary>
public sealed class GrlTrainerSweep
{
    private readonly IHostEnvironment _env;
    private readonly IHost _host;
    private readonly SweepSpace _space;
    private readonly TransformerSweepMetric _metric;
    private readonly GrlTrainerSweepOptions _options;
    private readonly UllmeModel? _model;

    internal GrlTrainerSweep(IHostEnvironment env, SweepSpace space, TransformerSweepMetric metric, GrlTrainerSweepOptions options, UllmeModel? model)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(space);
        ArgumentNullException.ThrowIfNull(metric);
        ArgumentNullException.ThrowIfNull(options);
        _env = env;
        _host = env.Register(nameof(GrlTrainerSweep));
        _space = space;
        _metric = metric;
        _options = options.Clone();
        if (model is not null)
        {
            _options.Trainer.Model = model.SourceFolder;
            _options.Trainer.DType = model.LoadOptions.DType;
            _options.Trainer.Device = model.LoadOptions.Device;
        }
        _options.Validate(modelIsLoaded: model is not null);
        _model = model;
    }

    /// <summary>A copy of the settings.</summary>
    public GrlTrainerSweepOptions Options => _options.Clone();

    /// <summary>The points the sweep will run, in order.</summary>
    public IReadOnlyList<SweepPoint> Points() => SweepRunner.Points(_space, _options.ToSweepOptions());

    /// <summary>
    /// Runs every trial on <paramref name="train"/> (columns as in <see cref="GrlTrainerSweepOptions.Trainer"/>). The
    /// training columns and the dev metric (on the untrained base model: the baseline) are checked before any trial
    /// runs. A trial whose settings are invalid or whose training or metric throws <see cref="UllmeException"/> is
    /// recorded with its error and the sweep goes on.
    /// </summary>
    /// <exception cref="UllmeException">Bad training columns, or the dev metric fails on the base model (the message
    /// says which metric and why, e.g. the missing dev column).</exception>
    /// <exception cref="OperationCanceledException">The sweep was cancelled.</exception>
    public GrlTrainerSweepResult Run(IDataView train)
    {
        ArgumentNullException.ThrowIfNull(train);
        var trainer = _options.Trainer;
        // Reads (and so checks) the training rows once up front: a bad column must stop the sweep, not fail every trial.
        int rows = GrlTrainer.ReadExamples(train, trainer).Count;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_options.CancellationToken, trainer.CancellationToken);
        var baseModel = _model ?? ModelLoading.Load(_env, trainer.DType, trainer.Device, trainer.Model, "UllmeGrlSweep");
        try
        {
            var sweepOptions = _options.ToSweepOptions();
            int trials = SweepRunner.TrialCap(_space, sweepOptions);
            Log(string.Create(CultureInfo.InvariantCulture,
                $"up to {trials} trial(s) ({_options.Search}{(_options.MaxTime is { } t ? $", {t.TotalSeconds:F0} s budget" : "")}) over {string.Join(", ", _space.Dimensions.Select(d => d.Name))} on {rows} training rows; dev metric {_metric.Name} ({(_metric.HigherIsBetter ? "higher" : "lower")} is better)"));
            double baseline = Baseline(baseModel);
            Log(string.Create(CultureInfo.InvariantCulture, $"baseline (untrained) {_metric.Name} {baseline:F4}"));

            var ml = _env as MLContext;
            var sweep = SweepRunner.Run<UllmeEmbeddingTransformer>(_space, sweepOptions, _metric.Name, _metric.HigherIsBetter, baseline,
                trial: (fineTune, state, ct) =>
                {
                    var o = trainer.Clone();
                    o.FineTune = fineTune;
                    o.ExportFolder = null;
                    o.CancellationToken = ct;
                    var estimator = new GrlTrainer(_env, o, baseModel);
                    state.Model = estimator.Fit(train);
                    state.Training = estimator.LastTrainingResult;
                    return _metric.Evaluate(state.Model);
                },
                saveBest: (model, _, output) =>
                {
                    SweepRunner.ReplaceFolder(Path.Combine(output, "best"), model.SaveModelFolder);
                    if (_options.SaveMLNetModel)
                        SweepRunner.ReplaceFile(Path.Combine(output, "best.zip"), f => (ml ?? new MLContext()).Model.Save(model, train.Schema, f));
                },
                release: model => model.Model.Dispose(), keepBest: true,
                _options.Progress, Log, linked.Token, out var best);

            string? zip = best is not null && _options.OutputDirectory is { } dir && _options.SaveMLNetModel ? Path.Combine(Path.GetFullPath(dir), "best.zip") : null;
            Log("leaderboard" + Environment.NewLine + sweep.Leaderboard());
            if (sweep.BestModelFolder is { } folder) Log($"best model: '{folder}'{(zip is null ? "" : $", '{zip}'")}");
            if (sweep.BaselineNote is { } note) Warn(note);
            return new GrlTrainerSweepResult(sweep, best, zip);
        }
        finally
        {
            if (_model is null) baseModel.Dispose();
        }
    }

    /// <summary>The metric of the untrained base model, embedding with the base settings. Runs first, so a dev metric
    /// that cannot work (missing column, wrong type) stops the sweep before any training.</summary>
    private double Baseline(UllmeModel baseModel)
    {
        var transformer = new UllmeEmbeddingTransformer(_env, _options.Trainer.ToEmbeddingOptions(), baseModel);
        try
        {
            return _metric.Evaluate(transformer);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new UllmeException($"GrlTrainerSweep: the dev metric '{_metric.Name}' failed on the untrained base model: {e.Message}", e);
        }
    }

    private void Warn(string message)
    {
        using var ch = _host.Start(nameof(GrlTrainerSweep));
        ch.Warning(MessageSensitivity.None, "GrlTrainerSweep: " + message);
    }

    private void Log(string message)
    {
        using var ch = _host.Start(nameof(GrlTrainerSweep));
        ch.Info(MessageSensitivity.None, "GrlTrainerSweep: " + message);
    }
}
