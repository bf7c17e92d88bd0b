using Microsoft.Extensions.AI;
using Ullme.MLNet.Inference;

namespace Ullme.MLNet.Extensions.AI;

/// <summary>
/// <see cref="IEmbeddingGenerator{TInput,TEmbedding}"/> over the shared <see cref="EmbeddingEngine"/>, so any
/// Microsoft.Extensions.AI consumer (vector stores, RAG pipelines, DI-registered services) can use a local Ullme model.
/// <code>
/// using var generator = UllmeEmbeddingGenerator.Load("default");
/// var embeddings = await generator.GenerateAsync(["first text", "second text"]);
/// var short = await generator.GenerateAsync(texts, new EmbeddingGenerationOptions { Dimensions = 128 }); // Matryoshka
/// </code>
/// Texts go to the engine in windows of 4 × <see cref="EmbeddingOptions.BatchSize"/>; the engine sorts each window by
/// length and runs it in batches of <see cref="EmbeddingOptions.BatchSize"/>. The cancellation token is checked
/// between windows and passed to the engine, which checks it between batches. Safe for concurrent callers: the generator holds no per-call state and the
/// engine serialises its forward passes.
/// </summary>
public sealed class UllmeEmbeddingGenerator : IEmbeddingGenerator<string, Embedding<float>>
{
    /// <summary>Provider name reported in <see cref="EmbeddingGeneratorMetadata"/>.</summary>
    public const string ProviderName = "Ullme.MLNet";

    private readonly EmbeddingEngine _engine;
    private readonly EmbeddingOptions _options;
    private readonly bool _ownsModel;
    private readonly EmbeddingGeneratorMetadata _metadata;

    /// <summary>Texts per engine call, in batches: enough for length sorting to cut padding.</summary>
    internal const int WindowFactor = 4;

    /// <summary>Test hook: called with the number of texts done after each window.</summary>
    internal Action<int>? WindowCompleted { get; set; }

    /// <summary>Wraps <paramref name="engine"/>. The engine's model is not disposed with the generator unless
    /// <paramref name="ownsModel"/> is true.</summary>
    public UllmeEmbeddingGenerator(EmbeddingEngine engine, EmbeddingOptions? options = null, bool ownsModel = false)
    {
        ArgumentNullException.ThrowIfNull(engine);
        _engine = engine;
        _options = options ?? new EmbeddingOptions();
        _options.Validate();   // the engine record's own rules (the same message on every surface)
        _ownsModel = ownsModel;
        _metadata = new EmbeddingGeneratorMetadata(ProviderName, providerUri: null, defaultModelId: engine.Model.ModelId,
            defaultModelDimensions: engine.Model.EmbeddingDimension);
    }

    /// <summary>Wraps a loaded model (not disposed with the generator).</summary>
    public UllmeEmbeddingGenerator(UllmeModel model, EmbeddingOptions? options = null)
        : this(new EmbeddingEngine(model), options, ownsModel: false) { }

    /// <summary>Loads <paramref name="modelPathOrDefault"/> (a Hugging Face folder or <c>"default"</c>); the generator
    /// owns the model and disposes it.</summary>
    public static UllmeEmbeddingGenerator Load(string modelPathOrDefault = UllmeModel.DefaultModelName,
        EmbeddingOptions? options = null, ModelLoadOptions? loadOptions = null) =>
        new(new EmbeddingEngine(UllmeModel.Load(modelPathOrDefault, loadOptions)), options, ownsModel: true);

    /// <summary>The engine every call goes through.</summary>
    public EmbeddingEngine Engine => _engine;

    /// <summary>How texts are embedded (pooling, instruction, batch size, ...).</summary>
    public EmbeddingOptions Options => _options;

    /// <summary>Embeds <paramref name="values"/>; result i is the embedding of value i.</summary>
    /// <remarks><see cref="EmbeddingGenerationOptions.Dimensions"/> keeps the first N dimensions and re-normalises
    /// (Matryoshka truncation); <see cref="EmbeddingGenerationOptions.ModelId"/>, if set, must name this model.
    /// <see cref="GeneratedEmbeddings{TEmbedding}.Usage"/> counts the tokens fed to the model (after truncation).</remarks>
    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values,
        EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(values);
        var texts = values.ToList();
        for (int i = 0; i < texts.Count; i++)
            if (texts[i] is null) throw new UllmeException($"GenerateAsync: value {i} is null.");
        int dimension = _engine.Model.EmbeddingDimension;
        int? keep = options?.Dimensions;
        if (keep is { } k && (k < 1 || k > dimension))
            throw new UllmeException($"EmbeddingGenerationOptions.Dimensions must be between 1 and {dimension} for model '{_engine.Model.ModelId}', got {k}.");
        if (options?.ModelId is { } requested && !string.Equals(requested, _engine.Model.ModelId, StringComparison.Ordinal))
            throw new UllmeException($"EmbeddingGenerationOptions.ModelId '{requested}' does not match this generator's model '{_engine.Model.ModelId}'.");
        cancellationToken.ThrowIfCancellationRequested();

        var result = new GeneratedEmbeddings<Embedding<float>>(texts.Count);
        long tokens = 0;
        string modelId = _engine.Model.ModelId;
        int window = WindowFactor * _options.BatchSize;
        var embeddingOptions = keep is { } n && n < dimension ? _options with { Dimensions = n } : _options;
        for (int start = 0; start < texts.Count; start += window)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(window, texts.Count - start);
            var chunk = texts.GetRange(start, count);
            // The forward pass is CPU/GPU-bound: run it off the caller's thread so concurrent callers overlap their
            // tokenisation and the caller's synchronization context is never blocked.
            var detailed = await Task.Run(() => _engine.EmbedDetailed(chunk, embeddingOptions, progress: null, cancellationToken), cancellationToken)
                .ConfigureAwait(false);
            tokens += detailed.TokenCount;
            DateTimeOffset createdAt = DateTimeOffset.UtcNow;
            foreach (float[] v in detailed.Embeddings)
                result.Add(new Embedding<float>(v) { ModelId = modelId, CreatedAt = createdAt });
            WindowCompleted?.Invoke(start + count);
        }
        result.Usage = new UsageDetails { InputTokenCount = tokens, TotalTokenCount = tokens };
        return result;
    }


    /// <summary>
    /// Per the abstraction's contract: null for any keyed request; the <see cref="EmbeddingGeneratorMetadata"/>;
    /// this generator (or its <see cref="EmbeddingEngine"/> / <see cref="UllmeModel"/>) for a type they are
    /// instances of; otherwise null.
    /// </summary>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(EmbeddingGeneratorMetadata)) return _metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType.IsInstanceOfType(_engine)) return _engine;
        if (serviceType.IsInstanceOfType(_engine.Model)) return _engine.Model;
        return null;
    }

    /// <summary>Disposes the model if this generator loaded it (<see cref="Load"/>).</summary>
    public void Dispose()
    {
        if (_ownsModel) _engine.Model.Dispose();
    }
}
