using TorchSharp;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// One pre-norm transformer block. Llama family:
/// <code>h = h + self_attn(input_layernorm(h));  h = h + mlp(post_attention_layernorm(h))</code>
/// Gemma2 ("sandwich" norms: each sub-block's output is normalised again before the residual add):
/// <code>h = h + post_attention_layernorm(self_attn(input_layernorm(h)))
/// h = h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)))</code>
/// Residual adds happen in the model dtype. The block is a self-contained callable (hidden, cos, sin, mask → hidden)
/// so a trainer can wrap each layer in gradient checkpointing.
/// </summary>
internal sealed class DecoderLayer : nn.Module<Tensor, Tensor, Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // names mirror HF checkpoint keys
    public DecoderAttention self_attn;
    public DecoderMlp mlp;
    public RmsNorm input_layernorm;
    public RmsNorm post_attention_layernorm;
    public RmsNorm? pre_feedforward_layernorm;
    public RmsNorm? post_feedforward_layernorm;
#pragma warning restore IDE1006

    /// <summary>Index of this layer in the stack.</summary>
    public int LayerIndex { get; }

    /// <summary>Whether this layer uses the sliding-window mask in causal mode.</summary>
    public bool IsSliding { get; }

    public DecoderLayer(ArchitectureTraits traits, int layerIndex, Device? device = null, ScalarType? dtype = null) : base(nameof(DecoderLayer))
    {
        LayerIndex = layerIndex;
        IsSliding = traits.SlidingWindow is not null && traits.SlidingLayers[layerIndex];
        self_attn = new DecoderAttention(traits, device, dtype);
        mlp = new DecoderMlp(traits, device, dtype);
        input_layernorm = new RmsNorm(traits.HiddenSize, traits.RmsNormEps, traits.NormStyle, device, dtype);
        post_attention_layernorm = new RmsNorm(traits.HiddenSize, traits.RmsNormEps, traits.NormStyle, device, dtype);
        if (traits.SandwichNorms)
        {
            pre_feedforward_layernorm = new RmsNorm(traits.HiddenSize, traits.RmsNormEps, traits.NormStyle, device, dtype);
            post_feedforward_layernorm = new RmsNorm(traits.HiddenSize, traits.RmsNormEps, traits.NormStyle, device, dtype);
        }
        RegisterComponents();
    }

    /// <summary>
    /// hidden [B, T, H]; cos/sin [B, T, rotary_dim]; mask [B, 1, T, T] (causal) or [B, 1, 1, T] (bidirectional) additive (the caller passes the sliding-window
    /// mask to sliding layers, see <see cref="DecoderInputs.MaskFor"/>). Returns [B, T, H].
    /// </summary>
    public override Tensor forward(Tensor hidden, Tensor cos, Tensor sin, Tensor mask)
    {
        using var scope = NewDisposeScope();
        Tensor attn = self_attn.forward(input_layernorm.forward(hidden), cos, sin, mask);
        if (pre_feedforward_layernorm is not null)
        {
            Tensor h = hidden.Add(post_attention_layernorm.forward(attn));
            Tensor ff = post_feedforward_layernorm!.forward(mlp.forward(pre_feedforward_layernorm.forward(h)));
            return h.Add(ff).MoveToOuterDisposeScope();
        }
        else
        {
            Tensor h = hidden.Add(attn);
            Tensor ff = mlp.forward(post_attention_layernorm.forward(h));
            return h.Add(ff).MoveToOuterDisposeScope();
        }
    }
}
