namespace Ullme.MLNet.Modeling;

/// <summary>How an RMSNorm applies its learned weight.</summary>
internal enum RmsNormStyle
{
    /// <summary>Llama, Mistral, Qwen2, Phi-3: <c>w * normalize(x.float()).to(dtype)</c> (the weight multiplies in the
    /// model dtype).</summary>
    Weight,

    /// <summary>Gemma2: <c>(normalize(x.float()) * (1 + w.float())).to(dtype)</c> (weights are stored as offsets from 1
    /// and the multiply happens in float32).</summary>
    OnePlusWeight,
}

/// <summary>The gate activation of the gated MLP, by HF <c>ACT2FN</c> name.</summary>
internal enum MlpActivation
{
    /// <summary><c>silu</c> / <c>swish</c>: x * sigmoid(x) (SwiGLU).</summary>
    Silu,

    /// <summary><c>gelu_pytorch_tanh</c>, <c>gelu_new</c>, <c>gelu_fast</c>: the tanh approximation of GELU.</summary>
    GeluTanh,

    /// <summary><c>gelu</c>: the exact (erf) GELU.</summary>
    Gelu,

    /// <summary><c>relu</c>.</summary>
    Relu,
}

/// <summary>
/// Rotary position embedding settings: which frequencies each pair of head dimensions turns at, and how they are
/// rescaled for long contexts (HF <c>modeling_rope_utils</c>).
/// </summary>
/// <param name="Kind">default, linear, dynamic, llama3 or longrope (<c>su</c> is normalised to longrope).</param>
/// <param name="Theta">The base θ (<c>rope_theta</c>).</param>
/// <param name="RotaryDim">How many leading dimensions of each head are rotated (head_dim × partial_rotary_factor);
/// the rest pass through unchanged.</param>
/// <param name="MaxPositionEmbeddings">The config's <c>max_position_embeddings</c>.</param>
/// <param name="Factor">linear / dynamic / llama3 scaling factor.</param>
/// <param name="LowFreqFactor">llama3: wavelengths above original/low_freq_factor are fully scaled.</param>
/// <param name="HighFreqFactor">llama3: wavelengths below original/high_freq_factor are left alone.</param>
/// <param name="OriginalMaxPositionEmbeddings">llama3: the pre-training context; longrope: the context above which the
/// long factors are used.</param>
/// <param name="ShortFactor">longrope: per-frequency divisors for sequences within the original context.</param>
/// <param name="LongFactor">longrope: per-frequency divisors for longer sequences.</param>
/// <param name="AttentionScaling">Multiplier applied to cos and sin (longrope's attention factor; 1 otherwise).</param>
internal sealed record RopeSettings(
    string Kind,
    double Theta,
    int RotaryDim,
    int MaxPositionEmbeddings,
    double Factor,
    double LowFreqFactor,
    double HighFreqFactor,
    int OriginalMaxPositionEmbeddings,
    IReadOnlyList<double>? ShortFactor,
    IReadOnlyList<double>? LongFactor,
    double AttentionScaling);

/// <summary>
/// Everything that differs between the supported decoder architectures, derived once from a <see cref="ModelConfig"/>.
/// This is the only place that looks at <c>model_type</c>: the modules read these switches, so one implementation
/// serves Llama, Mistral, Qwen2, Phi-3 and Gemma2. Defaults for fields missing from <c>config.json</c> are the
/// defaults of the corresponding HF <c>*Config</c> class.
/// </summary>
internal sealed record ArchitectureTraits
{
    /// <summary>The decoder model types implemented by <see cref="DecoderModel"/>.</summary>
    public static readonly IReadOnlyList<string> DecoderModelTypes = ["llama", "mistral", "qwen2", "phi3", "gemma2"];

    public required string ModelType { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required double RmsNormEps { get; init; }
    public required RmsNormStyle NormStyle { get; init; }

    /// <summary>Bias on q/k/v projections (Qwen2 always; Llama/Gemma2 with <c>attention_bias</c>).</summary>
    public required bool QkvBias { get; init; }
    /// <summary>Bias on o_proj (Llama/Gemma2 with <c>attention_bias</c>; never Qwen2).</summary>
    public required bool OutputBias { get; init; }
    /// <summary>Bias on the MLP projections (Llama with <c>mlp_bias</c>).</summary>
    public required bool MlpBias { get; init; }
    /// <summary>Phi-3: one <c>qkv_proj</c> whose output rows are [q | k | v].</summary>
    public required bool FusedQkv { get; init; }
    /// <summary>Phi-3: one <c>gate_up_proj</c> whose output rows are [gate | up].</summary>
    public required bool FusedGateUp { get; init; }
    public required MlpActivation Activation { get; init; }

    /// <summary>Gemma2: embeddings are multiplied by this (sqrt(hidden_size), rounded to the model dtype).</summary>
    public double? EmbeddingScale { get; init; }
    /// <summary>Gemma2: <c>post_attention_layernorm</c> normalises the attention output before the residual add,
    /// and the MLP is wrapped in <c>pre_feedforward_layernorm</c> / <c>post_feedforward_layernorm</c>.</summary>
    public required bool SandwichNorms { get; init; }

    /// <summary>Multiplier of q·k: 1/sqrt(head_dim), or Gemma2's query_pre_attn_scalar^-0.5.</summary>
    public required double AttentionScale { get; init; }
    /// <summary>Gemma2: attention logits become cap * tanh(logits / cap) before masking.</summary>
    public double? AttentionLogitSoftcap { get; init; }
    /// <summary>Gemma2: LM logits become cap * tanh(logits / cap).</summary>
    public double? FinalLogitSoftcap { get; init; }

    /// <summary>Sliding-window width (query i sees key j only if i - j &lt; window) for the layers flagged in
    /// <see cref="SlidingLayers"/>; null when no layer slides.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Per layer: whether it uses the sliding window in causal mode.</summary>
    public required IReadOnlyList<bool> SlidingLayers { get; init; }

    public required bool TieWordEmbeddings { get; init; }
    /// <summary>The pad token's embedding row, zeroed at initialisation like HF's <c>_init_weights</c> (gradients to it are not masked).</summary>
    public int? PaddingIdx { get; init; }
    public required double InitializerRange { get; init; }
    public required RopeSettings Rope { get; init; }

    /// <summary>True when some layer slides in causal mode.</summary>
    public bool HasSlidingLayers => SlidingWindow is not null && SlidingLayers.Any(s => s);

    /// <summary>Derives the traits; throws <see cref="UllmeException"/> for a non-decoder model_type or a config the
    /// implementation cannot honour.</summary>
    public static ArchitectureTraits From(ModelConfig config)
    {
        string where = config.SourcePath ?? "config.json";
        string type = config.ModelType ?? "";
        if (!DecoderModelTypes.Contains(type))
            throw new UllmeException($"'{where}': model_type \"{type}\" is not a decoder. Decoders: {string.Join(", ", DecoderModelTypes)}.");

        bool isGemma2 = type == "gemma2";
        int headDim = isGemma2 ? config.HeadDim ?? 256 : config.EffectiveHeadDim;
        int kvHeads = config.EffectiveKeyValueHeads;
        if (headDim <= 0 || headDim % 2 != 0)
            throw new UllmeException($"'{where}': head_dim ({headDim}) must be a positive even number.");

        bool attentionBias = config.AttentionBias ?? false;
        (bool qkvBias, bool outBias, bool mlpBias) = type switch
        {
            "llama" => (attentionBias, attentionBias, config.MlpBias ?? false),
            "qwen2" => (true, false, false),
            "gemma2" => (attentionBias, attentionBias, false),
            _ => (false, false, false), // mistral, phi3: no biases
        };

        string actName = (isGemma2 ? config.HiddenActivation ?? config.HiddenAct ?? "gelu_pytorch_tanh" : config.HiddenAct ?? "silu");
        MlpActivation activation = actName switch
        {
            "silu" or "swish" => MlpActivation.Silu,
            "gelu_pytorch_tanh" or "gelu_new" or "gelu_fast" => MlpActivation.GeluTanh,
            "gelu" => MlpActivation.Gelu,
            "relu" => MlpActivation.Relu,
            _ => throw new UllmeException($"'{where}': hidden activation \"{actName}\" is not supported. Supported: silu, swish, gelu, gelu_pytorch_tanh, gelu_new, gelu_fast, relu."),
        };

        double scale = isGemma2
            ? Math.Pow(Defaulted(config.QueryPreAttnScalar, config, "query_pre_attn_scalar", 256) ?? 256, -0.5)
            : 1.0 / Math.Sqrt(headDim);

        var (window, sliding) = SlidingLayout(config, type, where);

        return new ArchitectureTraits
        {
            ModelType = type,
            VocabSize = config.VocabSize,
            HiddenSize = config.HiddenSize,
            IntermediateSize = config.IntermediateSize,
            NumLayers = config.NumHiddenLayers,
            NumHeads = config.NumAttentionHeads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            RmsNormEps = config.RmsNormEps ?? (type == "phi3" ? 1e-5 : 1e-6),
            NormStyle = isGemma2 ? RmsNormStyle.OnePlusWeight : RmsNormStyle.Weight,
            QkvBias = qkvBias,
            OutputBias = outBias,
            MlpBias = mlpBias,
            FusedQkv = type == "phi3",
            FusedGateUp = type == "phi3",
            Activation = activation,
            EmbeddingScale = isGemma2 ? Math.Sqrt(config.HiddenSize) : null,
            SandwichNorms = isGemma2,
            AttentionScale = scale,
            AttentionLogitSoftcap = isGemma2 ? Defaulted(config.AttnLogitSoftcapping, config, "attn_logit_softcapping", 50.0) : null,
            FinalLogitSoftcap = isGemma2 ? Defaulted(config.FinalLogitSoftcapping, config, "final_logit_softcapping", 30.0) : null,
            SlidingWindow = window,
            SlidingLayers = sliding,
            TieWordEmbeddings = config.TieWordEmbeddings ?? isGemma2,
            PaddingIdx = config.PadTokenId is int pad && pad >= 0 && pad < config.VocabSize ? pad : null,
            InitializerRange = config.InitializerRange ?? 0.02,
            Rope = RopeFor(config, type, headDim, where),
        };
    }

    /// <summary>Which layers slide, following each HF config class.</summary>
    private static (int? Window, bool[] Sliding) SlidingLayout(ModelConfig config, string type, string where)
    {
        int n = config.NumHiddenLayers;
        int? window;
        bool[] sliding;
        switch (type)
        {
            case "mistral":
                // MistralConfig defaults sliding_window to 4096; an explicit null disables it. Every layer slides.
                window = DefaultedWindow(config, 4096);
                sliding = Enumerable.Repeat(window is not null, n).ToArray();
                break;
            case "phi3":
                // Phi3Config defaults to no window; when set, the sliding causal mask is used for every layer.
                window = config.SlidingWindow;
                sliding = Enumerable.Repeat(window is not null, n).ToArray();
                break;
            case "qwen2":
                // Qwen2Config: sliding_window counts only with use_sliding_window; layers >= max_window_layers slide,
                // unless layer_types lists the kinds explicitly.
                window = (config.UseSlidingWindow ?? false) ? DefaultedWindow(config, 4096) : null;
                int maxWindowLayers = config.MaxWindowLayers ?? 28;
                sliding = config.LayerTypes is { } qTypes
                    ? LayerTypes(qTypes, n, where)
                    : Enumerable.Range(0, n).Select(i => window is not null && i >= maxWindowLayers).ToArray();
                if (window is null) sliding = new bool[n];
                break;
            case "gemma2":
                // Gemma2Config: sliding_window 4096 by default; even layers (0, 2, ...) slide unless layer_types says otherwise.
                window = DefaultedWindow(config, 4096);
                sliding = config.LayerTypes is { } gTypes
                    ? LayerTypes(gTypes, n, where)
                    : Enumerable.Range(0, n).Select(i => i % 2 == 0).ToArray();
                if (window is null) sliding = new bool[n];
                break;
            default: // llama: full attention everywhere
                window = null;
                sliding = new bool[n];
                break;
        }
        if (window is <= 0)
            throw new UllmeException($"'{where}': sliding_window ({window}) must be positive.");
        return (sliding.Any(s => s) ? window : null, sliding);
    }

    private static bool[] LayerTypes(List<string> types, int n, string where)
    {
        if (types.Count != n)
            throw new UllmeException($"'{where}': layer_types has {types.Count} entries but num_hidden_layers is {n}.");
        return types.Select(t => t switch
        {
            "sliding_attention" => true,
            "full_attention" => false,
            _ => throw new UllmeException($"'{where}': layer_types entry \"{t}\" is not supported (sliding_attention or full_attention)."),
        }).ToArray();
    }

    private static RopeSettings RopeFor(ModelConfig config, string type, int headDim, string where)
    {
        double partial = config.PartialRotaryFactor ?? 1.0;
        int rotaryDim = (int)(headDim * partial);
        if (rotaryDim <= 0 || rotaryDim % 2 != 0 || rotaryDim > headDim)
            throw new UllmeException($"'{where}': partial_rotary_factor ({partial}) gives {rotaryDim} rotary dimensions of head_dim {headDim}; it must be a positive even number not above head_dim.");

        var rs = config.RopeScaling;
        string kind = rs?.Kind ?? "default";
        if (kind == "su") kind = "longrope";
        double theta = config.RopeTheta ?? 10000.0;
        int maxPos = config.MaxPositionEmbeddings;
        double factor = rs?.Factor ?? 1.0;
        int originalMax = rs?.OriginalMaxPositionEmbeddings ?? maxPos;
        double attentionScaling = 1.0;

        if (kind == "longrope")
        {
            int half = rotaryDim / 2;
            int shortCount = rs?.ShortFactor?.Count ?? 0, longCount = rs?.LongFactor?.Count ?? 0;
            if (shortCount != half || longCount != half)
                throw new UllmeException($"'{where}': rope_scaling short_factor and long_factor need {half} values (rotary dim {rotaryDim} / 2), got {shortCount} and {longCount}.");
            // HF: Phi-3 configs carry original_max_position_embeddings at the top level (Phi3Config default 4096);
            // then the extension factor is max_position_embeddings / original, not rope_scaling.factor.
            int? topOriginal = config.OriginalMaxPositionEmbeddings ?? (type == "phi3" ? 4096 : null);
            if (topOriginal is int orig)
            {
                originalMax = orig;
                factor = (double)maxPos / orig;
            }
            else
            {
                originalMax = maxPos;
            }
            attentionScaling = rs!.AttentionFactor
                ?? (factor <= 1.0 ? 1.0 : Math.Sqrt(1 + Math.Log(factor) / Math.Log(originalMax)));
        }
        else if (kind == "dynamic")
        {
            // HF's dynamic NTK compares against max_position_embeddings (the config's, not rope_scaling's).
            originalMax = maxPos;
        }

        return new RopeSettings(kind, theta, rotaryDim, maxPos, factor,
            rs?.LowFreqFactor ?? 1.0, rs?.HighFreqFactor ?? 4.0, originalMax,
            rs?.ShortFactor, rs?.LongFactor, attentionScaling);
    }

    /// <summary>A field with HF's class default when the key is absent from the file; null when the file says null.</summary>
    private static double? Defaulted(double? typed, ModelConfig config, string key, double defaultValue) =>
        typed ?? (config.Raw.ContainsKey(key) ? null : defaultValue);

    private static int? DefaultedWindow(ModelConfig config, int defaultValue) =>
        config.SlidingWindow ?? (config.Raw.ContainsKey("sliding_window") ? null : defaultValue);
}
