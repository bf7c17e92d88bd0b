using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// A token-embedding table: row <c>id</c> of <see cref="weight"/> [V, H] is the vector of token <c>id</c>.
/// A managed module (rather than TorchSharp's native <c>nn.Embedding</c>) so that the registered parameter is the
/// tensor the lookup reads — the native <c>Embedding_from_pretrained</c> registers one tensor and reads another — and so
/// that the parameter is a plain field that can be created uninitialised, replaced and shared with a tied head.
/// </summary>
internal sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
    /// <summary>The table [num_embeddings, dim] (checkpoint key suffix <c>.weight</c>).</summary>
    public Parameter weight;

    public TokenEmbedding(long numEmbeddings, long dim, Device? device = null, ScalarType? dtype = null) : base(nameof(TokenEmbedding))
    {
        weight = new Parameter(empty(numEmbeddings, dim, dtype: dtype, device: device));
        RegisterComponents();
    }

    /// <summary>ids [..] int64 → [.., dim].</summary>
    public override Tensor forward(Tensor ids)
    {
        using var flat = ids.reshape(-1);
        using var rows = weight.index_select(0, flat);                   // [N, dim]
        return rows.view([.. ids.shape, weight.shape[1]]);
    }
}
