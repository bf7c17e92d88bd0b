using Ullme.MLNet;
using Ullme.MLNet.Inference;
using Ullme.MLNet.Transforms;
using Ullme.MLNet.Modeling;
using Ullme.MLNet.Pooling;

// In ML.NET's namespace, like ML.NET's own catalog extensions (OnnxCatalog, ...): `using Microsoft.ML;` is all a
// pipeline needs to find UllmeEmbed.
namespace Microsoft.ML;

/// <summary>
/// <c>mlContext.Transforms.UllmeEmbed(...)</c>: a text column becomes an embedding column that ML.NET trainers,
/// clustering and evaluators consume directly.
/// <code>
/// var pipeline = mlContext.Transforms.UllmeEmbed(outputColumnName: "Features", inputColumnName: "Text", model: "default")
///     .Append(mlContext.Transforms.Conversion.MapValueToKey("Label"))
///     .Append(mlContext.MulticlassClassification.Trainers.LbfgsMaximumEntropy());
/// </code>
/// </summary>
public static class UllmeCatalogExtensions
{
    /// <summary>Embeds <paramref name="inputColumnName"/> with <paramref name="model"/> (a Hugging Face folder or
    /// <c>"default"</c> for all-MiniLM-L6-v2) into a <c>Vector&lt;Single, D&gt;</c> column.</summary>
    /// <exception cref="UllmeException">An argument is invalid (the message names it).</exception>
    public static UllmeEmbeddingEstimator UllmeEmbed(this TransformsCatalog catalog,
        string outputColumnName = "Features",
        string inputColumnName = "Text",
        string model = UllmeModel.DefaultModelName,
        PoolingMode? pooling = null,
        AttentionMode? attention = null,
        string? instruction = null,
        int? maxLength = null,
        int batchSize = 32,
        ModelDType dtype = ModelDType.Float32,
        string? device = null,
        bool normalize = true)
    {
        return catalog.UllmeEmbed(new UllmeEmbeddingOptions
        {
            OutputColumnName = outputColumnName,
            InputColumnName = inputColumnName,
            Model = model,
            Pooling = pooling,
            Attention = attention,
            Instruction = instruction,
            MaxLength = maxLength,
            BatchSize = batchSize,
            DType = dtype,
            Device = device,
            Normalize = normalize,
        });
    }

    /// <summary>Embeds with every setting given by <paramref name="options"/> (validated now).</summary>
    public static UllmeEmbeddingEstimator UllmeEmbed(this TransformsCatalog catalog, UllmeEmbeddingOptions options)
    {
        return new UllmeEmbeddingEstimator(ModelArgument.EnvironmentFor(catalog, options), options);
    }

    /// <summary>Embeds with an already loaded (e.g. fine-tuned) model. It is not disposed by the transform; saving the
    /// pipeline stores its current weights. <see cref="UllmeEmbeddingOptions.Model"/>, <see cref="UllmeEmbeddingOptions.DType"/>
    /// and <see cref="UllmeEmbeddingOptions.Device"/> of <paramref name="options"/> are ignored for the in-memory model.</summary>
    public static UllmeEmbeddingEstimator UllmeEmbed(this TransformsCatalog catalog, UllmeModel model,
        string outputColumnName = "Features", string inputColumnName = "Text", UllmeEmbeddingOptions? options = null)
    {
        var (env, o) = ModelArgument.Bind(catalog, model, options);
        o.OutputColumnName = outputColumnName;
        o.InputColumnName = inputColumnName;
        return new UllmeEmbeddingEstimator(env, o, model);
    }
}

/// <summary>
/// <c>mlContext.Transforms.UllmeScore(...)</c>: a (query, passage) pair of text columns gets a Single relevance
/// column: generation-based (how likely the model finds the passage after the prompt built from the query), or
/// representation-based (cosine of the embeddings), or both.
/// <code>
/// var scorer = mlContext.Transforms.UllmeScore(outputColumnName: "Relevance", queryColumnName: "Query",
///     passageColumnName: "Passage", model: "models/stories260K");
/// </code>
/// </summary>
public static class UllmeScoreCatalogExtensions
{
    /// <summary>Scores <paramref name="passageColumnName"/> against <paramref name="queryColumnName"/> with
    /// <paramref name="model"/> (a Hugging Face folder; <c>"default"</c> only with mode Representation).</summary>
    /// <exception cref="UllmeException">An argument is invalid (the message names it).</exception>
    public static UllmeScoreEstimator UllmeScore(this TransformsCatalog catalog,
        string outputColumnName = "Relevance",
        string queryColumnName = "Query",
        string passageColumnName = "Passage",
        string model = UllmeModel.DefaultModelName,
        UllmeScoreMode mode = UllmeScoreMode.Generation,
        string? instruction = null,
        int batchSize = 8,
        ModelDType dtype = ModelDType.Float32,
        string? device = null)
    {
        return catalog.UllmeScore(new UllmeScoreOptions
        {
            OutputColumnName = outputColumnName,
            QueryColumnName = queryColumnName,
            PassageColumnName = passageColumnName,
            Model = model,
            Mode = mode,
            Instruction = instruction,
            BatchSize = batchSize,
            DType = dtype,
            Device = device,
        });
    }

    /// <summary>Scores with every setting given by <paramref name="options"/> (validated now).</summary>
    public static UllmeScoreEstimator UllmeScore(this TransformsCatalog catalog, UllmeScoreOptions options)
    {
        return new UllmeScoreEstimator(ModelArgument.EnvironmentFor(catalog, options), options);
    }

    /// <summary>Scores with an already loaded (e.g. fine-tuned) model; not disposed by the transform, saved with its
    /// current weights. Model, DType and Device of <paramref name="options"/> are ignored.</summary>
    public static UllmeScoreEstimator UllmeScore(this TransformsCatalog catalog, UllmeModel model, UllmeScoreOptions? options = null)
    {
        var (env, o) = ModelArgument.Bind(catalog, model, options);
        return new UllmeScoreEstimator(env, o, model);
    }
}
