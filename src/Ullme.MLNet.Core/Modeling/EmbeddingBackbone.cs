using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// A transformer that turns token ids into contextual states: the decoder (Llama, Mistral, Qwen2, Phi-3, Gemma2)
/// or a BERT-style encoder. Parameter names (<c>named_parameters()</c>) equal the Hugging Face checkpoint keys,
/// so checkpoints load 1:1.
/// </summary>
internal abstract class EmbeddingBackbone : nn.Module
{
    protected EmbeddingBackbone(string name) : base(name) { }

    /// <summary>Width of the returned states.</summary>
    public abstract int HiddenSize { get; }

    /// <summary>True for decoders with a language-model head (log-likelihood scoring is possible).</summary>
    public virtual bool HasLanguageModelHead => false;

    /// <summary>Whether <see cref="AttentionMode.Causal"/> is meaningful (false for BERT encoders, which are always
    /// bidirectional).</summary>
    public virtual bool SupportsCausal => HasLanguageModelHead;

    /// <summary>
    /// Final states (after the final norm) for a padded batch.
    /// </summary>
    /// <param name="inputIds">[B, T] int64.</param>
    /// <param name="attentionMask">[B, T] int64/bool, 1 = real token, 0 = padding (left or right).</param>
    /// <param name="mode">Causal or bidirectional attention.</param>
    /// <param name="positionIds">[B, T] int64 or null: then positions are cumsum(mask) - 1 (so left padding works).</param>
    /// <returns>[B, T, H] in the model's dtype.</returns>
    public abstract Tensor Forward(Tensor inputIds, Tensor attentionMask, AttentionMode mode, Tensor? positionIds = null);

    /// <summary>
    /// Pooled embeddings [B, H] float32 computed by the backbone itself (an exported graph that pools inside), or
    /// null when it does not pool this way; the engine then pools <see cref="Forward"/>'s states.
    /// </summary>
    public virtual Tensor? TryForwardPooled(Tensor inputIds, Tensor attentionMask, Tensor? poolingMask, AttentionMode mode,
        Pooling.PoolingMode pooling, bool normalize) => null;

    /// <summary>
    /// Writes the backbone's own model files into <paramref name="folder"/> (an exported graph writes model.onnx)
    /// and returns true; false (default) = the backbone's weights are its <c>state_dict</c>, saved as safetensors.
    /// </summary>
    public virtual bool TryWriteModelFiles(string folder) => false;

    /// <summary>Whether <see cref="ForwardLayers"/> is available (every built-in backbone: decoders and BERT).</summary>
    public virtual bool SupportsLayerRunner => false;

    /// <summary>
    /// The forward of <see cref="Forward"/> (positions from the mask), with each transformer layer run through
    /// <paramref name="runLayer"/> — the per-layer hook activation checkpointing uses. The tensors every layer reads
    /// (attention masks, rotary tables) leave all dispose scopes and are added to <paramref name="layerInputs"/>: a
    /// checkpointed layer recomputes from them during the backward, so the caller disposes them after it.
    /// </summary>
    /// <param name="inputIds">[B, T] int64.</param>
    /// <param name="attentionMask">[B, T], 1 = real token.</param>
    /// <param name="mode">Causal or bidirectional attention.</param>
    /// <param name="runLayer">Runs one layer on its input state.</param>
    /// <param name="layerInputs">Receives what the layers capture, to be disposed by the caller.</param>
    /// <returns>[B, T, H] final states, as <see cref="Forward"/>.</returns>
    public virtual Tensor ForwardLayers(Tensor inputIds, Tensor attentionMask, AttentionMode mode, LayerRunner runLayer, ICollection<IDisposable> layerInputs) =>
        throw new UllmeException($"{GetType().Name} does not expose its layers (ForwardLayers), so it cannot checkpoint activations per layer; turn GradientCheckpointing off for this model.");

    /// <summary>Whether <see cref="AttentionDropout"/> can be set (decoders; BERT has its config's dropouts).</summary>
    public virtual bool SupportsAttentionDropout => false;

    /// <summary>Dropout on the attention probabilities of every layer while training (decoders: HF
    /// <c>attention_dropout</c>, initially the config's). 0 for backbones without it.</summary>
    public virtual double AttentionDropout
    {
        get => 0;
        set => throw new UllmeException($"{GetType().Name} has no settable attention dropout; it trains with the dropouts of its config.");
    }

    /// <summary>Logits [.., V] for states [.., H] (applies final soft-capping where the architecture has it).</summary>
    public virtual Tensor LanguageModelLogits(Tensor hidden) =>
        throw new NotSupportedException($"{GetType().Name} has no language-model head.");

    /// <summary>
    /// Checkpoint keys that may be present in a file but have no parameter here and are safely ignored
    /// (e.g. rotary <c>inv_freq</c> buffers, a tied <c>lm_head.weight</c>, BERT's <c>pooler.*</c>).
    /// </summary>
    public virtual bool IsIgnorableCheckpointKey(string key) => false;

    /// <summary>
    /// Maps a key as stored in a checkpoint to this module's parameter name (e.g. BERT strips a leading
    /// <c>bert.</c>). Identity by default.
    /// </summary>
    public virtual string MapCheckpointKey(string key) => key;
}
