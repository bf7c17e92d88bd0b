using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// A BERT encoder in the Hugging Face / sentence-transformers layout (all-MiniLM, BGE, E5, ...).
/// <para>
/// The idea in one paragraph: every token id becomes the sum of three learned vectors — its word embedding, the
/// embedding of its absolute position, and a token-type ("segment") embedding — normalised by a LayerNorm. Then
/// <c>num_hidden_layers</c> identical post-norm blocks follow, each
/// <c>x = LayerNorm(x + Attention(x))</c>, <c>x = LayerNorm(x + W2·act(W1·x))</c>, where every token attends to every
/// non-padded token (BERT is bidirectional by construction; there is no causal mode). The final states are what
/// sentence-transformers pools (usually a masked mean) into a sentence embedding.
/// </para>
/// <para>
/// Parameter names equal the HF checkpoint keys of <c>BertModel</c>
/// (<c>embeddings.word_embeddings.weight</c>, <c>encoder.layer.0.attention.self.query.weight</c>, ...), so a
/// <c>model.safetensors</c> loads 1:1; checkpoints saved from <c>BertForX</c> carry a <c>bert.</c> prefix, which
/// <see cref="MapCheckpointKey"/> strips. The pooler and the MLM/NSP heads are not part of this module.
/// </para>
/// <para>
/// In bfloat16, LayerNorms run in float32 and are cast back; the attention softmax runs inside
/// <c>scaled_dot_product_attention</c>, whose CPU kernels accumulate in float32. <see cref="Create"/> returns the
/// module in eval mode (dropout off), as HF's <c>from_pretrained</c> does; call <c>train()</c> to fine-tune with the
/// configured dropout.
/// </para>
/// </summary>
internal sealed class BertEncoder : EmbeddingBackbone
{
    // Field names are the HF module names: they become the parameter-name prefixes.
    private readonly BertEmbeddings embeddings;
    private readonly BertLayerStack encoder;

    private readonly int hiddenSize;
    private readonly int maxPositions;
    private readonly int vocabSize;

    /// <summary>The configuration this encoder was built from.</summary>
    public ModelConfig Config { get; }

    private BertEncoder(ModelConfig config, BertActivation activation) : base("bert")
    {
        Config = config;
        hiddenSize = config.HiddenSize;
        maxPositions = config.MaxPositionEmbeddings;
        vocabSize = config.VocabSize;
        double eps = config.LayerNormEps ?? 1e-12;
        double hiddenDropout = config.HiddenDropoutProb ?? 0.1;
        double attentionDropout = config.AttentionProbsDropoutProb ?? 0.1;

        embeddings = new BertEmbeddings(config.VocabSize, config.HiddenSize, config.MaxPositionEmbeddings,
            config.TypeVocabSize ?? 2, eps, hiddenDropout);
        encoder = new BertLayerStack(config.NumHiddenLayers, config.HiddenSize, config.NumAttentionHeads,
            config.IntermediateSize, activation, eps, hiddenDropout, attentionDropout);
        RegisterComponents();
    }

    /// <summary>
    /// Builds a randomly initialised encoder for <paramref name="config"/> (float32, CPU, eval mode). Load weights
    /// with the checkpoint loader afterwards.
    /// </summary>
    /// <exception cref="UllmeException">The config is not a BERT config or names an unsupported activation or
    /// position-embedding type.</exception>
    public static BertEncoder Create(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        string where = config.SourcePath ?? "config.json";
        if (config.ModelType != "bert")
            throw new UllmeException($"'{where}': BertEncoder needs model_type \"bert\", got \"{config.ModelType}\".");
        if (config.EffectiveHeadDim * config.NumAttentionHeads != config.HiddenSize)
            throw new UllmeException($"'{where}': BERT needs hidden_size ({config.HiddenSize}) = num_attention_heads ({config.NumAttentionHeads}) x head size.");
        if (config.MaxPositionEmbeddings <= 0)
            throw new UllmeException($"'{where}': \"max_position_embeddings\" is missing or not positive.");
        if (config.PositionEmbeddingType is { } pet && pet != "absolute")
            throw new UllmeException($"'{where}': position_embedding_type \"{pet}\" is not supported; only \"absolute\" is.");
        if (config.TypeVocabSize is <= 0)
            throw new UllmeException($"'{where}': \"type_vocab_size\" must be positive, got {config.TypeVocabSize}.");

        var activation = (config.HiddenAct ?? "gelu") switch
        {
            "gelu" => BertActivation.Gelu,
            "gelu_new" or "gelu_pytorch_tanh" => BertActivation.GeluTanh,
            "relu" => BertActivation.Relu,
            var other => throw new UllmeException($"'{where}': hidden_act \"{other}\" is not supported for BERT. Supported: gelu, gelu_new, gelu_pytorch_tanh, relu."),
        };

        var model = new BertEncoder(config, activation);
        model.eval();
        return model;
    }

    public override int HiddenSize => hiddenSize;

    public override bool HasLanguageModelHead => false;

    public override bool SupportsCausal => false;

    /// <summary>Strips the <c>bert.</c> prefix that <c>BertModel</c> wrappers (<c>BertForMaskedLM</c>, ...) add.</summary>
    public override string MapCheckpointKey(string key) => MapKey(key);

    internal static string MapKey(string key) =>
        key.StartsWith("bert.", StringComparison.Ordinal) ? key["bert.".Length..] : key;

    /// <summary>The pooler, the MLM/NSP heads (<c>cls.*</c>) and the position/token-type id buffers are not
    /// parameters here.</summary>
    public override bool IsIgnorableCheckpointKey(string key) => IsIgnorableKey(key);

    /// <summary><see cref="IsIgnorableCheckpointKey"/> before the module exists (see <see cref="ModelPlan"/>).</summary>
    internal static bool IsIgnorableKey(string key)
    {
        key = MapKey(key);
        return key.StartsWith("pooler.", StringComparison.Ordinal)
            || key.StartsWith("cls.", StringComparison.Ordinal)
            || key is "embeddings.position_ids" or "embeddings.token_type_ids";
    }

    /// <summary>
    /// Final hidden states for a padded batch.
    /// </summary>
    /// <param name="inputIds">[B, T] int64.</param>
    /// <param name="attentionMask">[B, T], 1 = real token, 0 = padding.</param>
    /// <param name="mode">Must be <see cref="AttentionMode.Bidirectional"/>.</param>
    /// <param name="positionIds">[B, T] int64, or null. When null, positions are HF's 0..T-1 for right-padded
    /// (or unpadded) rows; a left-padded row gets the positions it would have unpadded (its first real token is
    /// position 0), so results do not depend on the padding side.</param>
    /// <returns>[B, T, H] in the model's dtype (token-type ids are all 0).</returns>
    public override Tensor Forward(Tensor inputIds, Tensor attentionMask, AttentionMode mode, Tensor? positionIds = null)
    {
        using var scope = NewDisposeScope();
        var (hidden, bias) = EmbedBatch(inputIds, attentionMask, mode, positionIds);
        foreach (var layer in encoder.layer)
        {
            Tensor next;
            using (var layerScope = NewDisposeScope())
            {
                next = layer.Forward(hidden, bias).MoveToOuterDisposeScope();
            }
            hidden.Dispose();
            hidden = next;
        }
        return hidden.MoveToOuterDisposeScope();
    }

    public override bool SupportsLayerRunner => true;

    public override Tensor ForwardLayers(Tensor inputIds, Tensor attentionMask, AttentionMode mode, LayerRunner runLayer, ICollection<IDisposable> layerInputs)
    {
        ArgumentNullException.ThrowIfNull(runLayer);
        ArgumentNullException.ThrowIfNull(layerInputs);
        var (hidden, bias) = EmbedBatch(inputIds, attentionMask, mode, null);
        if (bias is not null)
        {
            bias.DetachFromDisposeScope();
            layerInputs.Add(bias);
        }
        foreach (var layer in encoder.layer)
        {
            var current = layer;
            hidden = runLayer(h => current.Forward(h, bias), hidden);
        }
        return hidden;
    }

    /// <summary>Checks the batch; returns the embedded tokens [B, T, H] and the additive key mask [B, 1, 1, T]
    /// (null when nothing is padded), both in the caller's dispose scope.</summary>
    private (Tensor Hidden, Tensor? Bias) EmbedBatch(Tensor inputIds, Tensor attentionMask, AttentionMode mode, Tensor? positionIds)
    {
        if (mode == AttentionMode.Causal)
            throw new UllmeException("BERT encoders are bidirectional; causal attention is not available.");
        if (inputIds.dim() != 2)
            throw new UllmeException($"BERT input_ids must be [batch, tokens]; got shape [{string.Join(", ", inputIds.shape)}].");
        if (!attentionMask.shape.SequenceEqual(inputIds.shape))
            throw new UllmeException($"BERT attention_mask shape [{string.Join(", ", attentionMask.shape)}] differs from input_ids shape [{string.Join(", ", inputIds.shape)}].");
        if (positionIds is not null && !positionIds.shape.SequenceEqual(inputIds.shape))
            throw new UllmeException($"BERT position_ids shape [{string.Join(", ", positionIds.shape)}] differs from input_ids shape [{string.Join(", ", inputIds.shape)}].");
        long batch = inputIds.shape[0], tokens = inputIds.shape[1];
        if (tokens > maxPositions)
            throw new UllmeException($"BERT input has {tokens} tokens but the model has only {maxPositions} positions (max_position_embeddings); truncate the input.");

        using var scope = NewDisposeScope();
        var device = inputIds.device;
        if (inputIds.numel() > 0)
        {
            long low = inputIds.min().item<long>(), high = inputIds.max().item<long>();
            if (low < 0 || high >= vocabSize)
                throw new UllmeException($"BERT input_ids contain token id {(low < 0 ? low : high)}, outside the vocabulary (vocab_size {vocabSize}).");
            if (positionIds is not null && (positionIds.min().item<long>() < 0 || positionIds.max().item<long>() >= maxPositions))
                throw new UllmeException($"BERT position_ids must lie in [0, {maxPositions}) (max_position_embeddings).");
        }
        var keep = attentionMask.to(ScalarType.Bool);                                   // [B, T]

        if (positionIds is null)
        {
            var ordinal = ScalarOps.Arange(tokens, ScalarType.Int64, device).unsqueeze(0).expand(batch, tokens); // [B, T]
            var counted = keep.to(ScalarType.Int64).cumsum(1).Sub(1);                   // [B, T] real-token rank
            positionIds = where(keep, counted, ordinal);
        }

        var hidden = embeddings.Forward(inputIds.to(ScalarType.Int64), positionIds.to(ScalarType.Int64)); // [B, T, H]

        // Additive mask over keys: 0 where a key is real, the dtype's lowest value where it is padding. Skipped
        // when nothing is padded (SDPA is faster without one).
        Tensor? bias = null;
        if (!keep.all().item<bool>())
        {
            var dtype = hidden.dtype;
            bias = zeros(new[] { batch, 1, 1, tokens }, dtype, device)
                .MaskedFill(keep.logical_not().view(batch, 1, 1, tokens), finfo(dtype).min); // [B, 1, 1, T]
        }
        return (hidden.MoveToOuterDisposeScope(), bias?.MoveToOuterDisposeScope());
    }

    /// <summary>LayerNorm computed in float32 whatever the tensor's dtype, cast back (bfloat16 safety).</summary>
    internal static Tensor LayerNormFloat32(LayerNorm norm, Tensor x, double eps)
    {
        var shape = new[] { x.shape[^1] };
        if (x.dtype == ScalarType.Float32 && norm.weight!.dtype == ScalarType.Float32)
            return nn.functional.layer_norm(x, shape, norm.weight, norm.bias, eps);
        using var scope = NewDisposeScope();
        var y = nn.functional.layer_norm(x.to(ScalarType.Float32), shape,
            norm.weight!.to(ScalarType.Float32), norm.bias!.to(ScalarType.Float32), eps);
        return y.to(x.dtype).MoveToOuterDisposeScope();
    }
}

internal enum BertActivation { Gelu, GeluTanh, Relu }

/// <summary><c>embeddings.*</c>: word + position + token-type embeddings, then LayerNorm and dropout.</summary>
internal sealed class BertEmbeddings : nn.Module
{
    private readonly Embedding word_embeddings;
    private readonly Embedding position_embeddings;
    private readonly Embedding token_type_embeddings;
    private readonly LayerNorm LayerNorm;
    private readonly ReplayableDropout dropout;
    private readonly double eps;

    public BertEmbeddings(int vocab, int hidden, int maxPositions, int typeVocab, double eps, double dropoutP) : base("embeddings")
    {
        word_embeddings = nn.Embedding(vocab, hidden);
        position_embeddings = nn.Embedding(maxPositions, hidden);
        token_type_embeddings = nn.Embedding(typeVocab, hidden);
        LayerNorm = nn.LayerNorm(hidden, eps);
        dropout = new ReplayableDropout(dropoutP);
        this.eps = eps;
        RegisterComponents();
    }

    /// <summary>[B, T] ids and positions → [B, T, H]. Token type is 0 for every token (single-text input).</summary>
    public Tensor Forward(Tensor inputIds, Tensor positionIds)
    {
        var x = word_embeddings.forward(inputIds)                 // [B, T, H]
            .Add(position_embeddings.forward(positionIds))       // [B, T, H]
            .Add(token_type_embeddings.weight![0]);              // [H] broadcast: type 0
        return dropout.forward(BertEncoder.LayerNormFloat32(LayerNorm, x, eps));
    }
}

/// <summary><c>encoder.*</c>: the stack of transformer blocks, <c>encoder.layer.N</c>.</summary>
internal sealed class BertLayerStack : nn.Module
{
    public readonly ModuleList<BertLayer> layer;

    public BertLayerStack(int layers, int hidden, int heads, int intermediate, BertActivation activation,
        double eps, double hiddenDropout, double attentionDropout) : base("encoder")
    {
        layer = new ModuleList<BertLayer>();
        for (int i = 0; i < layers; i++)
            layer.Add(new BertLayer(hidden, heads, intermediate, activation, eps, hiddenDropout, attentionDropout));
        RegisterComponents();
    }
}

/// <summary>One post-norm block: <c>x = LN(x + Attn(x))</c>, then <c>x = LN(x + FFN(x))</c>.</summary>
internal sealed class BertLayer : nn.Module
{
    private readonly BertAttention attention;
    private readonly BertIntermediate intermediate;
    private readonly BertOutput output;

    public BertLayer(int hidden, int heads, int intermediateSize, BertActivation activation, double eps,
        double hiddenDropout, double attentionDropout) : base("layer")
    {
        attention = new BertAttention(hidden, heads, eps, hiddenDropout, attentionDropout);
        intermediate = new BertIntermediate(hidden, intermediateSize, activation);
        output = new BertOutput(intermediateSize, hidden, eps, hiddenDropout);
        RegisterComponents();
    }

    /// <summary>[B, T, H] → [B, T, H]; <paramref name="keyBias"/> is the additive [B, 1, 1, T] padding mask or null.</summary>
    public Tensor Forward(Tensor x, Tensor? keyBias)
    {
        var attended = attention.Forward(x, keyBias);            // [B, T, H]
        var inner = intermediate.Forward(attended);              // [B, T, I]
        return output.Forward(inner, attended);                  // [B, T, H]
    }
}

/// <summary><c>attention.*</c>: self-attention (<c>self</c>) and its projection + residual + norm (<c>output</c>).</summary>
internal sealed class BertAttention : nn.Module
{
    private readonly BertSelfAttention self;
    private readonly BertSelfOutput output;

    public BertAttention(int hidden, int heads, double eps, double hiddenDropout, double attentionDropout) : base("attention")
    {
        self = new BertSelfAttention(hidden, heads, attentionDropout);
        output = new BertSelfOutput(hidden, eps, hiddenDropout);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? keyBias) => output.Forward(self.Forward(x, keyBias), x);
}

/// <summary><c>attention.self.{query,key,value}</c>: multi-head scaled dot-product attention over all real keys.</summary>
internal sealed class BertSelfAttention : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> query;
    private readonly nn.Module<Tensor, Tensor> key;
    private readonly nn.Module<Tensor, Tensor> value;
    private readonly int heads;
    private readonly int headDim;
    private readonly double dropoutP;

    public BertSelfAttention(int hidden, int heads, double dropoutP) : base("self")
    {
        query = nn.Linear(hidden, hidden);
        key = nn.Linear(hidden, hidden);
        value = nn.Linear(hidden, hidden);
        this.heads = heads;
        headDim = hidden / heads;
        this.dropoutP = dropoutP;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? keyBias)
    {
        long b = x.shape[0], t = x.shape[1], h = x.shape[2];
        var q = query.forward(x).view(b, t, heads, headDim).transpose(1, 2);   // [B, nh, T, hd]
        var k = key.forward(x).view(b, t, heads, headDim).transpose(1, 2);     // [B, nh, T, hd]
        var v = value.forward(x).view(b, t, heads, headDim).transpose(1, 2);   // [B, nh, T, hd]
        // softmax(q·kᵀ / sqrt(hd) + bias) · v, with attention-probability dropout only while training.
        var context = nn.functional.scaled_dot_product_attention(q, k, v, keyBias, training ? dropoutP : 0.0, is_casual: false);
        return context.transpose(1, 2).reshape(b, t, h);                       // [B, T, H]
    }
}

/// <summary><c>attention.output.{dense,LayerNorm}</c>: projection, dropout, residual, post-norm.</summary>
internal sealed class BertSelfOutput : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly LayerNorm LayerNorm;
    private readonly ReplayableDropout dropout;
    private readonly double eps;

    public BertSelfOutput(int hidden, double eps, double dropoutP) : base("output")
    {
        dense = nn.Linear(hidden, hidden);
        LayerNorm = nn.LayerNorm(hidden, eps);
        dropout = new ReplayableDropout(dropoutP);
        this.eps = eps;
        RegisterComponents();
    }

    public Tensor Forward(Tensor context, Tensor residual) =>
        BertEncoder.LayerNormFloat32(LayerNorm, dropout.forward(dense.forward(context)).Add(residual), eps);
}

/// <summary><c>intermediate.dense</c> followed by the activation (exact GELU for "gelu").</summary>
internal sealed class BertIntermediate : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly BertActivation activation;

    public BertIntermediate(int hidden, int intermediate, BertActivation activation) : base("intermediate")
    {
        dense = nn.Linear(hidden, intermediate);
        this.activation = activation;
        RegisterComponents();
    }

    public Tensor Forward(Tensor x)
    {
        var y = dense.forward(x);                                              // [B, T, I]
        return activation switch
        {
            BertActivation.Gelu => nn.functional.gelu(y),
            BertActivation.GeluTanh => nn.functional.gelu(y, GELU.Approximate.tanh),
            _ => nn.functional.relu(y),
        };
    }
}

/// <summary><c>output.{dense,LayerNorm}</c>: down-projection, dropout, residual, post-norm.</summary>
internal sealed class BertOutput : nn.Module
{
    private readonly nn.Module<Tensor, Tensor> dense;
    private readonly LayerNorm LayerNorm;
    private readonly ReplayableDropout dropout;
    private readonly double eps;

    public BertOutput(int intermediate, int hidden, double eps, double dropoutP) : base("output")
    {
        dense = nn.Linear(intermediate, hidden);
        LayerNorm = nn.LayerNorm(hidden, eps);
        dropout = new ReplayableDropout(dropoutP);
        this.eps = eps;
        RegisterComponents();
    }

    public Tensor Forward(Tensor inner, Tensor residual) =>
        BertEncoder.LayerNormFloat32(LayerNorm, dropout.forward(dense.forward(inner)).Add(residual), eps);
}
