using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;
using Ullme.MLNet.Training.Losses;

namespace Ullme.MLNet.Transforms;

/// <summary>Which relevance the <c>UllmeScore</c> transform outputs.</summary>
public enum UllmeScoreMode
{
    /// <summary>One Single column: mean (or sum) token log-probability of the passage after the generation prompt
    /// built from the query, computed causally. Decoders only.</summary>
    Generation,

    /// <summary>One Single column: cos(e_query, e_passage) of the embeddings (the model's embedding settings). Every model.</summary>
    Representation,

    /// <summary>Two Single columns: generation in <see cref="UllmeScoreOptions.OutputColumnName"/>, representation in
    /// <see cref="UllmeScoreOptions.RepresentationColumnName"/>. Decoders only.</summary>
    Both,
}

/// <summary>
/// Settings of the <c>UllmeScore</c> transform: which model, which relevance (mode), the generation prompt and score
/// (the same options, with the same meaning and defaults, as fine-tuning: <see cref="Training.FineTuneOptions"/>),
/// how texts are embedded for the representation score, batching, dtype/device and columns. Validated before any
/// model is loaded, with errors naming the offending option.
/// </summary>
public sealed class UllmeScoreOptions : IModelOptions<UllmeScoreOptions>
{
    /// <summary>A Hugging Face model folder or <c>"default"</c> (all-MiniLM-L6-v2: representation mode only).</summary>
    public string Model { get; set; } = UllmeModel.DefaultModelName;

    /// <summary>Query text column. Default <c>"Query"</c>.</summary>
    public string QueryColumnName { get; set; } = "Query";

    /// <summary>Passage text column. Default <c>"Passage"</c>.</summary>
    public string PassageColumnName { get; set; } = "Passage";

    /// <summary>Single column to write: the generation score, or in <see cref="UllmeScoreMode.Representation"/> mode
    /// the representation score. Default <c>"Relevance"</c>.</summary>
    public string OutputColumnName { get; set; } = "Relevance";

    /// <summary>In <see cref="UllmeScoreMode.Both"/> mode, the column of the representation score; null =
    /// <see cref="OutputColumnName"/> + "Representation".</summary>
    public string? RepresentationColumnName { get; set; }

    public UllmeScoreMode Mode { get; set; } = UllmeScoreMode.Generation;

    /// <summary>Prompt the passage is generated after; placeholders {instruction} and {query}. Default ULLME's
    /// <c>"{instruction}\nQuery: {query}\nPassage: "</c> (as in training).</summary>
    public string GenerationPrompt { get; set; } = Inference.GenerationPrompt.DefaultTemplate;

    /// <summary>Instruction: fills {instruction} in the prompt and is placed before the query when it is embedded. Null = none.</summary>
    public string? Instruction { get; set; }

    /// <summary>Mean (default) or sum of the passage's token log-probs.</summary>
    public GenerationScore GenerationScore { get; set; } = GenerationScore.Mean;

    /// <summary>Max tokens of prompt + passage; null = the model's position limit. Longer passages lose their end.</summary>
    public int? MaxGenerationLength { get; set; }

    /// <summary>Pooling of the representation score; null = the model's default.</summary>
    public PoolingMode? Pooling { get; set; }

    /// <summary>Attention of the representation score; null = the model's default (bidirectional). Generation is always causal.</summary>
    public AttentionMode? Attention { get; set; }

    /// <summary>Max tokens per embedded text; null = the model's default.</summary>
    public int? MaxLength { get; set; }

    /// <summary>Sequences per forward pass (embedding and causal scoring). Default 8.</summary>
    public int BatchSize { get; set; } = 8;

    /// <summary>Rows a cursor reads ahead before scoring them in one call; null = 4 × <see cref="BatchSize"/>.</summary>
    public int? ReadAheadRows { get; set; }

    public ModelDType DType { get; set; } = ModelDType.Float32;

    /// <summary>"cpu", "cuda" or "cuda:N"; null = from the MLContext (as for UllmeEmbed).</summary>
    public string? Device { get; set; }

    public UllmeScoreOptions Clone() => (UllmeScoreOptions)MemberwiseClone();

    internal int EffectiveReadAhead => ReadAheadRows ?? 4 * BatchSize;

    internal string EffectiveRepresentationColumn => RepresentationColumnName ?? OutputColumnName + "Representation";

    internal bool NeedsGeneration => Mode != UllmeScoreMode.Representation;

    /// <summary>The engine's view of these options.</summary>
    internal RelevanceOptions ToRelevanceOptions() => new()
    {
        GenerationPrompt = GenerationPrompt,
        Instruction = Instruction,
        GenerationScore = GenerationScore,
        MaxGenerationLength = MaxGenerationLength,
        GenerationBatchSize = BatchSize,
        Embedding = new EmbeddingOptions { Pooling = Pooling, Attention = Attention, MaxLength = MaxLength, BatchSize = BatchSize },
    };

    private static readonly Dictionary<string, string> EngineNames = new() { ["RelevanceOptions.GenerationBatchSize"] = nameof(BatchSize) };

    /// <summary>Checks every option without loading anything heavy.</summary>
    /// <exception cref="UllmeException">An option is invalid; the message names it and its value.</exception>
    public void Validate(bool modelIsLoaded = false)
    {
        if (!modelIsLoaded) ModelLoading.ValidatePath(Model, "UllmeScoreOptions.Model");
        foreach (var (name, value) in new[] { (nameof(QueryColumnName), QueryColumnName), (nameof(PassageColumnName), PassageColumnName), (nameof(OutputColumnName), OutputColumnName) })
            if (string.IsNullOrWhiteSpace(value)) throw new UllmeException($"UllmeScoreOptions.{name} is empty.");
        if (!Enum.IsDefined(Mode)) throw new UllmeException($"UllmeScoreOptions.Mode has no such value: {(int)Mode}.");
        if (Mode == UllmeScoreMode.Both && EffectiveRepresentationColumn == OutputColumnName)
            throw new UllmeException($"UllmeScoreOptions.RepresentationColumnName must differ from OutputColumnName ('{OutputColumnName}') in mode Both.");
        Inference.GenerationPrompt.Validate(GenerationPrompt, "UllmeScoreOptions.GenerationPrompt");
        if (ReadAheadRows is < 1) throw new UllmeException($"UllmeScoreOptions.ReadAheadRows must be at least 1, got {ReadAheadRows}.");
        // The engine's records own the rules; the name shown is ours (BatchSize feeds both batch sizes of the engine).
        try
        {
            ToRelevanceOptions().Validate();
            if (Device is not null) new ModelLoadOptions { DType = DType, Device = Device }.Validate();
            else OptionCheck.Defined(DType, "ModelLoadOptions.DType");
        }
        catch (UllmeException e) when (e.Option is not null)
        {
            throw e.Under(nameof(UllmeScoreOptions), EngineNames);
        }
    }
}
