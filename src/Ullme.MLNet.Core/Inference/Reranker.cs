namespace Ullme.MLNet.Inference;

/// <summary>Which relevance signal orders the candidates.</summary>
public enum RerankBy
{
    /// <summary>cos(e_query, e_candidate): every model.</summary>
    Representation,

    /// <summary>Mean (or sum) log-probability of the candidate after the generation prompt: decoders only.</summary>
    Generation,

    /// <summary>(1 − w)·z(representation) + w·z(generation), z = standardised within the query's candidates.</summary>
    Mix,
}

/// <summary>Settings of a <see cref="Reranker"/>.</summary>
public sealed record RerankOptions
{
    public RerankBy By { get; init; } = RerankBy.Representation;

    /// <summary>
    /// w in [0, 1], the weight of the generation signal in <see cref="RerankBy.Mix"/>. The two signals live on different
    /// scales (cosine in [−1, 1], mean log-prob in (−∞, 0]), so each is first standardised within the query's candidate
    /// list (z = (s − mean) / population std; all-equal scores give z = 0), then mixed:
    /// <c>mix = (1 − w)·z_rep + w·z_gen</c>. w = 0 orders exactly like the representation score, w = 1 exactly like the
    /// generation score. Default 0.5.
    /// </summary>
    public double MixWeight { get; init; } = 0.5;

    /// <summary>How the two signals are computed (prompt, instruction, mean/sum, embedding settings).</summary>
    public RelevanceOptions Relevance { get; init; } = new();

    public void Validate()
    {
        OptionCheck.Defined(By, "RerankOptions.By");
        OptionCheck.Between(MixWeight, 0, 1, "RerankOptions.MixWeight");
        ArgumentNullException.ThrowIfNull(Relevance);
        Relevance.Validate();
    }
}

/// <summary>A query and the candidates to order.</summary>
public sealed record RerankQuery(string Query, IReadOnlyList<string> Candidates);

/// <summary>One candidate in a ranking: its position in the input list, the score it was ranked by, both signals
/// where computed (null when not needed by <see cref="RerankOptions.By"/>), and its 1-based rank.</summary>
public sealed record RankedCandidate(int Index, string Text, double Score, double? Representation, double? Generation, int Rank);

/// <summary>
/// Orders candidate passages for a query by representation, generation, or a weighted mix (see
/// <see cref="RerankOptions"/>). Scores of every query of a call are computed together (batched; a query shared by
/// its candidates is embedded once). Ties keep the input order.
/// <code>
/// using var model = UllmeModel.Load("models/stories260K");
/// var reranker = new Reranker(new EmbeddingEngine(model), new RerankOptions { By = RerankBy.Mix, MixWeight = 0.3 });
/// var ranking = reranker.Rerank("a cat on a mat", ["The dog ran.", "The cat sat on the mat."]);
/// </code>
/// </summary>
public sealed class Reranker
{
    private readonly RerankOptions _options;

    public Reranker(EmbeddingEngine engine, RerankOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        _options = options ?? new RerankOptions();
        _options.Validate();
        Scorer = new RelevanceScorer(engine, _options.Relevance);
        if (_options.By != RerankBy.Representation) Scorer.EnsureGeneration();
    }

    public RerankOptions Options => _options;

    public RelevanceScorer Scorer { get; }

    /// <summary>Ranks the candidates of one query, best first.</summary>
    public IReadOnlyList<RankedCandidate> Rerank(string query, IReadOnlyList<string> candidates) =>
        Rerank([new RerankQuery(query, candidates)])[0];

    /// <summary>Ranks the candidates of every query, best first; result i belongs to queries[i].</summary>
    public IReadOnlyList<IReadOnlyList<RankedCandidate>> Rerank(IReadOnlyList<RerankQuery> queries,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var scored = Score(queries, progress, cancellationToken);
        var result = new IReadOnlyList<RankedCandidate>[queries.Count];
        for (int q = 0; q < queries.Count; q++)
        {
            var s = scored[q];
            var order = Enumerable.Range(0, s.Scores.Length).OrderByDescending(i => s.Scores[i]).ThenBy(i => i).ToArray();
            var ranked = new RankedCandidate[order.Length];
            for (int r = 0; r < order.Length; r++)
            {
                int i = order[r];
                ranked[r] = new RankedCandidate(i, queries[q].Candidates[i], s.Scores[i], s.Representation?[i], s.Generation?[i], r + 1);
            }
            result[q] = ranked;
        }
        return result;
    }

    /// <summary>The ranking score of every candidate of every query, in input order (plus the signals it came from).</summary>
    public IReadOnlyList<CandidateScores> Score(IReadOnlyList<RerankQuery> queries,
        IProgress<EngineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(queries);
        var pairs = new List<QueryPassage>();
        for (int q = 0; q < queries.Count; q++)
        {
            var item = queries[q] ?? throw new UllmeException($"Rerank query {q} is null.");
            if (item.Query is null) throw new UllmeException($"Rerank query {q} has no query text.");
            if (item.Candidates is null) throw new UllmeException($"Rerank query {q} has no candidate list.");
            for (int c = 0; c < item.Candidates.Count; c++)
                pairs.Add(new QueryPassage(item.Query, item.Candidates[c] ?? throw new UllmeException($"Rerank query {q}: candidate {c} is null.")));
        }
        bool rep = _options.By != RerankBy.Generation, gen = _options.By != RerankBy.Representation;
        float[]? r = rep ? Scorer.Representation(pairs, gen ? null : progress, cancellationToken) : null;
        float[]? g = gen ? Scorer.Generation(pairs, progress, cancellationToken) : null;

        var result = new CandidateScores[queries.Count];
        int offset = 0;
        for (int q = 0; q < queries.Count; q++)
        {
            int n = queries[q].Candidates.Count;
            double[]? rq = r is null ? null : Slice(r, offset, n);
            double[]? gq = g is null ? null : Slice(g, offset, n);
            double[] scores = _options.By switch
            {
                RerankBy.Representation => rq!,
                RerankBy.Generation => gq!,
                _ => Mix(rq!, gq!, _options.MixWeight),
            };
            result[q] = new CandidateScores(scores, rq, gq);
            offset += n;
        }
        return result;
    }

    /// <summary>(1 − w)·z(rep) + w·z(gen) with z standardised over the list (see <see cref="RerankOptions.MixWeight"/>).</summary>
    public static double[] Mix(IReadOnlyList<double> representation, IReadOnlyList<double> generation, double weight)
    {
        if (representation.Count != generation.Count) throw new ArgumentException("the two score lists differ in length");
        var zr = Standardize(representation);
        var zg = Standardize(generation);
        var mixed = new double[zr.Length];
        for (int i = 0; i < mixed.Length; i++) mixed[i] = (1 - weight) * zr[i] + weight * zg[i];
        return mixed;
    }

    /// <summary>(s − mean) / population std; zeros when every score is equal.</summary>
    public static double[] Standardize(IReadOnlyList<double> scores)
    {
        int n = scores.Count;
        var z = new double[n];
        if (n == 0) return z;
        double mean = scores.Average();
        double var = scores.Sum(s => (s - mean) * (s - mean)) / n;
        double std = Math.Sqrt(var);
        if (!(std > 1e-12)) return z;
        for (int i = 0; i < n; i++) z[i] = (scores[i] - mean) / std;
        return z;
    }

    private static double[] Slice(float[] values, int offset, int n)
    {
        var d = new double[n];
        for (int i = 0; i < n; i++) d[i] = values[offset + i];
        return d;
    }
}

/// <summary>Scores of one query's candidates in input order: the ranking score and the signals behind it.</summary>
public sealed record CandidateScores(double[] Scores, double[]? Representation, double[]? Generation);
