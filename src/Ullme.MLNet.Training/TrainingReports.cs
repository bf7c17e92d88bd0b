namespace Ullme.MLNet.Training;

/// <summary>The loss terms of one batch (a term is null when its weight is zero or it has no inputs, e.g. the
/// preference loss on a batch without negatives). <see cref="Total"/> = Σ λ·term.</summary>
public sealed record LossBreakdown(double Total, double? Contrastive, double? LanguageModel, double? Preference, double? Consistency)
{
    /// <summary><see cref="TrainingStrategy.Mntp"/>'s masked next-token loss (mean NLL of the masked tokens), else null.</summary>
    public double? MaskedNextToken { get; init; }

    /// <summary>The terms by name (only those computed), plus "total".</summary>
    public IReadOnlyDictionary<string, double> ToDictionary()
    {
        var d = new Dictionary<string, double> { ["total"] = Total };
        if (Contrastive is { } c) d["contrastive"] = c;
        if (LanguageModel is { } l) d["lm"] = l;
        if (Preference is { } p) d["preference"] = p;
        if (Consistency is { } k) d["kl"] = k;
        if (MaskedNextToken is { } m) d["mntp"] = m;
        return d;
    }

    public override string ToString() => string.Join(", ", ToDictionary().Select(kv => $"{kv.Key} {kv.Value:F4}"));
}

/// <summary>Reported after every optimizer step.</summary>
/// <param name="Step">1-based number of the step just taken.</param>
/// <param name="TotalSteps">Steps of the whole run.</param>
/// <param name="Epoch">0-based epoch of the step's last batch.</param>
/// <param name="ExamplesSeen">Training examples consumed so far (including before a resume).</param>
/// <param name="LearningRate">The step's learning rate.</param>
/// <param name="Losses">The step's loss terms (averaged over its micro-batches).</param>
/// <param name="GradientNorm">Global gradient norm before clipping.</param>
/// <param name="Applied">False when the update was skipped (NaN/∞).</param>
/// <param name="Message">Why a step was skipped, or another notice; null normally.</param>
/// <param name="Elapsed">Wall time since this process started training.</param>
public sealed record TrainingProgress(int Step, int TotalSteps, int Epoch, long ExamplesSeen, double LearningRate,
    LossBreakdown Losses, double GradientNorm, bool Applied, string? Message, TimeSpan Elapsed)
{
    /// <summary>The dev metric after this step (<see cref="FineTuneOptions.EvaluateEvery"/>), or null when the step was
    /// not evaluated.</summary>
    public double? Evaluation { get; init; }
}

/// <summary>What a training run did.</summary>
/// <param name="StepsDone">Optimizer steps completed (including those before a resume).</param>
/// <param name="StepsSkipped">Steps whose update was skipped for NaN/∞ in this process.</param>
/// <param name="ResumedFromStep">The step a resumed run continued from, or null.</param>
/// <param name="History">Every step this process took.</param>
/// <param name="LastCheckpoint">The newest checkpoint folder written, or null.</param>
/// <param name="Elapsed">Wall time of this process's training.</param>
/// <param name="ExamplesPerSecond">Training throughput of this process.</param>
public sealed record FineTuneResult(int StepsDone, int StepsSkipped, int? ResumedFromStep, IReadOnlyList<TrainingProgress> History,
    string? LastCheckpoint, TimeSpan Elapsed, double ExamplesPerSecond)
{
    /// <summary>The losses of the last step, or null if no step ran in this process.</summary>
    public LossBreakdown? FinalLosses => History.Count > 0 ? History[^1].Losses : null;

    /// <summary>The step whose evaluation scored best (<see cref="FineTuneOptions.EvaluateEvery"/>), or null.</summary>
    public int? BestStep { get; init; }

    /// <summary>The best evaluation score, or null.</summary>
    public double? BestEvaluation { get; init; }

    /// <summary>Whether the weights of <see cref="BestStep"/> were put back at the end (<see cref="FineTuneOptions.KeepBest"/>,
    /// and the best was not the last step).</summary>
    public bool RestoredBest { get; init; }

    /// <summary>Time spent before the first step computing the reference model's log-probabilities of every training
    /// candidate (full fine-tuning with a preference term: the base weights change from the first step on); not part of
    /// <see cref="Elapsed"/>. Zero when no cache was computed.</summary>
    public TimeSpan ReferenceCacheTime { get; init; }
}
