using TorchSharp;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// A transformer that turns token ids into contextual states: the decoder (Llama, Mistral, Qwen2, Phi-3, Gemma2)
/// or a BERT-style encoder. Parameter names (<c>named_parameters()</c>) equal the Hugging Face checkpoint keys,
/// so checkpoints load 1:1.
/// </summary>
public abstract class EmbeddingBackbone : nn.Module
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
