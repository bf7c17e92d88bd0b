// Temporary: the public engine API that helpers code against; bodies land with the engine integration.
namespace Ullme.MLNet.Inference;

public sealed partial class UllmeModel
{
    /// <summary>Loads a Hugging Face model folder (config.json, safetensors, tokenizer files), or
    /// <see cref="DefaultModelName"/> for the bundled all-MiniLM-L6-v2.</summary>
    public static UllmeModel Load(string modelPathOrDefault, ModelLoadOptions? options = null) =>
        throw new NotImplementedException();

    /// <summary>Writes a self-contained HF folder (config.json, model.safetensors, tokenizer files, pooling
    /// settings) that <see cref="Load"/> reads back to an identical model.</summary>
    public void SaveFolder(string folder) => throw new NotImplementedException();
}

public sealed partial class EmbeddingEngine
{
    /// <summary>Embeds texts; row i of the result is the embedding of texts[i].</summary>
    public float[][] Embed(IReadOnlyList<string> texts, EmbeddingOptions? options = null,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotImplementedException();

    /// <summary>Causal log-likelihood of each continuation given its prefix.</summary>
    public ScoreResult[] Score(IReadOnlyList<ScoreRequest> requests, int batchSize = 8,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default) =>
        throw new NotImplementedException();
}
