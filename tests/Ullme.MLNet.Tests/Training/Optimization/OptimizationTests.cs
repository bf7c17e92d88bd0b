using TorchSharp;
using TorchSharp.Modules;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Optimization;

[Collection(TorchCollection.Name)]
public class LearningRateScheduleTests
{
    [Fact]
    public void UllmeDefaultWarmupIsTenPercentCappedAt500()
    {
        Assert.Equal(9, LearningRateSchedule.DefaultWarmup(92));   // the grl-spec reference run
        Assert.Equal(500, LearningRateSchedule.DefaultWarmup(20_000));
        Assert.Equal(0, LearningRateSchedule.DefaultWarmup(9));
    }

    [Fact]
    public void LinearWarmupStartsAtZeroThenLinearDecayReachesZeroAtTheEnd()
    {
        var s = new LearningRateSchedule { PeakLearningRate = 1e-3, TotalSteps = 92, WarmupSteps = 9, Decay = DecayKind.Linear };
        Assert.Equal(0.0, s.LearningRateAt(0));
        Close(1e-3 / 9, s.LearningRateAt(1), 1e-15, "lr(1)");
        Close(8e-3 / 9, s.LearningRateAt(8), 1e-15, "lr(8)");
        Close(1e-3, s.LearningRateAt(9), 1e-15, "lr(9)");
        Close(1e-3 * (92 - 50) / 83.0, s.LearningRateAt(50), 1e-15, "lr(50)");
        Close(1e-3 / 83, s.LearningRateAt(91), 1e-15, "lr(91)");
        Assert.Equal(0.0, s.LearningRateAt(92));
    }

    [Fact]
    public void CosineDecayIsHalfwayAtTheMidpoint()
    {
        var s = new LearningRateSchedule { PeakLearningRate = 2e-4, TotalSteps = 110, WarmupSteps = 10 };
        Assert.Equal(DecayKind.Cosine, s.Decay);
        Close(2e-4, s.LearningRateAt(10), 1e-15, "peak");
        Close(1e-4, s.LearningRateAt(60), 1e-15, "midpoint");
        Close(2e-4 * 0.5 * (1 + Math.Cos(Math.PI * 0.25)), s.LearningRateAt(35), 1e-15, "quarter");
        Assert.Equal(0.0, s.LearningRateAt(110));
    }

    [Fact]
    public void BadSettingsAreNamed()
    {
        Assert.Contains("WarmupSteps", Assert.Throws<UllmeException>(() => new LearningRateSchedule { PeakLearningRate = 1, TotalSteps = 5, WarmupSteps = 6 }.LearningRateAt(0)).Message);
        Assert.Contains("TotalSteps", Assert.Throws<UllmeException>(() => new LearningRateSchedule { PeakLearningRate = 1, TotalSteps = 0 }.LearningRateAt(0)).Message);
    }
}

[Collection(TorchCollection.Name)]
public class OptimizerTests
{
    private static (string, Parameter)[] Params(double[] w, double[] b) =>
        [("layer.weight", new Parameter(T(w, 2, 2))), ("layer.bias", new Parameter(T(b, 2)))];

    [Fact]
    public void FirstAdamWStepMatchesTheClosedForm()
    {
        // Step 1: m̂ = g, v̂ = g², so θ ← θ(1 − lr·wd) − lr·g/(|g| + ε).
        using var scope = NewDisposeScope();
        double[] w = [0.5, -1.0, 2.0, 0.25], b = [0.1, -0.2];
        double[] gw = [0.3, -0.7, 1e-3, 2.0], gb = [0.5, -0.5];
        var ps = Params(w, b);
        var settings = new AdamWSettings { LearningRate = 0.01, WeightDecay = 0.1, Epsilon = 1e-8 };
        using var opt = AdamWFactory.Create(ps, settings);
        ps[0].Item2.grad = T(gw, 2, 2);
        ps[1].Item2.grad = T(gb, 2);
        opt.step();
        var expectedW = w.Select((x, i) => x * (1 - 0.01 * 0.1) - 0.01 * gw[i] / (Math.Abs(gw[i]) + 1e-8)).ToArray();
        var expectedB = b.Select((x, i) => x - 0.01 * gb[i] / (Math.Abs(gb[i]) + 1e-8)).ToArray();   // no decay on biases
        Close(expectedW, Data(ps[0].Item2), 1e-12, "weight");
        Close(expectedB, Data(ps[1].Item2), 1e-12, "bias");
    }

    [Fact]
    public void WeightDecayAppliesToBiasesWhenNotExcluded()
    {
        using var scope = NewDisposeScope();
        var ps = Params([1, 1, 1, 1], [1, 1]);
        using var opt = AdamWFactory.Create(ps, new AdamWSettings { LearningRate = 0.1, WeightDecay = 0.5, ExcludeBiasAndNormFromWeightDecay = false });
        ps[0].Item2.grad = zeros(2, 2, dtype: ScalarType.Float64);
        ps[1].Item2.grad = zeros(2, dtype: ScalarType.Float64);
        opt.step();
        Close([0.95, 0.95], Data(ps[1].Item2), 1e-12, "decayed bias");
    }

    [Fact]
    public void FrozenParametersAreNotOptimisedAndNoTrainableParametersIsAnError()
    {
        using var scope = NewDisposeScope();
        var ps = Params([1, 1, 1, 1], [1, 1]);
        ps[0].Item2.requires_grad = false;
        using var opt = AdamWFactory.Create(ps, new AdamWSettings());
        Assert.Single(opt.parameters());
        ps[1].Item2.requires_grad = false;
        Assert.Contains("no trainable", Assert.Throws<UllmeException>(() => AdamWFactory.Create(ps, new AdamWSettings())).Message);
    }

    [Fact]
    public void ClippingScalesToTheMaxNormAndReportsTheNormBefore()
    {
        using var scope = NewDisposeScope();
        var ps = Params([0, 0, 0, 0], [0, 0]);
        ps[0].Item2.grad = T([3, 0, 0, 0], 2, 2);
        ps[1].Item2.grad = T([0, 4], 2);
        double norm = GradientClipping.ClipGlobalNorm(ps.Select(p => p.Item2), 1.0);
        Close(5.0, norm, 1e-6, "norm");
        Close([0.6, 0, 0, 0], Data(ps[0].Item2.grad!), 1e-6, "clipped weight grad");
        Close([0, 0.8], Data(ps[1].Item2.grad!), 1e-6, "clipped bias grad");
        // Below the threshold nothing changes.
        Close(1.0, GradientClipping.ClipGlobalNorm(ps.Select(p => p.Item2), 2.0), 1e-5, "norm after");
        Close([0.6, 0, 0, 0], Data(ps[0].Item2.grad!), 1e-6, "unchanged");
    }

    private static Tensor Loss(Parameter w, double[] x, double[] y)
    {
        var pred = T(x, x.Length / 2, 2).matmul(w);
        return (pred - T(y, y.Length)).square().mean();
    }

    [Fact]
    public void AccumulatingTwoHalvesGivesTheGradientAndUpdateOfTheWholeBatch()
    {
        using var scope = NewDisposeScope();
        double[] x = [1, 2, -1, 0.5, 0.3, -2, 1.5, 1], y = [1, -1, 0.5, 2];
        var schedule = new LearningRateSchedule { PeakLearningRate = 0.05, TotalSteps = 10, WarmupSteps = 0, Decay = DecayKind.Constant };

        var whole = new Parameter(T([0.1, -0.2], 2));
        using var a = new OptimizerStepper([("w", whole)], new AdamWSettings { LearningRate = 0.05 }, schedule);
        a.Backward(Loss(whole, x, y));
        var gradWhole = Data(whole.grad!);
        Assert.True(a.Step().Applied);

        var halves = new Parameter(T([0.1, -0.2], 2));
        using var b = new OptimizerStepper([("w", halves)], new AdamWSettings { LearningRate = 0.05 }, schedule, accumulationSteps: 2);
        b.Backward(Loss(halves, x[..4], y[..2]));
        b.Backward(Loss(halves, x[4..], y[2..]));
        Close(gradWhole, Data(halves.grad!), 1e-14, "accumulated gradient");
        var report = b.Step();
        Assert.True(report.Applied);
        Close(Data(whole), Data(halves), 1e-14, "weights after the step");
        Assert.Null(halves.grad);
        Assert.Equal(1, b.StepsDone);
    }

    [Fact]
    public void ScheduleDrivesTheLearningRateOfEachStep()
    {
        using var scope = NewDisposeScope();
        var w = new Parameter(T([0.0], 1));
        var schedule = new LearningRateSchedule { PeakLearningRate = 0.1, TotalSteps = 4, WarmupSteps = 2, Decay = DecayKind.Linear };
        using var s = new OptimizerStepper([("w", w)], new AdamWSettings { LearningRate = 0.1 }, schedule);
        var lrs = new List<double>();
        for (int i = 0; i < 4; i++)
        {
            s.Backward((w - 1).square().sum());
            lrs.Add(s.Step().LearningRate);
        }
        Close([0, 0.05, 0.1, 0.05], lrs.ToArray(), 1e-15, "lr per step");
    }

    [Fact]
    public void NonFiniteLossSkipsTheStepAndLeavesWeightsAndOptimizerUntouched()
    {
        using var scope = NewDisposeScope();
        var w = new Parameter(T([0.5, 0.5], 2));
        var schedule = new LearningRateSchedule { PeakLearningRate = 0.1, TotalSteps = 10, WarmupSteps = 0 };
        using var s = new OptimizerStepper([("w", w)], new AdamWSettings { LearningRate = 0.1 }, schedule, maxGradientNorm: 1.0, accumulationSteps: 2);
        Assert.True(s.Backward(w.sum()));
        Assert.False(s.Backward(w.sum() * double.NaN, "contrastive loss"));
        var report = s.Step();
        Assert.False(report.Applied);
        Assert.Contains("contrastive loss is NaN", report.SkipReason);
        Close([0.5, 0.5], Data(w), 0, "weights");
        Assert.Null(w.grad);
        Assert.Equal(1, s.StepsSkipped);
        Assert.Equal(1, s.StepsDone);

        // The next step is a normal one.
        s.Backward(w.sum());
        s.Backward(w.sum());
        Assert.True(s.Step().Applied);
        Assert.True(Data(w)[0] < 0.5);
    }

    [Fact]
    public void SeededEpochOrdersArePermutationsThatRepeatPerSeedAndEpoch()
    {
        var a = TrainingSeed.EpochOrder(42, 0, 50);
        Assert.Equal(Enumerable.Range(0, 50), a.Order());
        Assert.Equal(a, TrainingSeed.EpochOrder(42, 0, 50));
        Assert.NotEqual(a, TrainingSeed.EpochOrder(42, 1, 50));
        Assert.NotEqual(a, TrainingSeed.EpochOrder(43, 0, 50));
        Assert.Equal(Enumerable.Range(0, 50), TrainingSeed.EpochOrder(42, 0, 50, shuffle: false));
    }

    [Fact]
    public void TorchSeedMakesRandomDrawsRepeat()
    {
        using var scope = NewDisposeScope();
        TrainingSeed.Apply(7);
        var a = Data(randn(5, dtype: ScalarType.Float64));
        TrainingSeed.Apply(7);
        Assert.Equal(a, Data(randn(5, dtype: ScalarType.Float64)));
    }
}
