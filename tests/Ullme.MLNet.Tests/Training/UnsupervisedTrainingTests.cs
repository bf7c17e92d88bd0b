using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Tests.Modeling;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Training;

/// <summary>LLM2Vec's unsupervised stages through <see cref="UllmeFineTuner"/>: MNTP and SimCSE, and the decoder's
/// attention dropout SimCSE relies on.</summary>
[Collection(TorchCollection.Name)]
public class UnsupervisedTrainingTests
{
    private static IReadOnlyList<TrainingExample> Texts(int count, int seed)
    {
        var rng = new Random(seed);
        return TrainingData.FromTexts(Enumerable.Range(0, count).Select(_ => string.Join(' ', Enumerable.Range(0, rng.Next(5, 9)).Select(_ => "w" + rng.Next(0, 60)))));
    }

    [Fact]
    public void AttentionDropoutActsOnlyWhileTraining_AndReplaysFromTheGeneratorState()
    {
        using var scope = NewDisposeScope();
        using var model = TinyDecoder.Load();
        var backbone = model.Backbone;
        Assert.True(backbone.SupportsAttentionDropout);
        Assert.Equal(0, backbone.AttentionDropout);
        var ids = tensor(new long[] { 1, 5, 9, 12, 7, 1, 4, 8, 0, 0 }, [2, 5]);
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 }, [2, 5]);
        using var noGrad = no_grad();
        var plain = backbone.Forward(ids, mask, AttentionMode.Bidirectional);
        backbone.AttentionDropout = 0.3;
        try
        {
            Assert.Equal(0, (backbone.Forward(ids, mask, AttentionMode.Bidirectional) - plain).abs().max().item<float>());   // eval: off
            backbone.train();
            using var state = ReplayableDropout.CaptureState();
            var first = backbone.Forward(ids, mask, AttentionMode.Bidirectional);
            var second = backbone.Forward(ids, mask, AttentionMode.Bidirectional);
            ReplayableDropout.RestoreState(state);
            var replay = backbone.Forward(ids, mask, AttentionMode.Bidirectional);
            Assert.True((first - plain).abs().max().item<float>() > 1e-3, "dropout changed nothing in training mode");
            Assert.True((first - second).abs().max().item<float>() > 1e-3, "two training forwards drew the same masks");
            Assert.Equal(0, (first - replay).abs().max().item<float>());
        }
        finally
        {
            backbone.eval();
            backbone.AttentionDropout = 0;
        }
    }

    [Fact]
    public void SimCseEmbedsEachTextTwiceWithDifferentDropout_TheOnlyDifferenceFromTheEvalLoss()
    {
        var batch = Texts(6, 1);
        double Trained(double dropout)
        {
            using var model = TinyDecoder.Load();
            var tuner = new UllmeFineTuner(model, new FineTuneOptions { Strategy = TrainingStrategy.SimCse, Lora = null, AttentionDropout = dropout, BatchSize = 6 });
            return tuner.BackwardOnce(batch).Contrastive!.Value;
        }
        double evaluated;
        using (var model = TinyDecoder.Load())
            evaluated = new UllmeFineTuner(model, new FineTuneOptions { Strategy = TrainingStrategy.SimCse, Lora = null }).ComputeLosses(batch).Contrastive!.Value;

        // Without dropout the two views are the same vector, in training as in evaluation.
        Assert.Equal(evaluated, Trained(0), 5);
        // With it (SimCSE's default 0.3) the positive is another view: its similarity drops below 1 and the loss rises.
        Assert.Equal(0.3, new FineTuneOptions { Strategy = TrainingStrategy.SimCse }.EffectiveAttentionDropout);
        // More dropout, views further apart, a higher loss.
        double t3 = Trained(0.3), t6 = Trained(0.6);
        Assert.True(t3 > 1.2 * evaluated && t6 > t3, $"dropout did not raise the SimCSE loss (eval {evaluated}, p 0.3 {t3}, p 0.6 {t6})");
    }

    [Fact]
    public void MntpLowersTheMaskedTokenLoss_AndLeavesTheModelsDropoutAsItWas()
    {
        var data = Texts(16, 2);
        using var model = TinyDecoder.Load();
        var options = new FineTuneOptions { Strategy = TrainingStrategy.Mntp, Lora = null, BatchSize = 8, MaxSteps = 30, AttentionDropout = 0.1, Optimizer = new AdamWSettings { LearningRate = 1e-2 } };
        var evaluation = data.Take(8).ToList();
        double Loss()
        {
            using var state = ReplayableDropout.CaptureState();
            TrainingSeed.Apply(7);
            double value = new UllmeFineTuner(model, options).ComputeLosses(evaluation).MaskedNextToken!.Value;
            ReplayableDropout.RestoreState(state);
            return value;
        }
        double before = Loss();
        var result = new UllmeFineTuner(model, options).Train(data);
        double after = Loss();
        Assert.Equal(30, result.StepsDone);
        Assert.All(result.History, h => Assert.NotNull(h.Losses.MaskedNextToken));
        Assert.All(result.History, h => Assert.Null(h.Losses.Contrastive));
        Assert.True(after < 0.8 * before, $"MNTP loss {before} → {after}");
        Assert.Equal(0, model.Backbone.AttentionDropout);
    }

    [Fact]
    public void TheUnsupervisedStrategiesCheckTheirDataModelAndOptions()
    {
        using var model = TinyDecoder.Load();
        var triple = TinyDecoder.Examples(2, 3);
        var e = Assert.Throws<UllmeException>(() => new UllmeFineTuner(model, new FineTuneOptions { Strategy = TrainingStrategy.SimCse }).Train(triple));
        Assert.Contains("TrainingData.FromTexts", e.Message);
        Assert.Contains("example 0", e.Message);
        Assert.Throws<UllmeException>(() => new UllmeFineTuner(model, new FineTuneOptions { Strategy = TrainingStrategy.Mntp }).Train(triple));

        Assert.Contains("FineTuneOptions.Weights", Assert.Throws<UllmeException>(() =>
            new FineTuneOptions { Strategy = TrainingStrategy.Mntp, Weights = new LossWeights(1, 0, 0, 0) }.Validate()).Message);
        Assert.Contains("FineTuneOptions.MaskRatio", Assert.Throws<UllmeException>(() => new FineTuneOptions { Strategy = TrainingStrategy.Mntp, MaskRatio = 1 }.Validate()).Message);
        Assert.Contains("FineTuneOptions.MaskToken", Assert.Throws<UllmeException>(() => new FineTuneOptions { MaskToken = "unk" }.Validate()).Message);
        Assert.Contains("FineTuneOptions.AttentionDropout", Assert.Throws<UllmeException>(() => new FineTuneOptions { AttentionDropout = 1 }.Validate()).Message);
        Assert.Throws<UllmeException>(() => new FineTuneOptions { Strategy = TrainingStrategy.Mntp, MatryoshkaDimensions = [16] }.Validate());

        var bertConfig = ModelConfig.Parse(BertEncoderTests.TinyConfigJson, "tiny-bert/config.json");
        using var bert = new UllmeModel(bertConfig, new WordTokenizer(100), BertEncoderTests.CreateTiny(),
            new EmbeddingDefaults(MLNet.Pooling.PoolingMode.Mean, AttentionMode.Bidirectional, true, 64), new ModelLoadOptions(), "tiny-bert", ".", CPU, ScalarType.Float32);
        Assert.Contains("language-model head", Assert.Throws<UllmeException>(() => new UllmeFineTuner(bert, new FineTuneOptions { Strategy = TrainingStrategy.Mntp })).Message);
        Assert.Contains("FineTuneOptions.AttentionDropout", Assert.Throws<UllmeException>(() => new UllmeFineTuner(bert, new FineTuneOptions { Strategy = TrainingStrategy.Contrastive, AttentionDropout = 0.2 })).Message);
        _ = new UllmeFineTuner(bert, new FineTuneOptions { Strategy = TrainingStrategy.SimCse });   // BERT runs SimCSE on its config's dropouts
    }
}
