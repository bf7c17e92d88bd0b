using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Losses;
using Xunit.Abstractions;

namespace Ullme.MLNet.Tests.Training.Integration;

/// <summary>
/// The strongest correctness evidence for the objectives on a real model: grl-spec.md's loss values at the base
/// weights of stories260K on the first 32 SNLI triplets, from an independent PyTorch run.
/// </summary>
[Collection(TorchCollection.Name)]
public sealed class ReferenceLossTests(ITestOutputHelper output) : SingleThreaded
{
    private static IReadOnlyList<TrainingExample> First32() =>
        TrainingData.LoadJsonl(Assets.Path("data", "snli", "triplets.jsonl")).Take(32).ToList();

    private static FineTuneOptions Protocol => new()
    {
        Weights = new LossWeights(1, 1, 1, 1),
        Lora = null,
        MaxLength = 128,
        Temperature = 0.05,
        Beta = 0.1,
        GenerationTemperature = 1,
    };

    [AssetFact]
    public void LossesAtBaseWeightsMatchTheIndependentPyTorchRun()
    {
        using var model = UllmeModel.Load(Assets.Stories260K);
        var losses = new UllmeFineTuner(model, Protocol).ComputeLosses(First32());
        var seq = new UllmeFineTuner(model, Protocol with { LanguageModelReduction = LanguageModelReduction.SequenceMean }).ComputeLosses(First32());
        output.WriteLine($"{losses}  (LM sequence-mean {seq.LanguageModel:F4})");
        Assert.Equal(4.4176, losses.Contrastive!.Value, 3);
        Assert.Equal(2.9867, losses.LanguageModel!.Value, 3);
        Assert.Equal(0.6931, losses.Preference!.Value, 3);
        Assert.Equal(0.2483, losses.Consistency!.Value, 3);
    }

    [AssetFact]
    public void ContrastiveLossWithCausalEmbeddingsMatchesTheReference()
    {
        using var model = UllmeModel.Load(Assets.Stories260K);
        var losses = new UllmeFineTuner(model, Protocol with { Weights = new LossWeights(1, 0, 0, 0), EmbeddingAttention = AttentionMode.Causal }).ComputeLosses(First32());
        output.WriteLine(losses.ToString());
        Assert.Equal(4.0369, losses.Contrastive!.Value, 3);
    }
}
