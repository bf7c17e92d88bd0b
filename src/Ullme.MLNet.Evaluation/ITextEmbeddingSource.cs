using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Evaluation;

/// <summary>
/// What evaluation needs from an embedder: texts in, one vector per text out. The seam lets metrics and tasks be
/// tested with fake embedders; <see cref="EngineEmbeddingSource"/> is the real one over <see cref="EmbeddingEngine"/>.
/// </summary>
public interface ITextEmbeddingSource
{
    /// <summary>Identifies the model and every setting that changes a vector (pooling, attention, length,
    /// normalisation, precision). Two sources with the same key must return the same vector for the same input;
    /// the embedding cache relies on it.</summary>
    string CacheKey { get; }

    /// <summary>Embeds <paramref name="texts"/>; row i belongs to texts[i]. <paramref name="instruction"/>, when
    /// not null, is placed before every text and excluded from pooling.</summary>
    float[][] Embed(IReadOnlyList<string> texts, string? instruction, IProgress<EngineProgress>? progress = null,
        CancellationToken cancellationToken = default);
}

/// <summary>
/// <see cref="ITextEmbeddingSource"/> over the library's engine: batching, length sorting, pooling and instruction
/// masking all happen in <see cref="EmbeddingEngine.Embed"/>.
/// </summary>
public sealed class EngineEmbeddingSource : ITextEmbeddingSource
{
    private readonly EmbeddingEngine _engine;
    private readonly EmbeddingOptions _options;

    public EngineEmbeddingSource(EmbeddingEngine engine, EmbeddingOptions? options = null)
    {
        _engine = engine ?? throw new ArgumentNullException(nameof(engine));
        _options = options ?? new EmbeddingOptions();
        var model = engine.Model;
        var d = model.Defaults;
        // Resolved settings (not the nullable requests) so "default" and an explicit equal value share entries.
        CacheKey = string.Join('|',
            model.ModelId,
            model.SourceFolder,
            model.LoadOptions.DType,
            _options.Pooling ?? d.Pooling,
            _options.Attention ?? d.Attention,
            _options.MaxLength ?? d.MaxLength,
            _options.Normalize ? "norm" : "raw");
    }

    public string CacheKey { get; }

    /// <summary>The engine settings used for every call (the instruction is set per call).</summary>
    public EmbeddingOptions Options => _options;

    public EmbeddingEngine Engine => _engine;

    public float[][] Embed(IReadOnlyList<string> texts, string? instruction, IProgress<EngineProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        _engine.Embed(texts, _options with { Instruction = instruction }, progress, cancellationToken);
}
