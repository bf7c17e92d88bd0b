using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Ullme.MLNet.Tensors;

namespace Ullme.MLNet.Modeling;

/// <summary>
/// A decoder-only transformer language model — Llama, Mistral, Qwen2, Phi-3 or Gemma2 — used as an embedding
/// backbone. One implementation; the differences between the architectures live in <see cref="ArchitectureTraits"/>.
/// <para>
/// Parameter names equal the HF <c>*ForCausalLM</c> checkpoint keys: <c>model.embed_tokens.weight</c>,
/// <c>model.layers.N.…</c>, <c>model.norm.weight</c> and <c>lm_head.weight</c> (absent with tied embeddings, where the
/// logits reuse the embedding matrix).
/// </para>
/// <para>
/// The same weights run in either attention mode, chosen per call: <see cref="AttentionMode.Causal"/> (the pre-training
/// mode; required for log-likelihoods) or <see cref="AttentionMode.Bidirectional"/> (every real token sees every real
/// token; positions unchanged, sliding windows off), as used by LLM2Vec-style embedding models.
/// </para>
/// <para>
/// A forward is <c>Embed → PrepareInputs → ForwardLayer × N → FinalNorm</c>; the pieces are public so a trainer can
/// checkpoint layers individually. Inference callers wrap the call in <c>torch.no_grad()</c>; nothing here disables
/// gradients.
/// </para>
/// </summary>
internal sealed class DecoderModel : EmbeddingBackbone
{
#pragma warning disable IDE1006 // names mirror HF checkpoint keys
    /// <summary>The transformer body (HF <c>LlamaModel</c> etc.): embeddings, layers, final norm.</summary>
    public DecoderStack model;

    /// <summary>The output projection to the vocabulary; null when the embeddings are tied.</summary>
    public Linear? lm_head;
#pragma warning restore IDE1006

    /// <summary>The architecture switches this instance was built with.</summary>
    public ArchitectureTraits Traits { get; }

    /// <summary>The config this instance was built from.</summary>
    public ModelConfig Config { get; }

    private DecoderModel(ModelConfig config, ArchitectureTraits traits, Device? device, ScalarType dtype) : base(nameof(DecoderModel))
    {
        Config = config;
        Traits = traits;
        model = new DecoderStack(traits, device, dtype);
        if (!traits.TieWordEmbeddings)
            lm_head = NewLinear(traits.HiddenSize, traits.VocabSize, false, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Builds a decoder for <paramref name="config"/> (model_type llama, mistral, qwen2, phi3 or gemma2).
    /// </summary>
    /// <param name="config">The model's config.</param>
    /// <param name="dtype">Float32 or BFloat16 (parameters are created directly in it).</param>
    /// <param name="device">Where the parameters live (CPU by default).</param>
    /// <param name="initializeWeights">True: HF's initialisation (normal(0, initializer_range) for projections and
    /// embeddings, zero biases, identity norms). False: projections and embeddings are left uninitialised, for a
    /// caller that loads a checkpoint right away (saves the time of drawing billions of random numbers).</param>
    /// <exception cref="UllmeException">The model_type is not a decoder, or the config cannot be honoured.</exception>
    public static DecoderModel Create(ModelConfig config, ScalarType dtype = ScalarType.Float32, Device? device = null, bool initializeWeights = true)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64))
            throw new UllmeException($"Decoder weights must be a floating-point type, got {dtype}.");
        var traits = ArchitectureTraits.From(config);
        var decoder = new DecoderModel(config, traits, device, dtype);
        if (initializeWeights) decoder.InitializeWeights();
        decoder.AttentionDropout = config.AttentionDropout ?? 0;
        return decoder;
    }

    public override int HiddenSize => Traits.HiddenSize;

    public override bool HasLanguageModelHead => true;

    public override bool SupportsAttentionDropout => true;

    public override double AttentionDropout
    {
        get => model.layers.Count == 0 ? 0 : model.layers[0].self_attn.Dropout;
        set
        {
            foreach (var layer in model.layers) layer.self_attn.Dropout = value;
        }
    }

    /// <summary>The dtype of the weights (and of the states this model computes).</summary>
    public ScalarType ComputeType => model.embed_tokens.weight.dtype;

    public override Tensor Forward(Tensor inputIds, Tensor attentionMask, AttentionMode mode, Tensor? positionIds = null)
    {
        using var scope = NewDisposeScope();
        ValidateBatch(inputIds, attentionMask, positionIds);
        Tensor hidden = Embed(inputIds);                                   // [B, T, H]
        using DecoderInputs inputs = PrepareInputs(attentionMask, mode, positionIds, hidden.dtype);
        for (int i = 0; i < model.layers.Count; i++)
        {
            Tensor next = ForwardLayer(i, hidden, inputs);
            hidden.Dispose(); // autograd keeps what it needs; the handle is no longer ours to hold
            hidden = next;
        }
        return FinalNorm(hidden).MoveToOuterDisposeScope();
    }

    public override bool SupportsLayerRunner => true;

    public override Tensor ForwardLayers(Tensor inputIds, Tensor attentionMask, AttentionMode mode, LayerRunner runLayer, ICollection<IDisposable> layerInputs)
    {
        ArgumentNullException.ThrowIfNull(runLayer);
        ArgumentNullException.ThrowIfNull(layerInputs);
        ValidateBatch(inputIds, attentionMask, null);
        Tensor hidden = Embed(inputIds);                                   // [B, T, H]
        DecoderInputs inputs = PrepareInputs(attentionMask, mode, null, hidden.dtype);
        foreach (var t in new[] { inputs.Cos, inputs.Sin, inputs.FullMask, inputs.SlidingMask })
            t?.DetachFromDisposeScope();
        layerInputs.Add(inputs);
        for (int i = 0; i < model.layers.Count; i++)
        {
            int layer = i;
            hidden = runLayer(h => ForwardLayer(layer, h, inputs), hidden);
        }
        return FinalNorm(hidden);
    }

    /// <summary>Token embeddings [B, T, H] (Gemma2: scaled by sqrt(hidden), the scale rounded to the model dtype).</summary>
    public Tensor Embed(Tensor inputIds)
    {
        using var scope = NewDisposeScope();
        Tensor hidden = model.embed_tokens.forward(inputIds);
        if (Traits.EmbeddingScale is double s)
        {
            // HF: hidden * torch.tensor(sqrt(hidden_size), dtype=hidden.dtype).
            Tensor normalizer = tensor(s, dtype: hidden.dtype, device: hidden.device);
            hidden = hidden * normalizer;
        }
        return hidden.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Builds, once per batch, the rotary tables for the positions and the additive masks every layer uses.
    /// </summary>
    /// <param name="attentionMask">[B, T], 1 = real token, 0 = padding (left or right).</param>
    /// <param name="mode">Causal: key j is visible to query i iff j ≤ i, key j is real and (sliding layers)
    /// i − j &lt; window; masks are [B, 1, T, T]. Bidirectional: iff key j is real (no triangle, no window); the
    /// mask is [B, 1, 1, T], the same for every query.</param>
    /// <param name="positionIds">[B, T] or null for cumsum(mask) − 1 clamped at 0 (left padding then starts at 0).</param>
    /// <param name="dtype">The compute dtype (the masks and cos/sin are made in it).</param>
    public DecoderInputs PrepareInputs(Tensor attentionMask, AttentionMode mode, Tensor? positionIds, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Device device = attentionMask.device;
        long b = attentionMask.shape[0], t = attentionMask.shape[1];
        Tensor valid = attentionMask.to(ScalarType.Bool);                 // [B, T]
        Tensor positions = positionIds is not null
            ? positionIds.to(ScalarType.Int64)
            : valid.to(ScalarType.Int64).cumsum(-1).Sub(1).ClampMin(0);     // [B, T]

        var (cos, sin) = model.rotary_emb.Lookup(positions, dtype);

        Tensor keyValid = valid.view(b, 1, 1, t);                          // [B, 1, 1, T]
        Tensor fullMask;
        Tensor? slidingMask = null;
        if (mode == AttentionMode.Bidirectional)
        {
            // Every query sees every real key, so one row per sequence is enough: [B, 1, 1, T], broadcast by the
            // attention kernel over heads and queries (T times less mask to build and to read than [B, 1, T, T]).
            // A padding query sees the real keys too; its output is never read.
            fullMask = Additive(keyValid, dtype);
        }
        else
        {
            Tensor rows = ScalarOps.Arange(t, ScalarType.Int64, device).view(t, 1);
            Tensor cols = ScalarOps.Arange(t, ScalarType.Int64, device).view(1, t);
            Tensor distance = rows - cols;                                // [T, T] i - j
            Tensor allowed = keyValid.logical_and(distance.Ge(0));        // [B, 1, T, T]
            // A padding query may see no key at all (left padding, causal). Let it see itself so its row stays
            // finite under any attention kernel; padding outputs are never read and real queries never see padding.
            Tensor paddedQueryDiagonal = eye(t, dtype: ScalarType.Bool, device: device).view(1, 1, t, t)
                .logical_and(valid.logical_not().view(b, 1, t, 1));
            fullMask = Additive(allowed.logical_or(paddedQueryDiagonal), dtype);
            if (Traits.HasSlidingLayers)
                slidingMask = Additive(allowed.logical_and(distance.Lt(Traits.SlidingWindow!.Value)).logical_or(paddedQueryDiagonal), dtype);
        }

        return new DecoderInputs
        {
            Cos = cos.MoveToOuterDisposeScope(),
            Sin = sin.MoveToOuterDisposeScope(),
            FullMask = fullMask.MoveToOuterDisposeScope(),
            SlidingMask = slidingMask?.MoveToOuterDisposeScope(),
            Mode = mode,
        };

        static Tensor Additive(Tensor allowed, ScalarType dtype) =>
            zeros(allowed.shape, dtype: dtype, device: allowed.device).MaskedFill(allowed.logical_not(), finfo(dtype).min);
    }

    /// <summary>Runs layer <paramref name="index"/> on hidden [B, T, H] with the batch's shared inputs.</summary>
    public Tensor ForwardLayer(int index, Tensor hidden, DecoderInputs inputs)
    {
        DecoderLayer layer = model.layers[index];
        return layer.forward(hidden, inputs.Cos, inputs.Sin, inputs.MaskFor(layer));
    }

    /// <summary>The final RMSNorm (<c>model.norm</c>).</summary>
    public Tensor FinalNorm(Tensor hidden) => model.norm.forward(hidden);

    /// <summary>
    /// Vocabulary logits [.., V] for final states [.., H]: <c>lm_head</c> or, with tied embeddings, the embedding
    /// matrix; Gemma2 then soft-caps them (cap · tanh(logits / cap)). Returned in the model dtype.
    /// </summary>
    public override Tensor LanguageModelLogits(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        Tensor logits;
        if (lm_head is not null)
        {
            logits = lm_head.forward(hidden);
        }
        else
        {
            logits = nn.functional.linear(hidden, model.embed_tokens.weight);
        }
        if (Traits.FinalLogitSoftcap is double cap)
            logits = logits.Div(cap).tanh().Mul(cap);
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Rotary caches (<c>…rotary_emb.inv_freq</c> and the like, stored by older HF versions) and, with tied
    /// embeddings, <c>lm_head.weight</c> (a copy of the embedding matrix) carry nothing this model needs.
    /// </summary>
    public override bool IsIgnorableCheckpointKey(string key) => IsIgnorableKey(key, Traits.TieWordEmbeddings);

    /// <summary><see cref="IsIgnorableCheckpointKey"/> before the module exists (see <see cref="ModelPlan"/>).</summary>
    internal static bool IsIgnorableKey(string key, bool tiedEmbeddings) =>
        key.Contains("rotary_emb.", StringComparison.Ordinal)
        || (tiedEmbeddings && key == "lm_head.weight");

    /// <summary>A bias-optional linear layer whose parameters are allocated but not initialised.</summary>
    internal static Linear NewLinear(long inFeatures, long outFeatures, bool hasBias, Device? device, ScalarType? dtype)
    {
        var weight = new Parameter(empty(outFeatures, inFeatures, dtype: dtype, device: device));
        Parameter? bias = hasBias ? new Parameter(zeros(outFeatures, dtype: dtype, device: device)) : null;
        return nn.Linear(weight, bias);
    }

    private void InitializeWeights()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) continue; // identity at construction
            if (name.EndsWith(".bias", StringComparison.Ordinal)) { p.zero_(); continue; }
            nn.init.normal_(p, 0.0, Traits.InitializerRange);
        }
        if (Traits.PaddingIdx is int pad)
            model.embed_tokens.weight[pad].zero_();
    }

    private void ValidateBatch(Tensor inputIds, Tensor attentionMask, Tensor? positionIds)
    {
        if (inputIds.dim() != 2)
            throw new UllmeException($"input_ids must be [batch, seq], got shape [{string.Join(", ", inputIds.shape)}].");
        if (inputIds.dtype != ScalarType.Int64)
            throw new UllmeException($"input_ids must be int64, got {inputIds.dtype}.");
        if (!attentionMask.shape.SequenceEqual(inputIds.shape))
            throw new UllmeException($"attention_mask shape [{string.Join(", ", attentionMask.shape)}] differs from input_ids shape [{string.Join(", ", inputIds.shape)}].");
        if (positionIds is not null && !positionIds.shape.SequenceEqual(inputIds.shape))
            throw new UllmeException($"position_ids shape [{string.Join(", ", positionIds.shape)}] differs from input_ids shape [{string.Join(", ", inputIds.shape)}].");
        if (inputIds.numel() > 0)
        {
            long min = inputIds.min().item<long>(), max = inputIds.max().item<long>();
            if (min < 0 || max >= Traits.VocabSize)
                throw new UllmeException($"input_ids must lie in [0, {Traits.VocabSize}) (vocab_size); got values in [{min}, {max}].");
        }
    }
}

/// <summary>
/// The transformer body, HF's <c>LlamaModel</c> (checkpoint prefix <c>model.</c>): token embeddings, the layer stack,
/// the final norm, and the (parameter-free) rotary embedding shared by all layers.
/// </summary>
internal sealed class DecoderStack : nn.Module
{
#pragma warning disable IDE1006 // names mirror HF checkpoint keys
    public TokenEmbedding embed_tokens;
    public ModuleList<DecoderLayer> layers;
    public RmsNorm norm;
    public RotaryEmbedding rotary_emb;
#pragma warning restore IDE1006

    public DecoderStack(ArchitectureTraits traits, Device? device, ScalarType dtype) : base(nameof(DecoderStack))
    {
        embed_tokens = new TokenEmbedding(traits.VocabSize, traits.HiddenSize, device, dtype);
        layers = new ModuleList<DecoderLayer>(
            Enumerable.Range(0, traits.NumLayers).Select(i => new DecoderLayer(traits, i, device, dtype)).ToArray());
        norm = new RmsNorm(traits.HiddenSize, traits.RmsNormEps, traits.NormStyle, device, dtype);
        rotary_emb = new RotaryEmbedding(traits.Rope);
        RegisterComponents();
    }
}
