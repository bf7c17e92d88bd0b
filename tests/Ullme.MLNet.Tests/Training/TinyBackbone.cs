using TorchSharp;
using TorchSharp.Modules;
using Ullme.MLNet.Modeling;
using static TorchSharp.torch;

namespace Ullme.MLNet.Tests.Training;

/// <summary>
/// A one-layer transformer-ish backbone for trainer tests: token + position embeddings, single-head attention that
/// honours padding and the attention mode, dropout, a linear head on the vocabulary. Float64 by default so gradient
/// comparisons can be tight.
/// </summary>
internal sealed class TinyBackbone : EmbeddingBackbone
{
    private readonly Embedding embed_tokens;
    private readonly Embedding embed_positions;
    private readonly nn.Module<Tensor, Tensor> q_proj, k_proj, v_proj, o_proj;
    private readonly nn.Module<Tensor, Tensor> dropout;
    private readonly Linear lm_head;
    private readonly int _hidden;

    public TinyBackbone(int vocab = 11, int hidden = 6, double dropoutP = 0.0, ScalarType dtype = ScalarType.Float64) : base(nameof(TinyBackbone))
    {
        _hidden = hidden;
        embed_tokens = nn.Embedding(vocab, hidden, dtype: dtype);
        embed_positions = nn.Embedding(64, hidden, dtype: dtype);
        q_proj = nn.Linear(hidden, hidden, dtype: dtype);
        k_proj = nn.Linear(hidden, hidden, dtype: dtype);
        v_proj = nn.Linear(hidden, hidden, dtype: dtype);
        o_proj = nn.Linear(hidden, hidden, dtype: dtype);
        dropout = dropoutP > 0 ? nn.Dropout(dropoutP) : nn.Identity();
        lm_head = nn.Linear(hidden, vocab, hasBias: false, dtype: dtype);
        RegisterComponents();
    }

    public override int HiddenSize => _hidden;
    public override bool HasLanguageModelHead => true;

    public override Tensor Forward(Tensor inputIds, Tensor attentionMask, AttentionMode mode, Tensor? positionIds = null)
    {
        using var scope = NewDisposeScope();
        long t = inputIds.shape[1];
        var valid = attentionMask.to(ScalarType.Bool);                                    // [B, T]
        var positions = positionIds ?? (valid.to(ScalarType.Int64).cumsum(1) - 1).clamp_min(0);
        var x = embed_tokens.forward(inputIds) + embed_positions.forward(positions);    // [B, T, H]
        var scores = q_proj.forward(x).matmul(k_proj.forward(x).transpose(1, 2)) / Math.Sqrt(_hidden);   // [B, T, T]
        var allowed = valid.unsqueeze(1).expand(-1, t, -1);
        if (mode == AttentionMode.Causal) allowed = allowed.logical_and(ones(t, t, dtype: ScalarType.Bool).tril());
        allowed = allowed.logical_or(eye(t, dtype: ScalarType.Bool));                     // padding queries see themselves
        var attn = scores.masked_fill(allowed.logical_not(), double.NegativeInfinity).softmax(-1);
        var h = x + dropout.forward(o_proj.forward(attn.matmul(v_proj.forward(x))));
        return h.tanh().MoveToOuterDisposeScope();
    }

    public override Tensor LanguageModelLogits(Tensor hidden) => lm_head.forward(hidden);

    /// <summary>Masked mean of states [B, T, H] over mask [B, T].</summary>
    public static Tensor MeanPool(Tensor hidden, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var m = mask.to(hidden.dtype).unsqueeze(-1);
        return ((hidden * m).sum(1) / m.sum(1).clamp_min(1)).MoveToOuterDisposeScope();
    }
}
