using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Training.Losses;
using static TorchSharp.torch;

namespace Ullme.MLNet.Training;

/// <summary>
/// The trained model's forward passes during a step: pooled embeddings of a <see cref="TokenBatch"/>, and causal
/// token log-probs of a <see cref="GenerationBatch"/>. With <see cref="FineTuneOptions.GradientCheckpointing"/>
/// (and gradients recorded) every layer runs through <see cref="ActivationCheckpoint"/> via the backbone's
/// per-layer hook (<see cref="EmbeddingBackbone.ForwardLayers"/>); the tensors those layers capture are held until
/// <see cref="ReleaseLayerInputs"/>, after the batch's backward.
/// </summary>
internal sealed class PolicyForward
{
    private readonly EmbeddingBackbone _backbone;
    private readonly FineTuneOptions _options;
    private readonly List<IDisposable> _layerInputs = [];

    public PolicyForward(EmbeddingBackbone backbone, FineTuneOptions options)
    {
        _backbone = backbone;
        _options = options;
    }

    /// <summary>Pooled embeddings [n, H] (float32) of a token batch.</summary>
    public Tensor Embed(TokenBatch batch)
    {
        using var scope = NewDisposeScope();
        var hidden = Hidden(batch.InputIds, batch.AttentionMask, _options.EmbeddingAttention);
        return Pooler.Pool(hidden, batch.AttentionMask, batch.PoolingMask, _options.Pooling).MoveToOuterDisposeScope();
    }

    /// <summary>Causal token log-probs [M, T] of the candidate tokens (0 elsewhere).</summary>
    public Tensor TokenLogProbs(GenerationBatch gen)
    {
        var hidden = Hidden(gen.InputIds, gen.AttentionMask, AttentionMode.Causal);
        return Losses.TokenLogProbs.ForInputs(hidden, gen.InputIds, gen.ScoreMask, _backbone.LanguageModelLogits);
    }

    /// <summary>Final states, with per-layer activation checkpointing when asked and gradients are recorded.</summary>
    public Tensor Hidden(Tensor ids, Tensor mask, AttentionMode mode)
    {
        if (!_options.GradientCheckpointing || !is_grad_enabled())
            return _backbone.Forward(ids, mask, mode);
        return _backbone.ForwardLayers(ids, mask, mode, ActivationCheckpoint.Apply, _layerInputs);
    }

    /// <summary>The backbone's vocabulary logits of final states.</summary>
    public Tensor LanguageModelLogits(Tensor hidden) => _backbone.LanguageModelLogits(hidden);

    /// <summary>Releases what checkpointed layers captured; call once the batch's backward passes are done.</summary>
    public void ReleaseLayerInputs()
    {
        foreach (var r in _layerInputs) r.Dispose();
        _layerInputs.Clear();
    }
}
