using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training.Optimization;

/// <summary>What one call to <see cref="OptimizerStepper.Step"/> did.</summary>
/// <param name="Step">0-based index of the optimizer step.</param>
/// <param name="LearningRate">The learning rate the step used.</param>
/// <param name="GradientNorm">Global gradient norm before clipping (NaN when the step was skipped for a
/// non-finite loss).</param>
/// <param name="Applied">False when the update was skipped because a loss or the gradient was NaN/∞.</param>
/// <param name="SkipReason">Why it was skipped, or null.</param>
internal sealed record StepReport(int Step, double LearningRate, double GradientNorm, bool Applied, string? SkipReason);

/// <summary>
/// One optimizer step over several micro-batches: gradient accumulation, the learning-rate schedule, global-norm
/// clipping, and a guard that never lets a NaN/∞ loss or gradient reach the weights.
/// <para>
/// Per micro-batch call <see cref="Backward"/> with that micro-batch's loss (it back-propagates loss / k for k
/// accumulation steps, so k micro-batches of size b give the gradient of one batch of size k·b with a mean loss);
/// after the k-th, call <see cref="Step"/>. A non-finite loss is not back-propagated and marks the whole step as
/// skipped: its gradients are dropped, the weights and the optimizer state stay as they were, and the step
/// counter still advances so the schedule stays aligned with the data.
/// </para>
/// </summary>
internal sealed class OptimizerStepper : IDisposable
{
    private readonly List<(string name, Parameter parameter)> _trainable;
    private string? _poisoned;

    public OptimizerStepper(IEnumerable<(string name, Parameter parameter)> parameters, AdamWSettings settings, LearningRateSchedule schedule,
        double? maxGradientNorm = null, int accumulationSteps = 1)
    {
        if (accumulationSteps <= 0) throw new UllmeException($"Gradient accumulation steps must be positive, got {accumulationSteps}.");
        if (maxGradientNorm is { } m && !(m > 0)) throw new UllmeException($"Gradient clipping norm must be positive, got {m}.");
        _trainable = parameters.Where(p => p.parameter.requires_grad).ToList();
        Optimizer = AdamWFactory.Create(_trainable, settings);
        Schedule = schedule;
        MaxGradientNorm = maxGradientNorm;
        AccumulationSteps = accumulationSteps;
    }

    public AdamW Optimizer { get; }
    public LearningRateSchedule Schedule { get; }
    public double? MaxGradientNorm { get; }
    public int AccumulationSteps { get; }

    /// <summary>Optimizer steps taken so far (applied or skipped); the next step's 0-based index.</summary>
    public int StepsDone { get; set; }

    /// <summary>Steps skipped for non-finite values.</summary>
    public int StepsSkipped { get; private set; }

    /// <summary>Micro-batches back-propagated since the last step.</summary>
    public int PendingMicroBatches { get; private set; }

    /// <summary>The learning rate the next step will use.</summary>
    public double CurrentLearningRate => Schedule.LearningRateAt(StepsDone);

    /// <summary>The parameters being trained.</summary>
    public IReadOnlyList<(string name, Parameter parameter)> TrainableParameters => _trainable;

    /// <summary>Back-propagates <paramref name="loss"/> / k and counts one micro-batch. Returns false (and
    /// back-propagates nothing) if the loss is NaN or ∞; <paramref name="what"/> names the loss in the skip message.</summary>
    public bool Backward(Tensor loss, string what = "loss")
    {
        bool ok = BackwardPart(loss, what);
        CompleteMicroBatch();
        return ok;
    }

    /// <summary>
    /// Back-propagates one part of a micro-batch's loss (e.g. one chunk of a chunked objective), scaled by 1/k,
    /// without counting a micro-batch; call <see cref="CompleteMicroBatch"/> when the micro-batch is done.
    /// Returns false if the step is already lost or this part is NaN/∞ (then nothing is back-propagated).
    /// </summary>
    public bool BackwardPart(Tensor loss, string what = "loss")
    {
        double value = loss.detach().to(ScalarType.Float64).item<double>();
        if (!double.IsFinite(value))
        {
            _poisoned ??= $"{what} is {value} at step {StepsDone}; the update was skipped and the weights left unchanged.";
            return false;
        }
        if (_poisoned is not null) return false;   // the step is lost anyway; save the work
        if (!loss.requires_grad) return true;       // a constant part (e.g. a term with no trainable input)
        using var scope = NewDisposeScope();
        using var k = AccumulationSteps.ToScalar();   // held across the native call (see ScalarSafe.AdamW)
        var scaled = AccumulationSteps == 1 ? loss : loss.div(k);
        scaled.backward();
        AutogradErrors.ThrowIfAny();
        return true;
    }

    /// <summary>Marks the step as lost (e.g. a non-finite value found outside a loss); the next <see cref="Step"/>
    /// skips the update.</summary>
    public void Poison(string reason) => _poisoned ??= reason;

    /// <summary>True when the current step will be skipped.</summary>
    public bool IsPoisoned => _poisoned is not null;

    /// <summary>Counts one finished micro-batch.</summary>
    public void CompleteMicroBatch() => PendingMicroBatches++;

    /// <summary>Applies (or skips) the optimizer step for the micro-batches back-propagated so far.</summary>
    public StepReport Step()
    {
        if (PendingMicroBatches == 0) throw new InvalidOperationException("OptimizerStepper.Step called before any Backward.");
        int index = StepsDone;
        double lr = Schedule.LearningRateAt(index);
        StepReport report;
        if (_poisoned is not null)
        {
            report = new StepReport(index, lr, double.NaN, false, _poisoned);
        }
        else
        {
            var parameters = _trainable.Select(p => p.parameter).ToList();
            double norm = MaxGradientNorm is { } max ? GradientClipping.ClipGlobalNorm(parameters, max) : GradientClipping.GlobalNorm(parameters);
            if (!double.IsFinite(norm))
            {
                report = new StepReport(index, lr, norm, false, $"the gradient norm is {norm} at step {index}; the update was skipped and the weights left unchanged.");
            }
            else
            {
                AdamWFactory.SetLearningRate(Optimizer, lr);
                Optimizer.step();
                report = new StepReport(index, lr, norm, true, null);
            }
        }
        if (!report.Applied) StepsSkipped++;
        ZeroGradients();
        _poisoned = null;
        PendingMicroBatches = 0;
        StepsDone++;
        return report;
    }

    /// <summary>Drops every gradient (sets it to none, like PyTorch's default, so untouched parameters are not
    /// moved by Adam's momentum on a zero gradient).</summary>
    public void ZeroGradients()
    {
        // Every `p.grad` read returns a new managed handle to the native gradient. Read outside a dispose scope, that
        // handle keeps the whole gradient alive until the GC happens to finalise it (about one model's worth of
        // memory per step); the scope releases the handles, so the gradients are freed here.
        using var scope = NewDisposeScope();
        foreach (var (_, p) in _trainable)
            if (p.grad is not null) p.grad = null;
    }

    public void Dispose() => Optimizer.Dispose();
}
