namespace Ullme.MLNet.Inference;

/// <summary>Progress of a long embedding or scoring job.</summary>
public readonly record struct EngineProgress(int Done, int Total, long Tokens);

/// <summary>One causal log-likelihood request: the continuation's tokens are scored given the prefix.</summary>
public sealed record ScoreRequest(string Prefix, string Continuation);

/// <summary>Per-token log-probabilities of a continuation, their sum and mean.</summary>
public sealed record ScoreResult(float[] TokenLogProbs, double Sum, double Mean);

/// <summary>
/// The one engine every surface calls (ML.NET transforms, IEmbeddingGenerator, CLI, evaluation, training):
/// tokenization, length-sorted batching, the forward pass without autograd, pooling and normalisation.
/// Thread-safe: concurrent calls are serialised around the forward pass.
/// </summary>
public sealed partial class EmbeddingEngine
{
    public UllmeModel Model { get; }

    public EmbeddingEngine(UllmeModel model) => Model = model;
}
