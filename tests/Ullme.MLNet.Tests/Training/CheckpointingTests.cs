using Microsoft.Extensions.Logging;
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
    // ------------------------------------------------------------------------------------------------------------
    // Damaged checkpoints: the manifest's checksums decide; the newest valid one wins, the others are reported.
    // ------------------------------------------------------------------------------------------------------------

    private sealed class ListLogger : ILogger
    {
        public List<string> Warnings { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Warning) Warnings.Add(formatter(state, exception));
        }
    }

    private static void FlipByte(string path, long at)
    {
        var b = File.ReadAllBytes(path);
        b[at] ^= 0x01;
        File.WriteAllBytes(path, b);
    }

    [Theory]
    [InlineData("bit-flip", "SHA-256")]
    [InlineData("truncated", "bytes, its manifest says")]
    [InlineData("no-manifest", "no manifest.json")]
    [InlineData("garbage-manifest", "not valid JSON")]
    [InlineData("missing-file", "rng.bin is missing")]
    [InlineData("unlisted-file", "does not list")]
    public void ADamagedNewestCheckpointIsReportedAndSkippedForThePreviousValidOne(string damage, string reason)
    {
        var (m, s) = NewRun(1);
        TrainingCheckpoint.Save(_dir, State(1), Weights(m), s.Optimizer);
        string newest = TrainingCheckpoint.Save(_dir, State(2), Weights(m), s.Optimizer);
        switch (damage)
        {
            case "bit-flip": FlipByte(Path.Combine(newest, "weights.bin"), new FileInfo(Path.Combine(newest, "weights.bin")).Length / 2); break;
            case "truncated":
                using (var f = new FileStream(Path.Combine(newest, "optimizer.bin"), FileMode.Open)) f.SetLength(f.Length / 2);
                break;
            case "no-manifest": File.Delete(Path.Combine(newest, "manifest.json")); break;
            case "garbage-manifest": File.WriteAllText(Path.Combine(newest, "manifest.json"), "{\"files\": [tru"); break;
            case "missing-file": File.Delete(Path.Combine(newest, "rng.bin")); break;
            case "unlisted-file": File.WriteAllText(Path.Combine(newest, "extra.bin"), "x"); break;
        }

        var log = new ListLogger();
        Assert.EndsWith("checkpoint-0000001", TrainingCheckpoint.FindLatest(_dir, log));
        string warning = Assert.Single(log.Warnings);
        Assert.Contains("checkpoint-0000002", warning);
        Assert.Contains(reason, warning);
        Assert.Contains(reason, TrainingCheckpoint.Validate(newest));
        Assert.Null(TrainingCheckpoint.Validate(Path.Combine(_dir, "checkpoint-0000001")));

        // Restoring the damaged one directly is refused before any tensor is touched.
        var before = m.named_parameters().Select(p => Data(p.parameter)).ToList();
        var e = Assert.Throws<UllmeException>(() => TrainingCheckpoint.Restore(newest, Weights(m), s.Optimizer));
        Assert.Contains("damaged", e.Message);
        Assert.Contains(reason, e.Message);
        Assert.Equal(before, m.named_parameters().Select(p => Data(p.parameter)).ToList());

        // Only damaged checkpoints: nothing to resume.
        Directory.Delete(Path.Combine(_dir, "checkpoint-0000001"), recursive: true);
        Assert.Null(TrainingCheckpoint.FindLatest(_dir, log));
        m.Dispose();
    }

    [Fact]
    public void ResumingPastADamagedCheckpointReplacesItAndKeepsThePreviousValidOneUntilTheNewOneIsCommitted()
    {
        var (m, s) = NewRun(1);
        foreach (int step in new[] { 1, 2, 3 }) TrainingCheckpoint.Save(_dir, State(step), Weights(m), s.Optimizer, keepLast: 2);
        string third = Path.Combine(_dir, "checkpoint-0000003");
        FlipByte(Path.Combine(third, "state.json"), 3);
        Assert.EndsWith("checkpoint-0000002", TrainingCheckpoint.FindLatest(_dir));

        // The resumed run saves step 3 again: the damaged folder is replaced, step 2 is kept (keepLast 2).
        TrainingCheckpoint.Save(_dir, State(3), Weights(m), s.Optimizer, keepLast: 2);
        Assert.Equal(["checkpoint-0000002", "checkpoint-0000003"], Directory.GetDirectories(_dir).Select(Path.GetFileName).Order());
        Assert.Null(TrainingCheckpoint.Validate(third));

        // A run resumed from step 2 whose later checkpoints are left over (lost work) removes them once it commits.
        TrainingCheckpoint.Save(_dir, State(4), Weights(m), s.Optimizer, keepLast: 2);
        FlipByte(Path.Combine(_dir, "checkpoint-0000004", "weights.bin"), 10);
        Assert.EndsWith("checkpoint-0000003", TrainingCheckpoint.FindLatest(_dir));
        TrainingCheckpoint.Save(_dir, State(3) with { PositionInEpoch = 7 }, Weights(m), s.Optimizer, keepLast: 1);
        Assert.Equal(["checkpoint-0000003"], Directory.GetDirectories(_dir).Select(Path.GetFileName).OfType<string>().ToArray());
        m.Dispose();
    }

    [Fact]
    public void AKillWhileReSavingAStepLeavesTheMovedAsideCopyAsTheCheckpointToResume()
    {
        var (m, s) = NewRun(1);
        TrainingCheckpoint.Save(_dir, State(1), Weights(m), s.Optimizer);
        TrainingCheckpoint.Save(_dir, State(2), Weights(m), s.Optimizer);
        // What a kill between "move the old step-2 folder aside" and "rename the new one into place" leaves.
        string aside = Path.Combine(_dir, "checkpoint-0000002.superseded-0badf00d");
        Directory.Move(Path.Combine(_dir, "checkpoint-0000002"), aside);
        Directory.CreateDirectory(Path.Combine(_dir, "checkpoint-0000002.tmp-12345678"));
        Assert.Equal(aside, TrainingCheckpoint.FindLatest(_dir));
        Assert.Equal(2, TrainingCheckpoint.Restore(aside, Weights(m), s.Optimizer).Step);

        TrainingCheckpoint.Save(_dir, State(2), Weights(m), s.Optimizer);
        Assert.Equal(["checkpoint-0000001", "checkpoint-0000002"], Directory.GetDirectories(_dir).Select(Path.GetFileName).Order());
        m.Dispose();
    }
}
