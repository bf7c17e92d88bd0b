using TorchSharp;
using TorchSharp.Modules;
using Ullme.MLNet.Tests.Infrastructure;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;
using static Ullme.MLNet.Tests.Training.GradCheck;

namespace Ullme.MLNet.Tests.Training.Optimization;

/// <summary>
/// TorchSharp 0.107 lets a temporary <see cref="Scalar"/> be finalized while libtorch is still reading it (see
/// <see cref="ScalarSafe.AdamW"/>); a collection started by another thread during the native call is all it takes.
/// These tests pin the trainer's optimizer path against that race and check the replacement changes no arithmetic.
/// </summary>
[Collection(TorchCollection.Name)]
public class ScalarLifetimeTests
{
    /// <summary>Collects generation 0 in a tight loop on its own thread until disposed: the situation in which a
    /// full test run (other test classes allocating) once failed inside TorchSharp's <c>AdamW.step</c>.</summary>
    private sealed class GarbageCollectingThread : IDisposable
    {
        private readonly Thread _thread;
        private readonly ManualResetEventSlim _started = new();
        private volatile bool _stop;

        public GarbageCollectingThread()
        {
            _thread = new Thread(() =>
            {
                while (!_stop)
                {
                    GC.Collect(0);
                    Collections++;
                    _started.Set();
                }
            }) { IsBackground = true, Name = "gc-stress" };
            _thread.Start();
            _started.Wait();
        }

        public long Collections { get; private set; }

        public void Dispose()
        {
            _stop = true;
            _thread.Join();
            _started.Dispose();
        }
    }

    private const int ParameterCount = 64;
    // Nonstop collections suspend the optimizer thread for most of the run: on an idle machine 200 steps took about
    // 2.5 minutes, so the suite runs 40 (a pause between collections instead made the race undetectable: 0 of 3 runs
    // failed without the fix). Detection is probabilistic; the type check below is the deterministic guard.
    private const int Steps = 40;

    /// <summary>
    /// Runs the trainer's optimizer (<see cref="AdamWFactory"/>: AdamW with a decay and a no-decay group) for many
    /// steps over 64 small float32 parameters, with a changing learning rate and a global-norm clip that engages
    /// every step. The gradients are set once and only rescaled by the clip, so nearly all the time is spent in the
    /// scalar-taking ops under test rather than in a model.
    /// </summary>
    private static (float[][] weights, long collections) Optimise(bool collectOnAnotherThread)
    {
        using var scope = NewDisposeScope();
        var parameters = Enumerable.Range(0, ParameterCount)
            .Select(i => ($"layer{i}.{(i % 4 == 0 ? "bias" : "weight")}", new Parameter(tensor(Values(i, 8).Select(v => (float)v).ToArray()).reshape(i % 4 == 0 ? [8] : [2, 4]))))
            .ToArray();
        foreach (var (i, p) in parameters.Select((p, i) => (i, p.Item2)))
            p.grad = tensor(Values(1000 + i, 8).Select(v => (float)v).ToArray()).reshape(p.shape);
        using var optimizer = AdamWFactory.Create(parameters, new AdamWSettings { LearningRate = 1e-2, WeightDecay = 0.1 });
        Assert.IsType<ScalarSafe.AdamW>(optimizer);   // the trainer's optimizer is the one that keeps its Scalars alive
        var all = parameters.Select(p => p.Item2).ToList();

        using var gc = collectOnAnotherThread ? new GarbageCollectingThread() : null;
        for (int step = 0; step < Steps; step++)
        {
            GradientClipping.ClipGlobalNorm(all, 0.999);
            AdamWFactory.SetLearningRate(optimizer, 1e-2 * (1 + step % 7) / 7);
            optimizer.step();
        }
        return (all.Select(p => p.detach().data<float>().ToArray()).ToArray(), gc?.Collections ?? 0);
    }

    [Fact]
    public void OptimizerStepsGiveTheSameBitsWhileAnotherThreadKeepsCollectingGarbage()
    {
        // Measured on the shared 2-core machine (load average 10-14): with TorchSharp's own AdamW in place of
        // ScalarSafe.AdamW this failed in 5 of 5 runs at 300 steps and 4 of 10 at 150 (c10 "toFloat"/"toDouble"/"type"
        // errors from a freed Scalar; the odds grow with the CPU the collecting thread gets); with it, 0 of 21 runs.
        var (calm, _) = Optimise(collectOnAnotherThread: false);
        var (stressed, collections) = Optimise(collectOnAnotherThread: true);
        Assert.True(collections > 0);
        Assert.Equal(calm, stressed);
        Assert.NotEqual(Values(0, 8).Select(v => (float)v).ToArray(), calm[0]);   // the steps did move the weights
    }

    [Fact]
    public void ScalarSafeAdamWMatchesTorchSharpsAdamWBitForBit()
    {
        // Same updates, same optimizer state (byte-identical state dicts, so checkpoints stay interchangeable) across
        // every branch of the step: decay / no decay, AMSGrad, maximize, and a parameter whose gradient is missing
        // on some steps (its own step count, hence its own bias correction, lags behind).
        using var scope = NewDisposeScope();
        Parameter[] Make() => Enumerable.Range(0, 4).Select(i => new Parameter(tensor(Values(50 + i, 6).Select(v => (float)v).ToArray()).reshape(2, 3))).ToArray();
        AdamW.ParamGroup[] Groups(Parameter[] p) =>
        [
            new([p[0]], 3e-2, 0.9, 0.999, 1e-8, 0.1),
            new([p[1]], 3e-2, 0.8, 0.99, 1e-6, 0),
            new([p[2]], 2e-2, 0.9, 0.999, 1e-8, 0.05, amsgrad: true),
            new([p[3]], 1e-2, 0.9, 0.999, 1e-8, 0, maximize: true),
        ];
        var ours = Make();
        var theirs = Make();
        using var safe = new ScalarSafe.AdamW(Groups(ours), 3e-2, 0.9, 0.999, 1e-8, 0);
        using var reference = optim.AdamW(Groups(theirs), 3e-2, 0.9, 0.999, 1e-8, 0);
        for (int step = 0; step < 6; step++)
        {
            for (int i = 0; i < 4; i++)
            {
                bool missing = i == 1 && step % 3 == 1;
                var g = missing ? null : tensor(Values(100 * step + i, 6).Select(v => (float)v).ToArray()).reshape(2, 3);
                ours[i].grad = g?.clone();
                theirs[i].grad = g?.clone();
            }
            AdamWFactory.SetLearningRate(safe, 3e-2 / (step + 1));
            AdamWFactory.SetLearningRate(reference, 3e-2 / (step + 1));
            safe.step();
            reference.step();
        }
        for (int i = 0; i < 4; i++)
            Assert.Equal(theirs[i].detach().data<float>().ToArray(), ours[i].detach().data<float>().ToArray());
        Assert.Equal(StateBytes(reference), StateBytes(safe));
    }

    private static byte[] StateBytes(OptimizerHelper optimizer)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
            optimizer.save_state_dict(writer);
        return stream.ToArray();
    }
}
