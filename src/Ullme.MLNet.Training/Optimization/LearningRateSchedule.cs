namespace Ullme.MLNet.Training.Optimization;

/// <summary>What the learning rate does after warm-up.</summary>
public enum DecayKind
{
    /// <summary>Half a cosine from the peak down to 0 at the last step (ULLME's default).</summary>
    Cosine,

    /// <summary>A straight line from the peak down to 0 at the last step.</summary>
    Linear,

    /// <summary>Stays at the peak.</summary>
    Constant,
}

/// <summary>
/// Linear warm-up then decay, as Hugging Face's <c>get_{cosine,linear}_schedule_with_warmup</c> (the multiplier
/// for 0-based optimizer step s):
/// <code>
///   s &lt; W:  s / W                                       (so the first step runs at lr 0)
///   s ≥ W:  p = (s − W) / max(1, S − W)
///           cosine: ½(1 + cos(π p))     linear: max(0, 1 − p)     constant: 1
/// </code>
/// Warm-up keeps Adam's early, badly-estimated second moments from producing huge steps on pretrained weights.
/// </summary>
public sealed record LearningRateSchedule
{
    /// <summary>Peak learning rate.</summary>
    public required double PeakLearningRate { get; init; }

    /// <summary>Total optimizer steps S of the run.</summary>
    public required int TotalSteps { get; init; }

    /// <summary>Warm-up steps W; null = ULLME's default min(⌊10% of S⌋, 500).</summary>
    public int? WarmupSteps { get; init; }

    public DecayKind Decay { get; init; } = DecayKind.Cosine;

    /// <summary>The warm-up actually used.</summary>
    public int EffectiveWarmupSteps => WarmupSteps ?? DefaultWarmup(TotalSteps);

    /// <summary>ULLME's rule: min(⌊0.1·S⌋, 500).</summary>
    public static int DefaultWarmup(int totalSteps) => Math.Min(totalSteps / 10, 500);

    /// <summary>The learning rate for 0-based optimizer step <paramref name="step"/>.</summary>
    public double LearningRateAt(int step)
    {
        Validate();
        if (step < 0) throw new UllmeException($"Learning-rate schedule: step must be non-negative, got {step}.");
        int w = EffectiveWarmupSteps;
        if (step < w) return PeakLearningRate * step / w;
        double p = (double)(step - w) / Math.Max(1, TotalSteps - w);
        double factor = Decay switch
        {
            DecayKind.Cosine => p >= 1 ? 0 : 0.5 * (1 + Math.Cos(Math.PI * p)),
            DecayKind.Linear => Math.Max(0, 1 - p),
            DecayKind.Constant => 1,
            _ => throw new UllmeException($"Learning-rate schedule: unknown decay {Decay}."),
        };
        return PeakLearningRate * factor;
    }

    private void Validate()
    {
        if (TotalSteps <= 0) throw new UllmeException($"Learning-rate schedule: TotalSteps must be positive, got {TotalSteps}.");
        if (WarmupSteps is < 0) throw new UllmeException($"Learning-rate schedule: WarmupSteps must be non-negative, got {WarmupSteps}.");
        if (WarmupSteps > TotalSteps) throw new UllmeException($"Learning-rate schedule: WarmupSteps ({WarmupSteps}) exceeds TotalSteps ({TotalSteps}); leave WarmupSteps unset (null) to derive it from the run's length (min(10% of the steps, 500); {DefaultWarmup(TotalSteps)} here).");
        if (!(PeakLearningRate >= 0) || !double.IsFinite(PeakLearningRate)) throw new UllmeException($"Learning-rate schedule: PeakLearningRate must be a non-negative number, got {PeakLearningRate}.");
    }
}
