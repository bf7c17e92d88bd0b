using TorchSharp;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training;

[Collection(TorchCollection.Name)]
public sealed class CheckpointingTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "ullme-ckpt-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static readonly LearningRateSchedule Schedule = new() { PeakLearningRate = 0.05, TotalSteps = 6, WarmupSteps = 2 };

    /// <summary>One training step of a tiny model whose loss depends on torch's RNG (dropout and random inputs).</summary>
    private static void TrainStep(TinyBackbone model, OptimizerStepper stepper)
    {
        using var scope = NewDisposeScope();
        var ids = randint(1, 11, [3, 5]);
        var mask = ones(3, 5, dtype: ScalarType.Int64);
        var h = model.Forward(ids, mask, AttentionMode.Bidirectional);
        stepper.Backward(h.square().mean());
        stepper.Step();
    }

    private static (TinyBackbone, OptimizerStepper) NewRun(int initSeed)
    {
        manual_seed(initSeed);
        var model = new TinyBackbone(dropoutP: 0.2);
        model.train();
        return (model, new OptimizerStepper(model.named_parameters(), new AdamWSettings { LearningRate = 0.05 }, Schedule));
    }

    private static IReadOnlyList<(string, Tensor)> Weights(TinyBackbone m) => m.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList();

    private static TrainingCheckpointState State(int step) =>
        new() { Step = step, Epoch = 0, PositionInEpoch = 3 * step, Seed = 5, Weights = CheckpointWeights.Full, Fingerprint = "abc" };

    [Fact]
    public void ResumingFromACheckpointReproducesTheUninterruptedRunExactly()
    {
        var (a, sa) = NewRun(1);
        manual_seed(77);
        for (int i = 0; i < 4; i++) TrainStep(a, sa);
        var expected = a.named_parameters().Select(p => Data(p.parameter)).ToList();

        var (b, sb) = NewRun(1);
        manual_seed(77);
        for (int i = 0; i < 2; i++) TrainStep(b, sb);
        string path = TrainingCheckpoint.Save(_dir, State(sb.StepsDone), Weights(b), sb.Optimizer);
        Assert.EndsWith("checkpoint-0000002", path);
        for (int i = 0; i < 2; i++) TrainStep(b, sb);   // the run goes on past the checkpoint, then "dies"

        var (c, sc) = NewRun(2);                        // a fresh process: different init, fresh optimizer, other RNG state
        manual_seed(12345);
        var state = TrainingCheckpoint.Restore(TrainingCheckpoint.FindLatest(_dir)!, Weights(c), sc.Optimizer, expectedFingerprint: "abc");
        Assert.Equal(2, state.Step);
        Assert.Equal(6, state.PositionInEpoch);
        sc.StepsDone = state.Step;
        for (int i = 0; i < 2; i++) TrainStep(c, sc);
        var actual = c.named_parameters().Select(p => Data(p.parameter)).ToList();
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i], actual[i]);
        a.Dispose(); b.Dispose(); c.Dispose();
    }

    [Fact]
    public void HalfWrittenCheckpointsAreInvisibleAndCleanedUp()
    {
        var (m, s) = NewRun(1);
        TrainingCheckpoint.Save(_dir, State(1), Weights(m), s.Optimizer);
        // A kill during a save leaves a temporary folder with partial files and no state.json.
        string partial = Path.Combine(_dir, "checkpoint-0000002.tmp-deadbeef");
        Directory.CreateDirectory(partial);
        File.WriteAllBytes(Path.Combine(partial, "weights.bin"), [1, 2, 3]);
        Assert.EndsWith("checkpoint-0000001", TrainingCheckpoint.FindLatest(_dir));

        // A save that fails half-way (a tensor cannot be written) leaves the previous checkpoint as the latest.
        var broken = Weights(m).ToList();
        var disposed = zeros(2);
        disposed.Dispose();
        broken.Add(("broken", disposed));
        Assert.ThrowsAny<Exception>(() => TrainingCheckpoint.Save(_dir, State(3), broken, s.Optimizer));
        Assert.EndsWith("checkpoint-0000001", TrainingCheckpoint.FindLatest(_dir));
        Assert.False(Directory.Exists(Path.Combine(_dir, "checkpoint-0000003")));

        TrainingCheckpoint.Save(_dir, State(4), Weights(m), s.Optimizer);
        Assert.DoesNotContain(Directory.GetDirectories(_dir), d => d.Contains(".tmp-"));
        Assert.EndsWith("checkpoint-0000004", TrainingCheckpoint.FindLatest(_dir));
        m.Dispose();
    }

    [Fact]
    public void OnlyTheNewestCheckpointsAreKept()
    {
        var (m, s) = NewRun(1);
        foreach (int step in new[] { 1, 2, 3, 4 }) TrainingCheckpoint.Save(_dir, State(step), Weights(m), s.Optimizer, keepLast: 2);
        Assert.Equal(["checkpoint-0000003", "checkpoint-0000004"], Directory.GetDirectories(_dir).Select(Path.GetFileName).Order());
        // Saving the same step again (after a resume) replaces it.
        TrainingCheckpoint.Save(_dir, State(4) with { PositionInEpoch = 99 }, Weights(m), s.Optimizer, keepLast: 2);
        Assert.Equal(99, TrainingCheckpoint.ReadState(TrainingCheckpoint.FindLatest(_dir)!).PositionInEpoch);
        m.Dispose();
    }

    [Fact]
    public void MismatchesAreReportedByName()
    {
        var (m, s) = NewRun(1);
        string path = TrainingCheckpoint.Save(_dir, State(1), Weights(m), s.Optimizer);
        var e = Assert.Throws<UllmeException>(() => TrainingCheckpoint.Restore(path, Weights(m), s.Optimizer, expectedFingerprint: "other"));
        Assert.Contains("different settings", e.Message);

        var fewer = Weights(m).Skip(1).ToList();
        e = Assert.Throws<UllmeException>(() => TrainingCheckpoint.Restore(path, fewer, null));
        Assert.Contains("embed_tokens.weight", e.Message);

        var wrongShape = Weights(m).Select(w => w.Item1 == "lm_head.weight" ? (w.Item1, zeros(3, 3, dtype: ScalarType.Float64)) : w).ToList();
        e = Assert.Throws<UllmeException>(() => TrainingCheckpoint.Restore(path, wrongShape, null));
        Assert.Contains("'lm_head.weight'", e.Message);

        using var otherOptimizer = AdamWFactory.Create(m.named_parameters().Take(2), new AdamWSettings());
        e = Assert.Throws<UllmeException>(() => TrainingCheckpoint.Restore(path, Weights(m), otherOptimizer));
        Assert.Contains("optimizer.bin", e.Message);

        Assert.Contains("not a training checkpoint", Assert.Throws<UllmeException>(() => TrainingCheckpoint.ReadState(_dir)).Message);
        m.Dispose();
    }
}
