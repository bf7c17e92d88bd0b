using Ullme.MLNet.Modeling;

namespace Ullme.MLNet.Inference;

/// <summary>A (query, passage) pair to score.</summary>
public readonly record struct QueryPassage(string Query, string Passage);

/// <summary>
/// How relevance is computed. The generation settings (<see cref="GenerationPrompt"/>, <see cref="Instruction"/>,
/// <see cref="GenerationScore"/>, <see cref="MaxGenerationLength"/>) mean exactly what the fine-tuning options of the
/// same name mean, so a model is scored the way it was trained.
/// </summary>
public sealed record RelevanceOptions
{
    /// <summary>Prompt the passage is generated after; placeholders {instruction} and {query}
    /// (see <see cref="Inference.GenerationPrompt"/>). Default ULLME's <c>"{instruction}\nQuery: {query}\nPassage: "</c>.</summary>
    public string GenerationPrompt { get; init; } = Inference.GenerationPrompt.DefaultTemplate;

    /// <summary>Task instruction: fills {instruction} of the prompt, and is placed before the query (attended to, not
    /// pooled) when the query is embedded. Null = none.</summary>
    public string? Instruction { get; init; }

    /// <summary>Mean (default, length-normalised) or sum of the passage's token log-probabilities.</summary>
    public GenerationScore GenerationScore { get; init; } = GenerationScore.Mean;

    /// <summary>Max tokens of a prompt + passage sequence; null = the model's position limit. Longer passages lose
    /// their end (as in training with <c>MaxGenerationLength</c>).</summary>
    public int? MaxGenerationLength { get; init; }

    /// <summary>How query and passage are embedded for the representation score (pooling, attention, max length);
    /// default: the model's (bidirectional mean for decoders). The instruction is taken from <see cref="Instruction"/>
    /// for the query only; <see cref="EmbeddingOptions.Normalize"/> does not change a cosine.</summary>
    public EmbeddingOptions Embedding { get; init; } = new();

    /// <summary>Causal sequences per forward pass of generation scoring. Default 8.</summary>
    public int GenerationBatchSize { get; init; } = 8;

    /// <summary>Checks every setting; the message names the bad one.</summary>
    public void Validate()
    {
        Inference.GenerationPrompt.Validate(GenerationPrompt, "RelevanceOptions.GenerationPrompt");
        OptionCheck.Defined(GenerationScore, "RelevanceOptions.GenerationScore");
        OptionCheck.AtLeast(MaxGenerationLength, 2, "RelevanceOptions.MaxGenerationLength", " tokens");
        OptionCheck.Range(GenerationBatchSize, 1, EmbeddingOptions.MaxBatchSize, "RelevanceOptions.GenerationBatchSize");
        ArgumentNullException.ThrowIfNull(Embedding);
        Embedding.Validate();
    }
}

/// <summary>
/// The two relevance signals GRL aligns, for (query, passage) pairs:
/// <list type="bullet">
/// <item><b>Representation</b>: cos(e_q, e_p) of the embeddings (the model's embedding settings; for decoders
/// bidirectional mean pooling). Works for every model.</item>
/// <item><b>Generation</b>: the mean (or sum) token log-probability of the passage after the generation prompt built
/// from the query, computed causally by <see cref="EmbeddingEngine.ScoreTokenIds"/> (batched, label log-probs gathered
/// in chunks, never full-vocabulary logits for every position). Needs a decoder with a language-model head.</item>
/// </list>
/// Texts that repeat (a query with many candidates) are embedded once per call. Thread-safe like the engine.
/// </summary>
public sealed class RelevanceScorer
{
    private readonly EmbeddingEngine _engine;
    private readonly RelevanceOptions _options;

    public RelevanceScorer(EmbeddingEngine engine, RelevanceOptions? options = null)
    {
        _engine = engine ?? throw new ArgumentNullException(nameof(engine));
        _options = options ?? new RelevanceOptions();
        _options.Validate();
    }

    public EmbeddingEngine Engine => _engine;

    public RelevanceOptions Options => _options;

    /// <summary>Whether the model can compute generation scores (a decoder with a language-model head).</summary>
    public bool SupportsGeneration => _engine.Model.Backbone.HasLanguageModelHead && _engine.Model.Backbone.SupportsCausal;

    /// <summary>Throws the one clear error for models that cannot score generation (encoders such as MiniLM).</summary>
    public void EnsureGeneration()
    {
        if (!SupportsGeneration)
            throw new UllmeException($"Model '{_engine.Model.ModelId}' ({_engine.Model.Config.ModelType}) is an encoder without a language-model head: " +
                "generation scores need a decoder. Use the representation score (mode/--by representation) with this model.");
    }

    /// <summary>cos(e_query, e_passage) per pair.</summary>
    public float[] Representation(IReadOnlyList<QueryPassage> pairs, IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        Check(pairs);
        // Distinct texts only: a query scored against many passages is embedded once.
        var queries = Distinct(pairs.Select(p => p.Query), out var queryIndex);
        var passages = Distinct(pairs.Select(p => p.Passage), out var passageIndex);
        var e = _options.Embedding;
        var q = _engine.Embed(queries, e with { Instruction = _options.Instruction }, null, cancellationToken);
        var d = _engine.Embed(passages, e with { Instruction = null }, progress, cancellationToken);
        var result = new float[pairs.Count];
        for (int i = 0; i < pairs.Count; i++) result[i] = Cosine(q[queryIndex[i]], d[passageIndex[i]]);
        return result;
    }

    /// <summary>Mean (or sum, per <see cref="RelevanceOptions.GenerationScore"/>) log-probability of each passage given
    /// the prompt built from its query.</summary>
    public float[] Generation(IReadOnlyList<QueryPassage> pairs, IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        Check(pairs);
        EnsureGeneration();
        var results = _engine.ScoreTokenIds(ToRequests(pairs), _options.GenerationBatchSize, progress, cancellationToken);
        var scores = new float[pairs.Count];
        for (int i = 0; i < pairs.Count; i++)
            scores[i] = (float)(_options.GenerationScore == GenerationScore.Sum ? results[i].Sum : results[i].Mean);
        return scores;
    }

    /// <summary>The causal inputs of <see cref="Generation"/>: <c>[BOS] + prompt(query) + passage</c>, passage scored,
    /// built by <see cref="Inference.GenerationPrompt"/> exactly as the fine-tuner builds them.</summary>
    public TokenScoreRequest[] ToRequests(IReadOnlyList<QueryPassage> pairs)
    {
        var tok = _engine.Model.Tokenizer;
        int positionLimit = _engine.Model.Config.MaxPositionEmbeddings;
        int? max = _options.MaxGenerationLength ?? (positionLimit > 0 ? positionLimit : null);
        var prompts = new Dictionary<string, int[]>(StringComparer.Ordinal);
        var requests = new TokenScoreRequest[pairs.Count];
        for (int i = 0; i < pairs.Count; i++)
        {
            var (query, passage) = pairs[i];
            if (!prompts.TryGetValue(query, out var prompt))
                prompts[query] = prompt = GenerationPrompt.EncodePrompt(tok, GenerationPrompt.Build(_options.GenerationPrompt, query, _options.Instruction));
            var candidate = tok.Encode(passage, addSpecialTokens: false);
            if (candidate.Count == 0)
                throw new UllmeException($"Passage {i} (\"{Shorten(passage)}\") tokenizes to nothing: it has no generation score.");
            requests[i] = GenerationPrompt.Join(prompt, candidate, tok.PrefixTokenIds.Count, max);
        }
        return requests;
    }

    private static void Check(IReadOnlyList<QueryPassage> pairs)
    {
        for (int i = 0; i < pairs.Count; i++)
            if (pairs[i].Query is null || pairs[i].Passage is null)
                throw new UllmeException($"Pair {i} has a null query or passage; pass empty strings for empty texts.");
    }

    private static string[] Distinct(IEnumerable<string> texts, out int[] index)
    {
        var map = new Dictionary<string, int>(StringComparer.Ordinal);
        var list = new List<string>();
        var idx = new List<int>();
        foreach (var t in texts)
        {
            if (!map.TryGetValue(t, out int k)) { map[t] = k = list.Count; list.Add(t); }
            idx.Add(k);
        }
        index = [.. idx];
        return [.. list];
    }

    /// <summary>Cosine in double precision (0 when a vector is zero).</summary>
    internal static float Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return na == 0 || nb == 0 ? 0f : (float)(dot / Math.Sqrt(na * nb));
    }

    private static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
