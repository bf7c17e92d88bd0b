using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Optimization;

/// <summary>
/// AdamW hyper-parameters (Loshchilov &amp; Hutter: Adam with weight decay applied to the weights directly,
/// θ ← θ(1 − lr·wd) − lr·m̂/(√v̂ + ε)). Defaults are ULLME's: lr 1e-4, no weight decay.
/// </summary>
public sealed record AdamWSettings
{
    /// <summary>Peak learning rate (reached after warm-up). Default 1e-4.</summary>
    public double LearningRate { get; init; } = 1e-4;

    /// <summary>Decoupled weight decay. Default 0.</summary>
    public double WeightDecay { get; init; }

    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Epsilon { get; init; } = 1e-8;

    /// <summary>Exclude biases and norm weights (every parameter with fewer than 2 dimensions) from weight decay, as
    /// BERT and HF's Trainer do. Default true.</summary>
    public bool ExcludeBiasAndNormFromWeightDecay { get; init; } = true;

    internal void Validate()
    {
        if (!(LearningRate >= 0) || !double.IsFinite(LearningRate)) throw new UllmeException($"Optimizer option LearningRate must be a non-negative number, got {LearningRate}.");
        if (!(WeightDecay >= 0) || !double.IsFinite(WeightDecay)) throw new UllmeException($"Optimizer option WeightDecay must be a non-negative number, got {WeightDecay}.");
        if (!(Beta1 >= 0 && Beta1 < 1)) throw new UllmeException($"Optimizer option Beta1 must be in [0, 1), got {Beta1}.");
        if (!(Beta2 >= 0 && Beta2 < 1)) throw new UllmeException($"Optimizer option Beta2 must be in [0, 1), got {Beta2}.");
        if (!(Epsilon > 0)) throw new UllmeException($"Optimizer option Epsilon must be positive, got {Epsilon}.");
    }
}

/// <summary>Builds TorchSharp's AdamW over the trainable parameters of a model.</summary>
internal static class AdamWFactory
{
    /// <summary>
    /// AdamW over every parameter that requires grad, in two groups: with weight decay (matrices) and without
    /// (biases and norm weights, when <see cref="AdamWSettings.ExcludeBiasAndNormFromWeightDecay"/>). Group order is
    /// fixed (decay, then no-decay; parameters in model order) so optimizer state saved by a checkpoint maps back.
    /// </summary>
    public static AdamW Create(IEnumerable<(string name, Parameter parameter)> parameters, AdamWSettings settings)
    {
        settings.Validate();
        var trainable = parameters.Where(p => p.parameter.requires_grad).ToList();
        if (trainable.Count == 0)
            throw new UllmeException("The optimizer got no trainable parameters (every parameter is frozen).");
        var decay = trainable.Where(p => !IsNoDecay(p, settings)).Select(p => p.parameter).ToList();
        var noDecay = trainable.Where(p => IsNoDecay(p, settings)).Select(p => p.parameter).ToList();
        var groups = new List<AdamW.ParamGroup>
        {
            new(decay, settings.LearningRate, settings.Beta1, settings.Beta2, settings.Epsilon, settings.WeightDecay),
            new(noDecay, settings.LearningRate, settings.Beta1, settings.Beta2, settings.Epsilon, 0),
        };
        // Not optim.AdamW: TorchSharp's step can lose its scalar operands to the finalizer mid-call (see ScalarSafe.AdamW).
        return new ScalarSafe.AdamW(groups, settings.LearningRate, settings.Beta1, settings.Beta2, settings.Epsilon, settings.WeightDecay);
    }

    /// <summary>Whether a parameter is exempt from weight decay.</summary>
    public static bool IsNoDecay((string name, Parameter parameter) p, AdamWSettings settings) =>
        settings.ExcludeBiasAndNormFromWeightDecay && (p.parameter.dim() < 2 || p.name.EndsWith("bias", StringComparison.Ordinal));

    /// <summary>Sets the learning rate of every parameter group.</summary>
    public static void SetLearningRate(optim.Optimizer optimizer, double learningRate)
    {
        foreach (var group in optimizer.ParamGroups) group.LearningRate = learningRate;
    }
}
