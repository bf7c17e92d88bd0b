using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// The gated feed-forward block of every supported decoder (GLU variants, Shazeer 2020):
/// <code>down_proj( act(gate_proj(x)) * up_proj(x) )</code>
/// with SiLU (SwiGLU: Llama, Mistral, Qwen2, Phi-3) or tanh-GELU (GeGLU: Gemma2). Phi-3 stores gate and up as one
/// <c>gate_up_proj</c> whose output rows are [gate | up].
/// </summary>
internal sealed class DecoderMlp : nn.Module<Tensor, Tensor>
{
    private readonly MlpActivation _activation;
    private readonly long _intermediate;

#pragma warning disable IDE1006 // names mirror HF checkpoint keys
    public nn.Module<Tensor, Tensor>? gate_proj;
    public nn.Module<Tensor, Tensor>? up_proj;
    public nn.Module<Tensor, Tensor>? gate_up_proj;
    public nn.Module<Tensor, Tensor> down_proj;
#pragma warning restore IDE1006

    public DecoderMlp(ArchitectureTraits traits, Device? device = null, ScalarType? dtype = null) : base(nameof(DecoderMlp))
    {
        _activation = traits.Activation;
        _intermediate = traits.IntermediateSize;
        long hidden = traits.HiddenSize;
        if (traits.FusedGateUp)
        {
            gate_up_proj = DecoderModel.NewLinear(hidden, 2 * _intermediate, traits.MlpBias, device, dtype);
        }
        else
        {
            gate_proj = DecoderModel.NewLinear(hidden, _intermediate, traits.MlpBias, device, dtype);
            up_proj = DecoderModel.NewLinear(hidden, _intermediate, traits.MlpBias, device, dtype);
        }
        down_proj = DecoderModel.NewLinear(_intermediate, hidden, traits.MlpBias, device, dtype);
        RegisterComponents();
    }

    /// <summary>x [.., H] → [.., H].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor gate, up;                                                  // [.., I]
        if (gate_up_proj is not null)
        {
            Tensor both = gate_up_proj.forward(x);                        // [.., 2I]
            gate = both.narrow(-1, 0, _intermediate);
            up = both.narrow(-1, _intermediate, _intermediate);
        }
        else
        {
            gate = gate_proj!.forward(x);
            up = up_proj!.forward(x);
        }
        Tensor activated = _activation switch
        {
            MlpActivation.Silu => nn.functional.silu(gate),
            MlpActivation.GeluTanh => nn.functional.gelu(gate, GELU.Approximate.tanh),
            MlpActivation.Gelu => nn.functional.gelu(gate),
            MlpActivation.Relu => nn.functional.relu(gate),
            _ => throw new InvalidOperationException($"Unknown activation {_activation}."),
        };
        // HF order: Llama act(gate) * up; Phi-3 up * act(gate) — the product is commutative and exact either way.
        return down_proj.forward(activated * up).MoveToOuterDisposeScope();
    }
}
