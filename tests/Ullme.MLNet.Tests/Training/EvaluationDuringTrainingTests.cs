using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Optimization;
using Ullme.MLNet.Training.Sweeps;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Training;

/// <summary><see cref="FineTuneOptions.EvaluateEvery"/> and <see cref="FineTuneOptions.KeepBest"/>.</summary>
[Collection(TorchCollection.Name)]
public class EvaluationDuringTrainingTests
{
    /// <summary>Returns scripted scores and records, at each call, the step's embedding of a probe text.</summary>
    private sealed class ScriptedMetric(params double[] scores) : ISweepMetric
    {
        public List<float[]> Probes { get; } = [];
        public List<bool> Training { get; } = [];
        public string Name => "scripted";
        public bool HigherIsBetter => true;

        public double Evaluate(UllmeModel model, EmbeddingOptions embedding)
        {
            Training.Add(model.Backbone.training);
            Probes.Add(new EmbeddingEngine(model).Embed(["w1 w2 w3"], embedding)[0]);
            return scores[Probes.Count - 1];
        }
    }

    private static FineTuneOptions Options(ISweepMetric? metric, int every, bool keepBest) => new()
    {
        Strategy = TrainingStrategy.Contrastive,
        BatchSize = 4,
        MaxSteps = 7,
        Lora = new LoraOptions { Rank = 4, Dropout = 0.1 },                 // dropout draws from the random stream
        Optimizer = new AdamWSettings { LearningRate = 5e-3 },
        Evaluator = metric,
        EvaluateEvery = every,
        KeepBest = keepBest,
    };

    [Fact]
    public void TheMetricIsScoredEveryNStepsAndAfterTheLast_InEvalMode_WithoutChangingTheRun()
    {
        var data = TinyDecoder.Examples(12, 4);
        FineTuneResult plain;
        using (var model = TinyDecoder.Load())
            plain = new UllmeFineTuner(model, Options(null, 0, false)).Train(data);

        var metric = new ScriptedMetric(0.1, 0.2, 0.3);
        FineTuneResult evaluated;
        using (var model = TinyDecoder.Load())
            evaluated = new UllmeFineTuner(model, Options(metric, 3, false)).Train(data);

        Assert.Equal([3, 6, 7], evaluated.History.Where(h => h.Evaluation is not null).Select(h => h.Step));
        Assert.Equal([0.1, 0.2, 0.3], evaluated.History.Where(h => h.Evaluation is not null).Select(h => h.Evaluation!.Value));
        Assert.All(metric.Training, t => Assert.False(t));
        // The evaluations touch neither the weights nor the random stream: the losses are those of the run without them.
        Assert.Equal(plain.History.Select(h => h.Losses.Total), evaluated.History.Select(h => h.Losses.Total));
        Assert.Equal(7, evaluated.BestStep);
        Assert.False(evaluated.RestoredBest);
    }

    [Fact]
    public void KeepBestPutsBackTheWeightsOfTheBestEvaluation()
    {
        var data = TinyDecoder.Examples(12, 4);
        var metric = new ScriptedMetric(0.4, 0.9, 0.5);                     // step 6 is best
        using var model = TinyDecoder.Load();
        var result = new UllmeFineTuner(model, Options(metric, 3, keepBest: true)).Train(data);
        Assert.Equal(6, result.BestStep);
        Assert.Equal(0.9, result.BestEvaluation);
        Assert.True(result.RestoredBest);

        // The merged model embeds as the model did when step 6 was scored, not as at step 7.
        var after = new EmbeddingEngine(model).Embed(["w1 w2 w3"], new EmbeddingOptions { Pooling = MLNet.Pooling.PoolingMode.Mean, Attention = MLNet.Modeling.AttentionMode.Bidirectional, MaxLength = 256 })[0];
        Assert.True(after.Zip(metric.Probes[1]).Max(p => Math.Abs(p.First - p.Second)) < 1e-5, "not the step-6 weights");
        Assert.True(after.Zip(metric.Probes[2]).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, "steps 6 and 7 embed alike; the test proves nothing");
    }

    [Fact]
    public void EvaluationOptionsAreChecked()
    {
        Assert.Contains("FineTuneOptions.Evaluator", Assert.Throws<UllmeException>(() => new FineTuneOptions { EvaluateEvery = 2 }.Validate()).Message);
        Assert.Contains("FineTuneOptions.KeepBest", Assert.Throws<UllmeException>(() => new FineTuneOptions { KeepBest = true }.Validate()).Message);
        Assert.Equal(new FineTuneOptions().Fingerprint(), new FineTuneOptions { EvaluateEvery = 5, KeepBest = true }.Fingerprint());
    }

    [Fact]
    public void SharedNegativesMakeTheAccumulatedMicroBatchesOneContrastiveBatch()
    {
        var data = TinyDecoder.Examples(16, 6);
        FineTuneResult Run(FineTuneOptions o)
        {
            using var model = TinyDecoder.Load();
            return new UllmeFineTuner(model, o with { Strategy = TrainingStrategy.Contrastive, MaxSteps = 2, Lora = new LoraOptions { Rank = 4, Dropout = 0.1 }, Optimizer = new AdamWSettings { LearningRate = 5e-3 } }).Train(data);
        }
        var shared = Run(new FineTuneOptions { BatchSize = 4, AccumulationSteps = 2, ShareNegativesAcrossAccumulation = true });
        var big = Run(new FineTuneOptions { BatchSize = 8, GradCacheChunkSize = 4 });
        var separate = Run(new FineTuneOptions { BatchSize = 4, AccumulationSteps = 2 });
        Assert.Equal(big.History.Select(h => h.Losses.Total), shared.History.Select(h => h.Losses.Total));
        Assert.Equal(big.History.Select(h => h.GradientNorm), shared.History.Select(h => h.GradientNorm));
        Assert.NotEqual(separate.History[0].Losses.Total, shared.History[0].Losses.Total);   // 8 candidates a query, not 4

        using var m = TinyDecoder.Load();
        var given = new FineTuneOptions { BatchSize = 4, AccumulationSteps = 2, ShareNegativesAcrossAccumulation = true };
        Assert.Same(given, new UllmeFineTuner(m, given).Options);
        Assert.Contains("FineTuneOptions.ShareNegativesAcrossAccumulation", Assert.Throws<UllmeException>(() => new FineTuneOptions { ShareNegativesAcrossAccumulation = true }.Validate()).Message);
    }
}
