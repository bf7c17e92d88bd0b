using TorchSharp;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Lora;
using static TorchSharp.torch;
using Xunit.Abstractions;

namespace Ullme.MLNet.Tests.Training.Integration;

/// <summary>End-to-end trainer behaviour on the real tiny Llama (stories260K) and SNLI triplets.</summary>
[Collection(TorchCollection.Name)]
public sealed class FineTunerTests(ITestOutputHelper output) : SingleThreaded
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ullme-train-" + Guid.NewGuid().ToString("N"));

    public override void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
        base.Dispose();
    }

    private static IReadOnlyList<TrainingExample> Data(int count, int skip = 0) =>
        TrainingData.LoadJsonl(Assets.Path("data", "snli", "triplets.jsonl")).Skip(skip).Take(count).ToList();

    private static UllmeModel Load() => UllmeModel.Load(Assets.Stories260K);

    private static readonly LoraOptions Adapter = new() { Rank = 4, Alpha = 8, Dropout = 0 };

    private static Dictionary<string, float[]> Weights(UllmeModel m) =>
        m.Backbone.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().cpu().data<float>().ToArray());

    [AssetTheory]
    [InlineData("contrastive")]
    [InlineData("lm")]
    [InlineData("preference")]
    [InlineData("kl")]
    public void EveryTermAloneTrainsTheAdapters(string term)
    {
        var weights = term switch
        {
            "contrastive" => new LossWeights(1, 0, 0, 0),
            "lm" => new LossWeights(0, 1, 0, 0),
            "preference" => new LossWeights(0, 0, 1, 0),
            _ => new LossWeights(0, 0, 0, 1),
        };
        // ULLME's public code back-propagated only the contrastive surrogate; here each term must move the model.
        using var model = Load();
        var options = new FineTuneOptions
        {
            Weights = weights, Lora = Adapter, MaxLength = 64, BatchSize = 8, Epochs = 8, Shuffle = false,
            Optimizer = new() { LearningRate = 1e-2 }, WarmupSteps = 0, MergeLoraAtEnd = false,
        };
        var result = new UllmeFineTuner(model, options).Train(Data(8));
        var first = result.History[0].Losses.ToDictionary()[term];
        var last = result.History[^1].Losses.ToDictionary()[term];
        output.WriteLine($"{term}: {first:F4} -> {last:F4}");
        Assert.Equal(8, result.StepsDone);
        Assert.True(last < first - 0.02 * Math.Abs(first) - 1e-3, $"{term} went from {first} to {last}");
        // Only the adapters changed; the base weights are frozen.
        Assert.NotEmpty(LoraInjector.FindLayers(model.Backbone));
    }

    [AssetFact]
    public void OneSeedGivesIdenticalLossesAndAnotherSeedDoesNot()
    {
        double[] Run(int seed)
        {
            using var model = Load();
            var options = new FineTuneOptions
            {
                Lora = Adapter with { Dropout = 0.1 }, MaxLength = 48, BatchSize = 4, MaxSteps = 3, Seed = seed,
                Optimizer = new() { LearningRate = 5e-3 },
            };
            return new UllmeFineTuner(model, options).Train(Data(12)).History.Select(h => h.Losses.Total).ToArray();
        }
        var a = Run(7);
        Assert.Equal(a, Run(7));
        Assert.NotEqual(a, Run(8));
    }

    /// <summary>Gradients of one GRL batch (every term on) with full fine-tuning.</summary>
    private static Dictionary<string, float[]> Gradients(FineTuneOptions options, IReadOnlyList<TrainingExample> batch, out LossBreakdown losses)
    {
        using var model = Load();
        losses = new UllmeFineTuner(model, options).BackwardOnce(batch);
        return model.Backbone.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.cpu().data<float>().ToArray());
    }

    [AssetFact]
    public void GradCacheChunkedGenerationAndCheckpointingGiveThePlainGradients()
    {
        var batch = Data(6, skip: 40);
        var plainOptions = new FineTuneOptions { Weights = new LossWeights(1, 0.5, 1, 1), Lora = null, MaxLength = 64 };
        var plain = Gradients(plainOptions, batch, out var plainLosses);
        var variants = new (string, FineTuneOptions)[]
        {
            ("GradCache", plainOptions with { GradCacheChunkSize = 4 }),
            ("chunked generation", plainOptions with { GenerationChunkSize = 4 }),
            ("gradient checkpointing", plainOptions with { GradientCheckpointing = true }),
            ("all three", plainOptions with { GradCacheChunkSize = 5, GenerationChunkSize = 2, GradientCheckpointing = true }),
        };
        foreach (var (name, options) in variants)
        {
            var grads = Gradients(options, batch, out var losses);
            Assert.Equal(plainLosses.Total, losses.Total, 4);
            foreach (var (param, g) in plain)
            {
                double scale = g.Max(Math.Abs) + 1e-6;
                double diff = g.Zip(grads[param]).Max(p => Math.Abs(p.First - p.Second));
                Assert.True(diff <= 2e-4 * scale, $"{name}: {param} differs by {diff} (scale {scale})");
            }
        }
    }

    [AssetTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void AResumedRunEndsWhereAnUninterruptedRunEnds(bool lora)
    {
        // LoRA: adapters + optimizer + RNG + data position. Full: all weights, and the reference log-probs of the
        // preference loss (the base weights are gone once training has started).
        var data = Data(20);
        FineTuneOptions Options(string? dir) => new()
        {
            Lora = lora ? Adapter with { Dropout = 0.1 } : null, MaxLength = 48, BatchSize = 4, MaxSteps = 6, Seed = 11,
            Optimizer = new() { LearningRate = lora ? 5e-3 : 1e-3 }, CheckpointDirectory = dir, CheckpointEvery = 2, Resume = dir is not null,
        };

        using var a = Load();
        var full = new UllmeFineTuner(a, Options(null)).Train(data);

        using (var b = Load())
        {
            // The "process" dies during step 5 (after the checkpoint of step 4).
            var killer = new SyncProgress(p => { if (p.Step == 5) throw new IOException("simulated kill"); });
            Assert.Throws<IOException>(() => new UllmeFineTuner(b, Options(_dir)).Train(data, killer));
        }
        Assert.EndsWith("checkpoint-0000004", TrainingCheckpoint.FindLatest(_dir));

        using var c = Load();
        var resumed = new UllmeFineTuner(c, Options(_dir)).Train(data);
        Assert.Equal(4, resumed.ResumedFromStep);
        Assert.Equal([5, 6], resumed.History.Select(h => h.Step));
        Assert.Equal(full.History[4].Losses.Total, resumed.History[0].Losses.Total);
        Assert.Equal(full.History[5].Losses.Total, resumed.History[1].Losses.Total);
        var wa = Weights(a);
        var wc = Weights(c);
        foreach (var (name, w) in wa) Assert.Equal(w, wc[name]);
    }

    [AssetFact]
    public void ProgressReportsEveryStepWithEachTermAndTheScheduledLearningRate()
    {
        using var model = Load();
        var reports = new List<TrainingProgress>();
        var options = new FineTuneOptions { Lora = Adapter, MaxLength = 48, BatchSize = 4, MaxSteps = 4, WarmupSteps = 2, Decay = Ullme.MLNet.Training.Optimization.DecayKind.Linear, Optimizer = new() { LearningRate = 1e-3 } };
        var result = new UllmeFineTuner(model, options).Train(Data(10), new SyncProgress(reports.Add));
        Assert.Equal([1, 2, 3, 4], reports.Select(r => r.Step));
        Assert.Equal([0, 0, 0, 1], reports.Select(r => r.Epoch));
        Assert.All(reports, r => Assert.Equal(4, r.TotalSteps));
        Assert.Equal([0, 5e-4, 1e-3, 5e-4], reports.Select(r => Math.Round(r.LearningRate, 12)));
        Assert.All(reports, r =>
        {
            Assert.Equal(["contrastive", "kl", "preference", "total"], r.Losses.ToDictionary().Keys.Order());
            Assert.True(r.Applied);
            Assert.True(double.IsFinite(r.GradientNorm) && r.GradientNorm > 0);
        });
        Assert.Equal(4 + 4 + 2 + 4, reports[^1].ExamplesSeen);   // 10 examples: batches of 4, 4, the partial 2, then epoch 2
        Assert.Equal(reports, result.History);
        // Adapters were merged into the weights at the end.
        Assert.Empty(LoraInjector.FindLayers(model.Backbone));
    }

    [AssetFact]
    public void BFloat16ModelsTrainFloat32Adapters()
    {
        using var model = UllmeModel.Load(Assets.Stories260K, new ModelLoadOptions { DType = Ullme.MLNet.Modeling.ModelDType.BFloat16 });
        var options = new FineTuneOptions { Lora = Adapter, MaxLength = 48, BatchSize = 4, MaxSteps = 2, MergeLoraAtEnd = false, Optimizer = new() { LearningRate = 1e-2 } };
        var result = new UllmeFineTuner(model, options).Train(Data(8));
        Assert.All(result.History, h => Assert.True(h.Applied && double.IsFinite(h.Losses.Total)));
        Assert.All(LoraInjector.AdapterParameters(model.Backbone), p => Assert.Equal(ScalarType.Float32, p.Parameter.dtype));
        Assert.Contains(LoraInjector.AdapterParameters(model.Backbone), p => p.Name.EndsWith("lora_B.weight") && p.Parameter.abs().max().item<float>() > 0);
        Assert.Equal(ScalarType.BFloat16, model.Backbone.named_parameters().First(p => p.name.EndsWith("q_proj.weight")).parameter.dtype);
        // Full fine-tuning in bfloat16 has no float32 master weights: refused.
        Assert.Contains("float32", Assert.Throws<UllmeException>(() => new UllmeFineTuner(model, options with { Lora = null })).Message);
    }

    [AssetFact]
    public void ANonFiniteLossSkipsTheStepAndLeavesTheWeightsAlone()
    {
        using var model = Load();
        var batch = Data(2);
        // Poison one embedding row used by the batch: every forward pass of that text yields NaN.
        int token = model.Tokenizer.Encode(batch[0].Query, addSpecialTokens: false)[^1];
        using (no_grad())
        {
            var embed = model.Backbone.named_parameters().First(p => p.name == "model.embed_tokens.weight").parameter;
            embed[token].fill_(double.NaN);
        }
        var before = Weights(model);
        var options = new FineTuneOptions { Lora = null, MaxLength = 48, BatchSize = 2, MaxSteps = 1, Optimizer = new() { LearningRate = 1e-2 }, WarmupSteps = 0 };
        var result = new UllmeFineTuner(model, options).Train(batch);
        Assert.Equal(1, result.StepsSkipped);
        Assert.False(result.History[0].Applied);
        Assert.Contains("NaN", result.History[0].Message);
        var after = Weights(model);
        foreach (var (name, w) in before)
            Assert.True(w.Zip(after[name]).All(p => p.First.Equals(p.Second)), $"{name} changed");
    }

    [AssetFact]
    public void GenerationTermsNeedALanguageModelHead()
    {
        using var model = UllmeModel.Load(UllmeModel.DefaultModelName);
        var e = Assert.Throws<UllmeException>(() => new UllmeFineTuner(model, new FineTuneOptions { Strategy = TrainingStrategy.Grl }));
        Assert.Contains("no language-model head", e.Message);
        // Contrastive training of the encoder works (full fine-tuning).
        var result = new UllmeFineTuner(model, new FineTuneOptions { Strategy = TrainingStrategy.Contrastive, Lora = null, BatchSize = 4, MaxSteps = 2, MaxLength = 32 })
            .Train(Data(8));
        Assert.All(result.History, h => Assert.True(h.Applied));
    }

    /// <summary>IProgress that runs its callback synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }
}
