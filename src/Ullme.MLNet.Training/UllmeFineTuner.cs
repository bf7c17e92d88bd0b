using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Training.Losses;
using Ullme.MLNet.Training.Optimization;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// Fine-tunes a loaded <see cref="UllmeModel"/> into a better embedding model with the objectives of grl-spec.md:
/// contrastive InfoNCE on bidirectional embeddings, and — for decoders — the generation-side terms on the same
/// weights run causally (LM loss, preference loss, GRL consistency).
/// <para>
/// One batch of B examples (query q, positive p⁺, hard negatives N(q), optional instruction):
/// <list type="number">
/// <item>Embeddings: q (its instruction attended to but not pooled), p⁺ and every negative, through the backbone in
/// <see cref="FineTuneOptions.EmbeddingAttention"/> mode and pooled. The losses see them as leaf tensors; their
/// gradients are pushed into the weights afterwards in one backward (or chunk by chunk with GradCache).</item>
/// <item>Generation: for every candidate c ∈ {p⁺} ∪ N(q) the causal log-probs of c's tokens after
/// <c>[BOS] + prompt(q)</c> (prompt and candidate tokenized separately). Sums give log π(c|q), means give s_gen.</item>
/// <item>L = λ_cl·InfoNCE + λ_lm·NLL(p⁺) + λ_pref·pref(p⁺, hardest negative) + λ_kl·KL(P_gen ‖ P_rep); terms with
/// λ = 0 are not computed. The hardest negative is the one the policy finds most likely (highest mean token
/// log-prob). The reference π_ref is the model with its LoRA adapters switched off, or for full fine-tuning the
/// base model's log-probs computed once before the first step (kept in checkpoints).</item>
/// </list>
/// </para>
/// <para>
/// The parts, one concept each: <see cref="TrainingLoop"/> (steps, accumulation, checkpoints, resume),
/// <see cref="BatchStep"/> (one micro-batch forward and backward), <see cref="TrainingObjective"/> (the four terms),
/// <see cref="TrainingBatchEncoder"/> (tokenize and pad), <see cref="PolicyForward"/> (the model's passes, with
/// per-layer activation checkpointing through <see cref="EmbeddingBackbone.ForwardLayers"/>) and
/// <see cref="ReferencePolicy"/> (π_ref). This class validates the options against the model and wires them.
/// </para>
/// <para>
/// The trainer modifies the model in place: LoRA adapters are injected (and merged at the end by default), or all
/// weights are trained. Not thread-safe; do not embed with the same model while it trains.
/// </para>
/// </summary>
public sealed class UllmeFineTuner
{
    private readonly UllmeModel _model;
    private readonly FineTuneOptions _options;
    private readonly FineTuneOptions _given;
    private readonly EmbeddingBackbone _backbone;
    private readonly ReferencePolicy _reference;
    private readonly ITrainingStep _step;
    private bool _trained;

    public UllmeFineTuner(UllmeModel model, FineTuneOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _given = options ?? new FineTuneOptions();
        _given.Validate();
        // One negative pool across accumulated micro-batches: the K micro-batches are one batch of K·B, computed a
        // micro-batch at a time with GradCache (and the generation terms chunked alike).
        _options = _given.ShareNegativesAcrossAccumulation
            ? _given with
            {
                BatchSize = _given.BatchSize * _given.AccumulationSteps,
                AccumulationSteps = 1,
                GradCacheChunkSize = _given.GradCacheChunkSize ?? _given.BatchSize,
                GenerationChunkSize = _given.GenerationChunkSize ?? _given.BatchSize,
            }
            : _given;
        var weights = _options.EffectiveWeights;
        _backbone = model.Backbone;
        if (_options.MatryoshkaDimensions is not null)
            MatryoshkaLoss.Check(_options.MatryoshkaDimensions, _options.MatryoshkaWeights, model.EmbeddingDimension);
        if (model.Backend != InferenceBackend.Torch)
            throw new UllmeException($"Training runs on TorchSharp; '{model.ModelId}' is loaded on {model.Backend}. Load the safetensors folder with Backend = Torch (and export to ONNX after training).");
        if (weights.NeedsGeneration && !_backbone.HasLanguageModelHead)
            throw new UllmeException($"Strategy {_options.Strategy} needs generation scores, but '{model.ModelId}' ({model.Config.ModelType}) has no language-model head. Use Strategy = Contrastive (or λ_lm = λ_pref = λ_kl = 0).");
        if (_options.EmbeddingAttention == AttentionMode.Causal && !_backbone.SupportsCausal)
            throw new UllmeException($"EmbeddingAttention = Causal is not possible with '{model.ModelId}' ({model.Config.ModelType}): it is a bidirectional encoder.");
        if (_options.Lora is null && model.ScalarType != ScalarType.Float32 && model.ScalarType != ScalarType.Float64)
            throw new UllmeException($"Full fine-tuning needs float32 weights (the model is loaded as {model.ScalarType}, and there are no float32 master weights); load it in float32 or train LoRA adapters.");
        if (_options.GradientCheckpointing && !_backbone.SupportsLayerRunner)
            throw new UllmeException($"GradientCheckpointing works per layer; {_backbone.GetType().Name} does not expose its layers (EmbeddingBackbone.ForwardLayers). Turn it off for this model.");
        if (_options.PreferenceLoss == PreferenceLossKind.KtoPair && _options.GenerationChunkSize is not null && weights.Preference > 0)
            throw new UllmeException("PreferenceLoss = KtoPair needs the whole batch at once (its reference point is a batch mean); unset GenerationChunkSize.");

        if (_options.Strategy == TrainingStrategy.Mntp && !_backbone.HasLanguageModelHead)
            throw new UllmeException($"Strategy Mntp predicts masked tokens with the language-model head, but '{model.ModelId}' ({model.Config.ModelType}) has none. MNTP is for decoders; train an encoder with SimCse or Contrastive.");
        if (_options.AttentionDropout is not null && !_backbone.SupportsAttentionDropout)
            throw OptionCheck.Error("FineTuneOptions.AttentionDropout", $"applies to decoders; '{model.ModelId}' ({model.Config.ModelType}) trains with its config's hidden_dropout_prob and attention_probs_dropout_prob");

        var encoder = new TrainingBatchEncoder(model, _options);
        var policy = new PolicyForward(_backbone, _options);
        _reference = new ReferencePolicy(_backbone, policy, encoder, _options.BatchSize);
        _step = _options.Strategy == TrainingStrategy.Mntp
            ? new MntpStep(model, _options, policy)
            : new BatchStep(_options, new TrainingObjective(_options), encoder, policy, _reference);
    }

    /// <summary>The options as given.</summary>
    public FineTuneOptions Options => _given;

    /// <summary>
    /// Trains on <paramref name="data"/>; the model's weights are updated in place (LoRA merged at the end unless
    /// <see cref="FineTuneOptions.MergeLoraAtEnd"/> is false).
    /// </summary>
    public FineTuneResult Train(IReadOnlyList<TrainingExample> data, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Count == 0) throw new UllmeException("No training examples.");
        for (int i = 0; i < data.Count; i++)
        {
            var e = data[i];
            if (e is null || string.IsNullOrEmpty(e.Query) || string.IsNullOrEmpty(e.Positive) || e.Negatives is null || e.Negatives.Any(string.IsNullOrEmpty)
                || e.ExtraPositives is null || e.ExtraPositives.Any(string.IsNullOrEmpty))
                throw new UllmeException($"Training example {i} needs a non-empty query and positive and non-empty negatives and extra positives.");
        }
        if (_options.Strategy is TrainingStrategy.Mntp or TrainingStrategy.SimCse)
        {
            for (int i = 0; i < data.Count; i++)
                if (data[i].Query != data[i].Positive || data[i].Negatives.Count > 0 || data[i].ExtraPositives.Count > 0 || data[i].Instruction is not null)
                    throw new UllmeException($"Strategy {_options.Strategy} trains on plain texts, but training example {i} is a (query, positive, negatives) triple; build the data with TrainingData.FromTexts (or use Strategy = Contrastive).");
        }
        if (_trained) throw new UllmeException("This fine-tuner has already trained; create a new one (with the tuned model) to train again.");
        _trained = true;
        _reference.TrainingStarted = true;
        return new TrainingLoop(_model, _options, _step, _reference).Run(data, progress, cancellationToken);
    }

    /// <summary>
    /// The loss terms of one batch at the current weights, without training (eval mode, no gradients). All terms
    /// whose weight is non-zero are computed. Before training the reference model is the current model (so DPO is
    /// ln 2); with LoRA adapters in place it is the model with adapters off.
    /// </summary>
    public LossBreakdown ComputeLosses(IReadOnlyList<TrainingExample> batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.Count == 0) throw new UllmeException("ComputeLosses needs at least one example.");
        bool wasTraining = _backbone.training;
        _backbone.eval();
        try
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            return _step.Run(batch, null, null);
        }
        finally
        {
            if (wasTraining) _backbone.train();
        }
    }

    /// <summary>
    /// For tests: prepares the parameters as <see cref="Train"/> would (adapters injected, or everything
    /// trainable), runs one batch forward and backward in training mode, and leaves the gradients on the
    /// parameters (no optimizer step). The reference model is as in <see cref="ComputeLosses"/>.
    /// </summary>
    internal LossBreakdown BackwardOnce(IReadOnlyList<TrainingExample> batch)
    {
        TrainingSeed.Apply(_options.Seed);
        TrainingLoop.PrepareParameters(_backbone, _options);
        double? modelDropout = TrainingLoop.ApplyAttentionDropout(_backbone, _options);
        var schedule = new LearningRateSchedule { PeakLearningRate = 0, TotalSteps = 1 };
        using var stepper = new OptimizerStepper(_backbone.named_parameters(), _options.Optimizer, schedule, null, 1);
        _backbone.train();
        try
        {
            using var scope = NewDisposeScope();
            var losses = _step.Run(batch, null, stepper);
            if (stepper.IsPoisoned) throw new UllmeException("BackwardOnce: the batch produced a non-finite loss.");
            return losses;
        }
        finally
        {
            _backbone.eval();
            if (modelDropout is double restore) _backbone.AttentionDropout = restore;
        }
    }
}
