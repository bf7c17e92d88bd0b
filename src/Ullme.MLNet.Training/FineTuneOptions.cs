using Ullme.MLNet.Inference;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Training.Lora;
using Ullme.MLNet.Training.Losses;
using Ullme.MLNet.Training.Optimization;

namespace Ullme.MLNet.Training;

/// <summary>The objective presets of grl-spec.md.</summary>
public enum TrainingStrategy
{
    /// <summary>InfoNCE only: λ = {1, 0, 0, 0}.</summary>
    Contrastive,

    /// <summary>InfoNCE + LM loss on the positive: λ = {1, 1, 0, 0} (GritLM-style).</summary>
    ContrastiveLm,

    /// <summary>InfoNCE + preference loss: λ = {1, 0, 1, 0}.</summary>
    Dpo,

    /// <summary>ULLME's GRL: InfoNCE + preference + KL consistency: λ = {1, 0, 1, 1}.</summary>
    Grl,

    /// <summary>LLM2Vec's masked next-token prediction on plain text (decoders with a language-model head): a share
    /// <see cref="FineTuneOptions.MaskRatio"/> of the tokens is masked and token i is predicted from the state at i − 1,
    /// with <see cref="FineTuneOptions.EmbeddingAttention"/> (bidirectional by default). Its own objective: the λ weights
    /// do not apply. Train on <see cref="TrainingData.FromTexts"/>.</summary>
    Mntp,

    /// <summary>Unsupervised SimCSE on plain text: each text embedded twice with dropout as the only augmentation
    /// (decoders: attention dropout <see cref="FineTuneOptions.AttentionDropout"/>, 0.3 by default; BERT: its config's
    /// dropouts), in-batch negatives, InfoNCE: λ = {1, 0, 0, 0}. Train on <see cref="TrainingData.FromTexts"/>.</summary>
    SimCse,
}

/// <summary>The λ weights of L = λ_cl·L_cl + λ_lm·L_lm + λ_pref·L_pref + λ_kl·L_kl. A zero weight skips the term's
/// computation entirely.</summary>
public sealed record LossWeights(double Contrastive, double LanguageModel, double Preference, double Consistency)
{
    public static LossWeights For(TrainingStrategy strategy) => strategy switch
    {
        TrainingStrategy.Contrastive => new(1, 0, 0, 0),
        TrainingStrategy.ContrastiveLm => new(1, 1, 0, 0),
        TrainingStrategy.Dpo => new(1, 0, 1, 0),
        TrainingStrategy.Grl => new(1, 0, 1, 1),
        TrainingStrategy.SimCse => new(1, 0, 0, 0),
        TrainingStrategy.Mntp => new(0, 0, 0, 0),
        _ => throw new UllmeException($"Unknown training strategy {strategy}."),
    };

    /// <summary>Whether any term needs causal generation scores.</summary>
    public bool NeedsGeneration => LanguageModel != 0 || Preference != 0 || Consistency != 0;

    /// <summary>Whether any term needs embeddings.</summary>
    public bool NeedsEmbeddings => Contrastive != 0 || Consistency != 0;
}

/// <summary>
/// Settings of a fine-tuning run (<see cref="UllmeFineTuner"/>). Defaults follow ULLME (grl-spec.md): GRL, τ 0.05,
/// β 0.1, τ_gen 1, LoRA r 16 / α 32 / dropout 0.1 on all linear layers but lm_head, AdamW lr 1e-4 without weight
/// decay, warm-up min(10% of steps, 500) then cosine, batch 32.
/// <para>
/// The learning rate matters a lot and depends on model size and LoRA vs full tuning: 1e-4 suits LoRA on 0.5–7B
/// decoders; small models fully fine-tuned gain far more at 1e-3 (stories260K: +0.03 Spearman at 1e-4, +0.18 at
/// 1e-3, see grl-spec.md).
/// </para>
/// </summary>
public sealed record FineTuneOptions
{
    public TrainingStrategy Strategy { get; init; } = TrainingStrategy.Grl;

    /// <summary>Free λ weights; null = the <see cref="Strategy"/> preset.</summary>
    public LossWeights? Weights { get; init; }

    [JsonIgnore] public LossWeights EffectiveWeights => Weights ?? LossWeights.For(Strategy);

    // --- contrastive ---
    /// <summary>InfoNCE temperature τ. Default 0.05.</summary>
    public double Temperature { get; init; } = 0.05;
    public ContrastiveSimilarity Similarity { get; init; } = ContrastiveSimilarity.Cosine;

    /// <summary>Symmetric InfoNCE (query → document and document → query, averaged); see
    /// <see cref="ContrastiveLoss.Symmetric"/>. Default false.</summary>
    public bool SymmetricContrastive { get; init; }

    /// <summary>False-negative masking: a candidate whose text equals a query's positive (a duplicate positive of
    /// another row, or a hard negative that is the positive) is left out of that query's negatives instead of being
    /// pushed away. See <see cref="ContrastiveLoss.FalseNegatives"/>. Default false.</summary>
    public bool MaskFalseNegatives { get; init; }

    /// <summary>A guide model in the spirit of GISTEmbed (Solatorio 2024): before each step it embeds the batch's
    /// texts, and a candidate it scores above a query's own positive (cosine, guide embeddings) is left out of that
    /// query's negatives, as a likely false negative. The guide is only read (no gradient), e.g.
    /// <c>UllmeModel.Load("default")</c>; the caller owns and disposes it. Null (default): no guide.</summary>
    /// <remarks>Not written to training.json or checkpoints (a model is not a setting); a resumed run takes the guide it
    /// is given again.</remarks>
    [System.Text.Json.Serialization.JsonIgnore]
    public Inference.UllmeModel? GuideModel { get; init; }

    /// <summary>Matryoshka: also train the contrastive loss on these prefix widths of the embedding (e.g. 768, 256, 64;
    /// include the full width to keep training it), summed with <see cref="MatryoshkaWeights"/>. Null (default) = the
    /// full embedding only. See <see cref="MatryoshkaLoss"/>.</summary>
    public IReadOnlyList<int>? MatryoshkaDimensions { get; init; }

    /// <summary>One weight per <see cref="MatryoshkaDimensions"/> entry; null = 1 each.</summary>
    public IReadOnlyList<double>? MatryoshkaWeights { get; init; }

    // --- unsupervised (LLM2Vec) ---
    /// <summary><see cref="TrainingStrategy.Mntp"/>: the share of each text's tokens (special tokens aside) chosen for
    /// prediction; of those, 80% become <see cref="MaskToken"/>, 10% a random token and 10% stay (the
    /// DataCollatorForLanguageModeling rule LLM2Vec trains with). Default 0.2 (LLM2Vec's Llama and Mistral recipes).</summary>
    public double MaskRatio { get; init; } = 0.2;

    /// <summary><see cref="TrainingStrategy.Mntp"/>: the token masked positions show: "unk" (the tokenizer's unknown
    /// token), "eos", "pad", a token id, or a text that encodes to exactly one token. Null (default): "unk" when the
    /// tokenizer has one, else "eos" — decoder tokenizers have no mask token, and LLM2Vec likewise reuses an existing
    /// token rather than adding one.</summary>
    public string? MaskToken { get; init; }

    /// <summary>Decoders: dropout on the attention probabilities while training (HF <c>attention_dropout</c>). Null
    /// (default): 0.3 for <see cref="TrainingStrategy.SimCse"/> (LLM2Vec's <c>simcse_dropout</c>), else the model
    /// config's <c>attention_dropout</c> (0 when absent). Not settable for BERT encoders, which train with their
    /// config's dropouts.</summary>
    public double? AttentionDropout { get; init; }

    /// <summary>The attention dropout a decoder trains with (see <see cref="AttentionDropout"/>); null = the model's own.</summary>
    [JsonIgnore] internal double? EffectiveAttentionDropout => AttentionDropout ?? (Strategy == TrainingStrategy.SimCse ? 0.3 : null);

    // --- language model ---
    public LanguageModelReduction LanguageModelReduction { get; init; } = LanguageModelReduction.TokenMean;

    // --- preference ---
    public PreferenceLossKind PreferenceLoss { get; init; } = PreferenceLossKind.Sigmoid;
    /// <summary>β. Default 0.1.</summary>
    public double Beta { get; init; } = 0.1;
    /// <summary>Use log π_ref ≡ 0 instead of the base model.</summary>
    public bool ReferenceFree { get; init; }

    // --- GRL consistency ---
    /// <summary>τ_rep; null = <see cref="Temperature"/>.</summary>
    public double? RepresentationTemperature { get; init; }
    /// <summary>τ_gen. Default 1.</summary>
    public double GenerationTemperature { get; init; } = 1.0;
    public KlDirection KlDirection { get; init; } = KlDirection.GenerationToRepresentation;
    public bool DetachGeneration { get; init; } = true;
    public GenerationScore GenerationScore { get; init; } = GenerationScore.Mean;

    // --- inputs ---
    /// <summary>Prompt the candidate is generated after. Placeholders {instruction} and {query}; when there is no
    /// instruction, "{instruction}\n" is dropped. The candidate's tokens follow the prompt's (each tokenized on its
    /// own, BOS only at the start).</summary>
    public string GenerationPrompt { get; init; } = Inference.GenerationPrompt.DefaultTemplate;
    public PoolingMode Pooling { get; init; } = PoolingMode.Mean;
    /// <summary>Attention for embeddings (generation is always causal). Default bidirectional.</summary>
    public AttentionMode EmbeddingAttention { get; init; } = AttentionMode.Bidirectional;
    /// <summary>Max tokens per embedded text (special tokens included). Default 512.</summary>
    public int MaxLength { get; init; } = 512;
    /// <summary>Max tokens of a prompt + candidate sequence; null = no cap. Longer ones lose the candidate's end.</summary>
    public int? MaxGenerationLength { get; init; }

    // --- schedule ---
    public int BatchSize { get; init; } = 32;
    public int Epochs { get; init; } = 1;
    /// <summary>Stop after this many optimizer steps (overrides <see cref="Epochs"/> for the schedule length).</summary>
    public int? MaxSteps { get; init; }
    /// <summary>Keep a last batch smaller than <see cref="BatchSize"/>. Default true.</summary>
    public bool KeepPartialBatch { get; init; } = true;
    public bool Shuffle { get; init; } = true;
    public AdamWSettings Optimizer { get; init; } = new();
    /// <summary>Warm-up steps; null = min(10% of steps, 500).</summary>
    public int? WarmupSteps { get; init; }
    public DecayKind Decay { get; init; } = DecayKind.Cosine;
    public double? MaxGradientNorm { get; init; }
    public int AccumulationSteps { get; init; } = 1;

    /// <summary>With <see cref="AccumulationSteps"/> K &gt; 1: the K micro-batches of a step form one contrastive batch,
    /// so every query sees the candidates of all K·<see cref="BatchSize"/> examples, as if the batch were K times
    /// larger. The memory stays that of one micro-batch: embeddings are computed with GradCache a micro-batch (or
    /// <see cref="GradCacheChunkSize"/> texts) at a time, and the generation terms are chunked alike. Without it (default)
    /// each micro-batch is its own InfoNCE and only the gradients add up.</summary>
    public bool ShareNegativesAcrossAccumulation { get; init; }

    // --- parameters and memory ---
    /// <summary>LoRA settings; null = full fine-tuning.</summary>
    public LoraOptions? Lora { get; init; } = new();
    /// <summary>Texts per GradCache chunk; null = no GradCache.</summary>
    public int? GradCacheChunkSize { get; init; }
    /// <summary>Causal sequences per forward pass of the generation terms (rounded to whole queries with all their
    /// candidates); null = the whole batch at once. Each chunk is back-propagated on its own.</summary>
    public int? GenerationChunkSize { get; init; }
    /// <summary>Recompute each decoder layer in the backward instead of storing its activations.</summary>
    public bool GradientCheckpointing { get; init; }

    // --- evaluation during training ---
    /// <summary>Score <see cref="Evaluator"/> every N optimizer steps and after the last one (eval mode, no
    /// gradients; the random stream is not touched, so the run trains exactly as without it). 0 (default) = never.
    /// Each score is reported in <see cref="TrainingProgress.Evaluation"/>.</summary>
    public int EvaluateEvery { get; init; }

    /// <summary>The dev metric of <see cref="EvaluateEvery"/>: <see cref="Sweeps.StsSpearmanMetric"/> for an STS file,
    /// <see cref="Sweeps.TaskMetric"/> for any MTEB-style task, or your own. It embeds with the run's pooling,
    /// attention and max length. Not written to training.json or checkpoints.</summary>
    [JsonIgnore] public Sweeps.ISweepMetric? Evaluator { get; init; }

    /// <summary>With <see cref="EvaluateEvery"/>: when training ends, put back the trained weights (or adapters) of
    /// the evaluation that scored best, as sentence-transformers' <c>load_best_model_at_end</c>. The best is held in
    /// memory (one copy of the trained parameters); after a resume it is the best since the resume.</summary>
    public bool KeepBest { get; init; }

    // --- reproducibility and recovery ---
    public int Seed { get; init; } = 42;
    /// <summary>Where checkpoints go; null = none.</summary>
    public string? CheckpointDirectory { get; init; }
    /// <summary>Write a checkpoint every N optimizer steps (0 = only at the end).</summary>
    public int CheckpointEvery { get; init; }
    public int KeepCheckpoints { get; init; } = 2;
    /// <summary>Continue from the newest checkpoint in <see cref="CheckpointDirectory"/> if there is one.</summary>
    public bool Resume { get; init; }
    /// <summary>Merge the adapters into the weights when training ends (so the model embeds with tuned weights
    /// without LoRA overhead). Default true.</summary>
    public bool MergeLoraAtEnd { get; init; } = true;

    /// <summary>How a model trained with these options embeds for a dev metric: the run's pooling, attention and
    /// max length, normalised; the length capped at the model's positions (training truncates at
    /// <see cref="MaxLength"/>, while the engine refuses a length beyond max_position_embeddings).</summary>
    internal EmbeddingOptions EvaluationEmbedding(UllmeModel model)
    {
        int limit = model.Config.MaxPositionEmbeddings;
        return new EmbeddingOptions { Pooling = Pooling, Attention = EmbeddingAttention, MaxLength = limit > 0 ? Math.Min(MaxLength, limit) : MaxLength, Normalize = true };
    }

    /// <summary>The prompt for a query (see <see cref="GenerationPrompt"/>).</summary>
    public string BuildGenerationPrompt(string query, string? instruction) =>
        Inference.GenerationPrompt.Build(GenerationPrompt, query, instruction);

    internal GrlConsistencyLoss ConsistencyLoss => new()
    {
        RepresentationTemperature = RepresentationTemperature ?? Temperature,
        GenerationTemperature = GenerationTemperature,
        Direction = KlDirection,
        DetachGeneration = DetachGeneration,
        Score = GenerationScore,
    };

    internal ContrastiveLoss ContrastiveLoss => new() { Temperature = Temperature, Similarity = Similarity, Symmetric = SymmetricContrastive };

    /// <summary>The Matryoshka wrapper of <see cref="ContrastiveLoss"/>, or null without <see cref="MatryoshkaDimensions"/>.</summary>
    internal MatryoshkaLoss? Matryoshka => MatryoshkaDimensions is { } dims
        ? new MatryoshkaLoss { Inner = ContrastiveLoss, Dimensions = dims, Weights = MatryoshkaWeights }
        : null;
    internal PreferenceLoss PreferenceObjective => new() { Kind = PreferenceLoss, Beta = Beta };
    internal LanguageModelLoss LanguageModelObjective => new() { Reduction = LanguageModelReduction };

    /// <summary>Checks every setting; throws <see cref="UllmeException"/> naming the first bad one.</summary>
    public void Validate()
    {
        var w = EffectiveWeights;
        if (Strategy == TrainingStrategy.Mntp)
        {
            if (Weights is not null) throw OptionCheck.Error("FineTuneOptions.Weights", "must be null with Strategy = Mntp (masked next-token prediction is its own objective)");
            if (!(MaskRatio > 0 && MaskRatio < 1)) throw OptionCheck.Error("FineTuneOptions.MaskRatio", $"must lie in (0, 1) (got {OptionCheck.Shown(MaskRatio)})");
            if (MatryoshkaDimensions is not null || MaskFalseNegatives || GuideModel is not null || SymmetricContrastive)
                throw new UllmeException("Strategy = Mntp trains no embeddings: MatryoshkaDimensions, MaskFalseNegatives, GuideModel and SymmetricContrastive do not apply.");
        }
        if (MaskToken is not null && Strategy != TrainingStrategy.Mntp) throw OptionCheck.Error("FineTuneOptions.MaskToken", "applies to Strategy = Mntp only");
        if (AttentionDropout is { } ad && !(ad >= 0 && ad < 1)) throw OptionCheck.Error("FineTuneOptions.AttentionDropout", $"must lie in [0, 1) (got {OptionCheck.Shown(ad)})");
        foreach (var (name, value) in new[] { ("Contrastive", w.Contrastive), ("LanguageModel", w.LanguageModel), ("Preference", w.Preference), ("Consistency", w.Consistency) })
            if (!(value >= 0) || !double.IsFinite(value))
                throw OptionCheck.Error("FineTuneOptions.Weights." + name, $"must be a non-negative number (got {OptionCheck.Shown(value)})");
        if (Strategy != TrainingStrategy.Mntp && w.Contrastive == 0 && !w.NeedsGeneration && w.Consistency == 0) throw new UllmeException("All loss weights are zero: nothing to train.");
        OptionCheck.Positive(Temperature, "FineTuneOptions.Temperature");
        if (MatryoshkaDimensions is not null || MatryoshkaWeights is not null)
            MatryoshkaLoss.Check(MatryoshkaDimensions, MatryoshkaWeights, 0);
        OptionCheck.Positive(Beta, "FineTuneOptions.Beta");
        OptionCheck.Positive(GenerationTemperature, "FineTuneOptions.GenerationTemperature");
        if (RepresentationTemperature is { } tr) OptionCheck.Positive(tr, "FineTuneOptions.RepresentationTemperature");
        Inference.GenerationPrompt.Validate(GenerationPrompt, nameof(GenerationPrompt));
        OptionCheck.AtLeast(MaxLength, EmbeddingOptions.MinMaxLength, "FineTuneOptions.MaxLength", " tokens");
        OptionCheck.AtLeast(MaxGenerationLength, 2, "FineTuneOptions.MaxGenerationLength", " tokens");
        OptionCheck.Range(BatchSize, 1, EmbeddingOptions.MaxBatchSize, "FineTuneOptions.BatchSize");
        OptionCheck.AtLeast(Epochs, 1, "FineTuneOptions.Epochs");
        OptionCheck.AtLeast(MaxSteps, 1, "FineTuneOptions.MaxSteps");
        OptionCheck.AtLeast(AccumulationSteps, 1, "FineTuneOptions.AccumulationSteps");
        if (ShareNegativesAcrossAccumulation && AccumulationSteps < 2)
            throw OptionCheck.Error("FineTuneOptions.ShareNegativesAcrossAccumulation", $"needs 2 or more accumulated micro-batches a step (FineTuneOptions.AccumulationSteps, --grad-accum; got {AccumulationSteps})");
        if (ShareNegativesAcrossAccumulation && Strategy == TrainingStrategy.Mntp)
            throw OptionCheck.Error("FineTuneOptions.ShareNegativesAcrossAccumulation", "applies to the contrastive term; Strategy = Mntp has none");
        if (ShareNegativesAcrossAccumulation && (long)BatchSize * AccumulationSteps > EmbeddingOptions.MaxBatchSize)
            throw OptionCheck.Error("FineTuneOptions.ShareNegativesAcrossAccumulation", $"makes a batch of {(long)BatchSize * AccumulationSteps}, above the limit of {EmbeddingOptions.MaxBatchSize}");
        OptionCheck.AtLeast(GenerationChunkSize, 1, "FineTuneOptions.GenerationChunkSize");
        OptionCheck.AtLeast(GradCacheChunkSize, 1, "FineTuneOptions.GradCacheChunkSize");
        OptionCheck.AtLeast(CheckpointEvery, 0, "FineTuneOptions.CheckpointEvery");
        OptionCheck.AtLeast(KeepCheckpoints, 1, "FineTuneOptions.KeepCheckpoints");
        if (Resume && CheckpointDirectory is null) throw new UllmeException("Resume needs a CheckpointDirectory.");
        if (MaxGradientNorm is { } g) OptionCheck.Positive(g, "FineTuneOptions.MaxGradientNorm");
        OptionCheck.AtLeast(EvaluateEvery, 0, "FineTuneOptions.EvaluateEvery");
        if (EvaluateEvery > 0 && Evaluator is null) throw OptionCheck.Error("FineTuneOptions.Evaluator", "is needed with EvaluateEvery (the metric to score)");
        if (EvaluateEvery == 0 && Evaluator is not null) throw OptionCheck.Error("FineTuneOptions.Evaluator", "is set but EvaluateEvery is 0, so it would never be scored; give EvaluateEvery N");
        if (KeepBest && EvaluateEvery == 0) throw OptionCheck.Error("FineTuneOptions.KeepBest", "needs EvaluateEvery > 0 (evaluations to choose the best from)");
        Optimizer.Validate();
        Lora?.Validate();
    }

    private static readonly JsonSerializerOptions FingerprintJson = new() { Converters = { new JsonStringEnumConverter() } };

    /// <summary>A digest of everything that shapes the optimisation (not checkpoint bookkeeping): a checkpoint is
    /// only resumed by a run with the same fingerprint.</summary>
    public string Fingerprint()
    {
        var relevant = this with { CheckpointDirectory = null, CheckpointEvery = 0, KeepCheckpoints = 1, Resume = false, MergeLoraAtEnd = true, EvaluateEvery = 0, KeepBest = false };
        var bytes = JsonSerializer.SerializeToUtf8Bytes(relevant, FingerprintJson);
        return Convert.ToHexString(SHA256.HashData(bytes))[..16].ToLowerInvariant();
    }
}
