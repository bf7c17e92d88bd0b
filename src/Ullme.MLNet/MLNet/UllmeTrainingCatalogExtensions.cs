using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Training;
using Ullme.MLNet.Training.Sweeps;
using Ullme.MLNet.Transforms;

// In ML.NET's namespace, like UllmeCatalogExtensions: `using Microsoft.ML;` is all a pipeline needs.
namespace Microsoft.ML;

/// <summary>
/// <c>mlContext.Transforms.UllmeGrlTrainer(...)</c>: an estimator whose <c>Fit</c> fine-tunes an embedding model on
/// (query, positive, hard negatives) rows with the ULLME objectives and returns an embedding transformer with the
/// tuned weights.
/// <code>
/// var trainer = mlContext.Transforms.UllmeGrlTrainer(model: "/models/stories260K", strategy: TrainingStrategy.Grl);
/// UllmeEmbeddingTransformer tuned = trainer.Fit(triplets);           // columns Query, Positive, Negatives
/// mlContext.Model.Save(tuned, triplets.Schema, "tuned.zip");          // tuned weights travel in the zip
/// tuned.SaveModelFolder("tuned-model");                               // HF + sentence-transformers folder
/// </code>
/// </summary>
public static class UllmeTrainingCatalogExtensions
{
    /// <summary>Fine-tunes <paramref name="model"/> (a Hugging Face folder or <c>"default"</c>) with the common
    /// settings; everything else keeps <see cref="FineTuneOptions"/>' defaults (LoRA r 16, lr 1e-4, batch 32).</summary>
    /// <exception cref="UllmeException">An argument is invalid (the message names it).</exception>
    public static GrlTrainer UllmeGrlTrainer(this TransformsCatalog catalog,
        string model = UllmeModel.DefaultModelName,
        TrainingStrategy strategy = TrainingStrategy.Grl,
        string queryColumnName = "Query",
        string positiveColumnName = "Positive",
        string? negativesColumnName = "Negatives",
        string? instructionColumnName = null,
        string outputColumnName = "Features",
        int epochs = 1,
        int batchSize = 32,
        double? learningRate = null,
        int seed = 42)
    {
        var fineTune = new FineTuneOptions { Strategy = strategy, Epochs = epochs, BatchSize = batchSize, Seed = seed };
        if (learningRate is { } lr) fineTune = fineTune with { Optimizer = fineTune.Optimizer with { LearningRate = lr } };
        return catalog.UllmeGrlTrainer(new GrlTrainerOptions
        {
            Model = model,
            QueryColumnName = queryColumnName,
            PositiveColumnName = positiveColumnName,
            NegativesColumnName = negativesColumnName,
            InstructionColumnName = instructionColumnName,
            OutputColumnName = outputColumnName,
            FineTune = fineTune,
        });
    }

    /// <summary>Fine-tunes with every setting given by <paramref name="options"/> (validated now).</summary>
    public static GrlTrainer UllmeGrlTrainer(this TransformsCatalog catalog, GrlTrainerOptions options)
    {
        return new GrlTrainer(ModelArgument.EnvironmentFor(catalog, options), options);
    }

    /// <summary>Fine-tunes a copy of an already loaded model (the model itself is never modified, so every
    /// <c>Fit</c> starts from its weights). <see cref="GrlTrainerOptions.Model"/>, <see cref="GrlTrainerOptions.DType"/>
    /// and <see cref="GrlTrainerOptions.Device"/> are taken from the model.</summary>
    public static GrlTrainer UllmeGrlTrainer(this TransformsCatalog catalog, UllmeModel model, GrlTrainerOptions? options = null)
    {
        var (env, o) = ModelArgument.Bind(catalog, model, options);
        return new GrlTrainer(env, o, model);
    }

    /// <summary>
    /// A sweep over <see cref="GrlTrainer"/> settings: each point of <paramref name="space"/> is a fit on the training
    /// data (from a fresh copy of the base model) scored by <paramref name="metric"/>, any ML.NET evaluation on dev data.
    /// <code>
    /// var sweep = mlContext.Transforms.UllmeGrlSweep(
    ///     new SweepSpace(SweepDimension.Strategy(TrainingStrategy.Contrastive, TrainingStrategy.Grl)),
    ///     TransformerSweepMetric.StsSpearman(stsDev),
    ///     new GrlTrainerSweepOptions { Trainer = new GrlTrainerOptions { Model = "/models/stories260K" }, OutputDirectory = "sweep" });
    /// GrlTrainerSweepResult result = sweep.Run(triplets);   // sweep/leaderboard.*, sweep/best/, sweep/best.zip
    /// </code>
    /// </summary>
    /// <exception cref="UllmeException">An option is invalid (the message names it).</exception>
    public static GrlTrainerSweep UllmeGrlSweep(this TransformsCatalog catalog, SweepSpace space, TransformerSweepMetric metric, GrlTrainerSweepOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new GrlTrainerSweep(MLNetInterop.GetEnvironment(catalog), space, metric, options ?? new GrlTrainerSweepOptions(), model: null);
    }

    /// <summary>A sweep starting every trial from a copy of an already loaded model (never modified).
    /// <see cref="GrlTrainerOptions.Model"/>, <see cref="GrlTrainerOptions.DType"/> and <see cref="GrlTrainerOptions.Device"/>
    /// are taken from the model.</summary>
    public static GrlTrainerSweep UllmeGrlSweep(this TransformsCatalog catalog, UllmeModel model, SweepSpace space, TransformerSweepMetric metric, GrlTrainerSweepOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(model);
        return new GrlTrainerSweep(MLNetInterop.GetEnvironment(catalog), space, metric, options ?? new GrlTrainerSweepOptions(), model);
    }
}
