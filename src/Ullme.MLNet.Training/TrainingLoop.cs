using System.Diagnostics;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// The step loop: the seeded epoch order, micro-batches accumulated into optimizer steps, progress after every
/// step, checkpoints every <see cref="FineTuneOptions.CheckpointEvery"/> steps, on cancellation and at the end
/// (through <see cref="TrainingCheckpoint"/>), and resume from the newest checkpoint (the weights or adapters, the
/// optimizer state, the random stream, the data position and — full fine-tuning — the reference log-probs).
/// </summary>
internal sealed class TrainingLoop
{
    private readonly UllmeModel _model;
    private readonly FineTuneOptions _options;
    private readonly EmbeddingBackbone _backbone;
    private readonly ITrainingStep _step;
    private readonly ReferencePolicy _reference;
    private readonly bool _needsReferenceCache;

    public TrainingLoop(UllmeModel model, FineTuneOptions options, ITrainingStep step, ReferencePolicy reference)
    {
        _model = model;
        _options = options;
        _backbone = model.Backbone;
        _step = step;
        _reference = reference;
        _needsReferenceCache = options.EffectiveWeights.Preference > 0 && !options.ReferenceFree && options.Lora is null;
    }

    /// <summary>Makes the trained parameters trainable: LoRA adapters injected (once), or every weight.</summary>
    public static void PrepareParameters(EmbeddingBackbone backbone, FineTuneOptions options)
    {
        if (options.Lora is not null && LoraInjector.FindLayers(backbone).Count == 0)
            LoraInjector.Apply(backbone, options.Lora);
        else if (options.Lora is null)
            foreach (var (_, p) in backbone.named_parameters()) p.requires_grad = true;
    }

    /// <summary>Sets the attention dropout the run trains with (<see cref="FineTuneOptions.AttentionDropout"/>) and
    /// returns the model's own to put back afterwards, or null when unchanged.</summary>
    public static double? ApplyAttentionDropout(EmbeddingBackbone backbone, FineTuneOptions options)
    {
        if (options.EffectiveAttentionDropout is not double p || !backbone.SupportsAttentionDropout) return null;
        double own = backbone.AttentionDropout;
        backbone.AttentionDropout = p;
        return own;
    }

    public FineTuneResult Run(IReadOnlyList<TrainingExample> data, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        var o = _options;
        int microPerEpoch = o.KeepPartialBatch ? (data.Count + o.BatchSize - 1) / o.BatchSize : data.Count / o.BatchSize;
        if (microPerEpoch == 0)
            throw new UllmeException($"BatchSize {o.BatchSize} exceeds the {data.Count} training examples and KeepPartialBatch is off.");
        int stepsPerEpoch = (microPerEpoch + o.AccumulationSteps - 1) / o.AccumulationSteps;
        int totalSteps = o.MaxSteps ?? o.Epochs * stepsPerEpoch;
        string fingerprint = $"{o.Fingerprint()}-{_model.ModelId}-{data.Count}";

        TrainingSeed.Apply(o.Seed);
        PrepareParameters(_backbone, o);

        var schedule = new LearningRateSchedule { PeakLearningRate = o.Optimizer.LearningRate, TotalSteps = totalSteps, WarmupSteps = o.WarmupSteps, Decay = o.Decay };
        using var stepper = new OptimizerStepper(_backbone.named_parameters(), o.Optimizer, schedule, o.MaxGradientNorm, o.AccumulationSteps);

        int epoch = 0, position = 0;
        long examplesSeen = 0;
        int? resumedFrom = null;
        string? lastCheckpoint = null;
        if (o.Resume && TrainingCheckpoint.FindLatest(o.CheckpointDirectory!) is { } latest)
        {
            var state = Restore(latest, stepper, data, fingerprint);
            stepper.StepsDone = state.Step;
            epoch = state.Epoch;
            position = state.PositionInEpoch;
            examplesSeen = (long)epoch * data.Count + position;
            resumedFrom = state.Step;
            lastCheckpoint = latest;
        }
        var referenceTime = TimeSpan.Zero;
        if (_needsReferenceCache && !_reference.HasCache)
        {
            var referenceClock = Stopwatch.StartNew();
            _reference.ComputeCache(data);
            referenceTime = referenceClock.Elapsed;
        }

        var history = new List<TrainingProgress>();
        using var best = new BestTracker(this);
        var clock = Stopwatch.StartNew();
        long examplesThisRun = 0;
        int[] order = TrainingSeed.EpochOrder(o.Seed, epoch, data.Count, o.Shuffle);
        double? modelDropout = ApplyAttentionDropout(_backbone, o);
        _backbone.train();
        try
        {
            while (stepper.StepsDone < totalSteps)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    if (o.CheckpointDirectory is not null)
                        lastCheckpoint = Save(stepper, epoch, position, fingerprint, history.LastOrDefault()?.Losses);
                    cancellationToken.ThrowIfCancellationRequested();
                }
                var parts = new List<LossBreakdown>();
                for (int micro = 0; micro < o.AccumulationSteps; micro++)
                {
                    if (position >= data.Count || (!o.KeepPartialBatch && data.Count - position < o.BatchSize))
                    {
                        epoch++;
                        position = 0;
                        order = TrainingSeed.EpochOrder(o.Seed, epoch, data.Count, o.Shuffle);
                    }
                    int count = Math.Min(o.BatchSize, data.Count - position);
                    var indices = order.AsSpan(position, count).ToArray();
                    position += count;
                    examplesSeen += count;
                    examplesThisRun += count;
                    using var scope = NewDisposeScope();
                    parts.Add(_step.Run(indices.Select(i => data[i]).ToArray(), indices, stepper));
                    stepper.CompleteMicroBatch();
                }
                var report = stepper.Step();
                var losses = Average(parts);
                double? score = o.EvaluateEvery > 0 && (stepper.StepsDone % o.EvaluateEvery == 0 || stepper.StepsDone >= totalSteps)
                    ? best.Evaluate(stepper.StepsDone)
                    : null;
                var p = new TrainingProgress(report.Step + 1, totalSteps, epoch, examplesSeen, report.LearningRate, losses,
                    report.GradientNorm, report.Applied, report.SkipReason, clock.Elapsed) { Evaluation = score };
                history.Add(p);
                progress?.Report(p);
                if (o.CheckpointDirectory is not null && o.CheckpointEvery > 0 && stepper.StepsDone % o.CheckpointEvery == 0 && stepper.StepsDone < totalSteps)
                    lastCheckpoint = Save(stepper, epoch, position, fingerprint, losses);
            }
            if (o.CheckpointDirectory is not null)
                lastCheckpoint = Save(stepper, epoch, position, fingerprint, history.LastOrDefault()?.Losses);
        }
        finally
        {
            _backbone.eval();
            if (modelDropout is double restore) _backbone.AttentionDropout = restore;
        }

        bool restored = o.KeepBest && best.RestoreIfNotLast(stepper.StepsDone);
        if (o.Lora is not null && o.MergeLoraAtEnd) LoraInjector.MergeAndUnload(_backbone);
        clock.Stop();
        return new FineTuneResult(stepper.StepsDone, stepper.StepsSkipped, resumedFrom, history, lastCheckpoint, clock.Elapsed,
            examplesThisRun / Math.Max(1e-9, clock.Elapsed.TotalSeconds))
        {
            BestStep = best.Step,
            BestEvaluation = best.Score,
            RestoredBest = restored,
            ReferenceCacheTime = referenceTime,
        };
    }

    /// <summary>The run's evaluations (<see cref="FineTuneOptions.EvaluateEvery"/>) and, with
    /// <see cref="FineTuneOptions.KeepBest"/>, a copy of the trained tensors at the best one.</summary>
    private sealed class BestTracker(TrainingLoop loop) : IDisposable
    {
        private List<Tensor>? _snapshot;

        public int? Step { get; private set; }
        public double? Score { get; private set; }

        /// <summary>Scores the model as it is after <paramref name="step"/> (eval mode, no gradients), keeping the best.</summary>
        public double Evaluate(int step)
        {
            var o = loop._options;
            var metric = o.Evaluator!;
            var embedding = o.EvaluationEmbedding(loop._model);
            double score;
            loop._backbone.eval();
            try
            {
                using var noGrad = no_grad();
                score = metric.Evaluate(loop._model, embedding);
            }
            finally
            {
                loop._backbone.train();
            }
            if (!double.IsFinite(score)) return score;
            if (Score is double b && !(metric.HigherIsBetter ? score > b : score < b)) return score;
            Step = step;
            Score = score;
            if (o.KeepBest) Snapshot();
            return score;
        }

        private void Snapshot()
        {
            using var noGrad = no_grad();
            var tensors = loop.TrainedTensors();
            if (_snapshot is null)
            {
                _snapshot = tensors.Select(t => t.detach().clone().DetachFromDisposeScope()).ToList();
                return;
            }
            for (int i = 0; i < tensors.Count; i++) _snapshot[i].copy_(tensors[i]);
        }

        /// <summary>Puts the best step's tensors back unless it is <paramref name="lastStep"/>; true when it did.</summary>
        public bool RestoreIfNotLast(int lastStep)
        {
            if (_snapshot is null || Step == lastStep) return false;
            using var noGrad = no_grad();
            var tensors = loop.TrainedTensors();
            for (int i = 0; i < tensors.Count; i++) tensors[i].copy_(_snapshot[i]);
            return true;
        }

        public void Dispose()
        {
            if (_snapshot is null) return;
            foreach (var t in _snapshot) t.Dispose();
        }
    }

    /// <summary>The tensors training changes: the adapters (LoRA) or every trainable weight.</summary>
    private List<Tensor> TrainedTensors() => _options.Lora is not null
        ? LoraInjector.AdapterParameters(_backbone).Select(p => (Tensor)p.Parameter).ToList()
        : _backbone.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (Tensor)p.parameter).ToList();

    // ------------------------------------------------------------------------------------------------------------
    // Checkpoints (the format is TrainingCheckpoint's; the reference cache is one more named tensor).
    // ------------------------------------------------------------------------------------------------------------

    private List<(string, Tensor)> CheckpointTensors()
    {
        var list = _options.Lora is not null
            ? LoraInjector.AdapterParameters(_backbone).Select(p => (p.Name, (Tensor)p.Parameter)).ToList()
            : _backbone.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter)).ToList();
        list.AddRange(_reference.CheckpointTensors().Select(r => (r.Name, r.Tensor)));
        return list;
    }

    private string Save(OptimizerStepper stepper, int epoch, int position, string fingerprint, LossBreakdown? last)
    {
        using var scope = NewDisposeScope();
        var state = new TrainingCheckpointState
        {
            Step = stepper.StepsDone,
            Epoch = epoch,
            PositionInEpoch = position,
            StepsSkipped = stepper.StepsSkipped,
            Seed = _options.Seed,
            Weights = _options.Lora is null ? CheckpointWeights.Full : CheckpointWeights.Adapter,
            Fingerprint = fingerprint,
            LastLosses = last?.ToDictionary(),
        };
        return TrainingCheckpoint.Save(_options.CheckpointDirectory!, state, CheckpointTensors(), stepper.Optimizer, _options.KeepCheckpoints);
    }

    private TrainingCheckpointState Restore(string checkpoint, OptimizerStepper stepper, IReadOnlyList<TrainingExample> data, string fingerprint)
    {
        using var scope = NewDisposeScope();
        // The reference cache travels in the checkpoint (the base weights are gone after the first step).
        if (_needsReferenceCache) _reference.PrepareRestore(data);
        var tensors = CheckpointTensors();
        var state = TrainingCheckpoint.Restore(checkpoint, tensors, stepper.Optimizer, fingerprint);
        _reference.CompleteRestore(tensors);
        return state;
    }

    private static LossBreakdown Average(List<LossBreakdown> parts)
    {
        static double? Mean(IEnumerable<double?> xs)
        {
            var v = xs.Where(x => x.HasValue).Select(x => x!.Value).ToList();
            return v.Count == 0 ? null : v.Average();
        }
        return new LossBreakdown(parts.Average(p => p.Total), Mean(parts.Select(p => p.Contrastive)), Mean(parts.Select(p => p.LanguageModel)),
            Mean(parts.Select(p => p.Preference)), Mean(parts.Select(p => p.Consistency)))
        {
            MaskedNextToken = Mean(parts.Select(p => p.MaskedNextToken)),
        };
    }
}
