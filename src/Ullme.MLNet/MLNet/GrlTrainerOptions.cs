using System.Text.Json.Serialization;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Training;

namespace Ullme.MLNet.Transforms;

/// <summary>
/// Settings of <see cref="GrlTrainer"/>: which model to start from, which columns hold the training triples, how to
/// train (<see cref="FineTune"/>, the settings of the one training engine <see cref="UllmeFineTuner"/>), and how the
/// returned transformer embeds (its input/output columns and batch size; pooling, attention and max length are the
/// ones the model was trained with).
/// </summary>
public sealed class GrlTrainerOptions : IModelOptions<GrlTrainerOptions>
{
    // --- model ---
    /// <summary>The base model: a Hugging Face folder or <c>"default"</c> (all-MiniLM-L6-v2). Ignored when the
    /// trainer is built with an in-memory model.</summary>
    public string Model { get; set; } = UllmeModel.DefaultModelName;

    /// <summary>Precision the base model is loaded in. BFloat16 needs LoRA (adapters train in float32).</summary>
    public ModelDType DType { get; set; } = ModelDType.Float32;

    /// <summary>"cpu", "cuda" or "cuda:N"; null = from the MLContext (as for <c>UllmeEmbed</c>).</summary>
    public string? Device { get; set; }

    // --- training data columns ---
    /// <summary>Text column with the queries (anchors). Default <c>"Query"</c>.</summary>
    public string QueryColumnName { get; set; } = "Query";

    /// <summary>Text column with each query's relevant passage. Default <c>"Positive"</c>.</summary>
    public string PositiveColumnName { get; set; } = "Positive";

    /// <summary>Hard negatives: a vector of text (may be empty per row) or a single text column (an empty value
    /// means none). Default <c>"Negatives"</c>; null = the data has no negatives (in-batch negatives only). A named
    /// column must exist.</summary>
    public string? NegativesColumnName { get; set; } = "Negatives";

    /// <summary>Optional text column with a per-row query instruction (attended to, not pooled; empty = none).</summary>
    public string? InstructionColumnName { get; set; }

    // --- training ---
    /// <summary>Objectives, LoRA/full fine-tuning, schedule, memory options, seed, checkpoints (see
    /// <see cref="FineTuneOptions"/>). LoRA adapters are always merged at the end (the transformer embeds and saves
    /// plain weights), whatever <see cref="FineTuneOptions.MergeLoraAtEnd"/> says.</summary>
    public FineTuneOptions FineTune { get; set; } = new();

    /// <summary>Receives every optimizer step (loss terms, learning rate, gradient norm), synchronously on the
    /// training thread. The same figures also go to the MLContext's log and progress channel.</summary>
    [JsonIgnore] public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Cancels training between steps (a checkpoint is written first when
    /// <see cref="FineTuneOptions.CheckpointDirectory"/> is set). <c>MLContext.CancelExecution()</c> works too.</summary>
    [JsonIgnore] public CancellationToken CancellationToken { get; set; }

    /// <summary>When set, every <see cref="GrlTrainer.Fit"/> also writes the tuned model there as a Hugging Face /
    /// sentence-transformers folder (see <see cref="UllmeEmbeddingTransformer.SaveModelFolder"/>).</summary>
    public string? ExportFolder { get; set; }

    // --- the returned transformer ---
    /// <summary>Text column the returned transformer embeds; null = <see cref="QueryColumnName"/> (so the trainer
    /// composes in a pipeline over its own training data). For other data, build a new transform on the tuned model:
    /// <c>mlContext.Transforms.UllmeEmbed(transformer.Model, "Features", "Text")</c>.</summary>
    public string? InputColumnName { get; set; }

    /// <summary>Vector column the returned transformer writes. Default <c>"Features"</c>.</summary>
    public string OutputColumnName { get; set; } = "Features";

    /// <summary>Texts per forward pass when the returned transformer embeds. Default 32.</summary>
    public int EmbeddingBatchSize { get; set; } = 32;

    /// <summary>Instruction the returned transformer prepends to every text; null = none.</summary>
    public string? EmbeddingInstruction { get; set; }

    /// <summary>A copy (the fine-tuning settings are an immutable record and are shared).</summary>
    public GrlTrainerOptions Clone() => (GrlTrainerOptions)MemberwiseClone();

    internal string EffectiveInputColumnName => InputColumnName ?? QueryColumnName;

    /// <summary>Checks every option without loading anything; errors name the option.</summary>
    /// <exception cref="UllmeException">An option is invalid.</exception>
    public void Validate(bool modelIsLoaded = false)
    {
        if (FineTune is null) throw new UllmeException("GrlTrainerOptions.FineTune is null.");
        try
        {
            FineTune.Validate();
        }
        catch (UllmeException error) when (error.Option is not null)
        {
            throw error.Under("GrlTrainerOptions.FineTune");
        }
        foreach (var (name, value) in new[] { (nameof(QueryColumnName), QueryColumnName), (nameof(PositiveColumnName), PositiveColumnName), (nameof(OutputColumnName), OutputColumnName) })
            if (string.IsNullOrWhiteSpace(value)) throw new UllmeException($"GrlTrainerOptions.{name} is empty.");
        if (NegativesColumnName is { } n && string.IsNullOrWhiteSpace(n)) throw new UllmeException("GrlTrainerOptions.NegativesColumnName is empty (use null for no negatives).");
        if (InstructionColumnName is { } i && string.IsNullOrWhiteSpace(i)) throw new UllmeException("GrlTrainerOptions.InstructionColumnName is empty (use null for no instructions).");
        // The plain-text strategies (MNTP, SimCSE) read one text column as both query and positive.
        bool plainText = FineTune.Strategy is TrainingStrategy.Mntp or TrainingStrategy.SimCse && string.Equals(QueryColumnName, PositiveColumnName, StringComparison.Ordinal);
        var columns = new[] { QueryColumnName, plainText ? null : PositiveColumnName, NegativesColumnName, InstructionColumnName }.Where(c => c is not null).ToList();
        if (columns.Distinct(StringComparer.Ordinal).Count() != columns.Count)
            throw new UllmeException($"GrlTrainerOptions: the query, positive, negatives and instruction columns must differ, got {string.Join(", ", columns.Select(c => "'" + c + "'"))}.");
        if (EmbeddingBatchSize < 1) throw new UllmeException($"GrlTrainerOptions.EmbeddingBatchSize must be at least 1, got {EmbeddingBatchSize}.");
        if (ExportFolder is { } e && string.IsNullOrWhiteSpace(e)) throw new UllmeException("GrlTrainerOptions.ExportFolder is empty (use null for no export).");
        // The model, dtype and device checks of the embedding transform.
        ToEmbeddingOptions().Validate(modelIsLoaded);
    }

    /// <summary>The settings of the transformer <see cref="GrlTrainer.Fit"/> returns.</summary>
    internal UllmeEmbeddingOptions ToEmbeddingOptions() => new()
    {
        Model = Model,
        DType = DType,
        Device = Device,
        InputColumnName = EffectiveInputColumnName,
        OutputColumnName = OutputColumnName,
        Pooling = FineTune.Pooling,
        Attention = FineTune.EmbeddingAttention,
        MaxLength = FineTune.MaxLength,
        Normalize = true,
        BatchSize = EmbeddingBatchSize,
        Instruction = EmbeddingInstruction,
    };
}
