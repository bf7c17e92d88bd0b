using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation.Tasks;

/// <summary>
/// Retrieval, MTEB's <c>AbsTaskRetrieval</c>: queries without relevance judgments in a split are dropped; queries
/// are embedded with the instruction, documents (<c>title + " " + text</c>) without; each query's top 1000
/// documents by exact cosine similarity are scored with trec_eval's nDCG, MAP, recall and precision and MTEB's MRR
/// at 1, 3, 5, 10, 20, 100 and 1000 (<see cref="RetrievalMetrics"/>). Main score: <c>ndcg_at_10</c>.
/// The corpus is embedded once for all splits.
/// </summary>
public sealed class RetrievalTask : EvaluationTask
{
    private readonly RetrievalData _data;

    public RetrievalTask(string name, RetrievalData data) : base(name)
    {
        if (data.Corpus.Count == 0) throw new UllmeException($"task {name}: empty corpus");
        if (data.QrelsBySplit.Count == 0) throw new UllmeException($"task {name}: no relevance judgments");
        _data = data;
    }

    public override TaskType Type => TaskType.Retrieval;

    public override string MainScore => "ndcg_at_10";

    public override IReadOnlyList<string> Splits => _data.QrelsBySplit.Keys.ToArray();

    public RetrievalData Data => _data;

    public IReadOnlyList<int> KValues { get; init; } = RetrievalMetrics.DefaultKValues;

    /// <summary>With a smoke limit of N: the first N judged queries of a split, and a corpus of their relevant
    /// documents plus the first 10 N documents.</summary>
    public const int LimitCorpusFactor = 10;

    public override IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context)
    {
        var result = new Dictionary<string, SplitScores>();
        foreach (var (split, qrels) in _data.QrelsBySplit)
        {
            // MTEB: keep queries that have judgments (and exist).
            var queries = _data.Queries.Where(q => qrels.TryGetValue(q.Id, out var d) && d.Count > 0).ToList();
            if (queries.Count == 0) throw new UllmeException($"task {Name}: split '{split}' has no query with both text and relevance judgments");
            IReadOnlyList<CorpusDocument> corpus = _data.Corpus;
            if (context.Limit is int n)
            {
                queries = queries.Take(n).ToList();
                var relevant = new HashSet<string>(queries.SelectMany(q => qrels[q.Id].Keys), StringComparer.Ordinal);
                corpus = _data.Corpus.Where((d, i) => i < n * LimitCorpusFactor || relevant.Contains(d.Id)).ToList();
            }
            var docVectors = context.Embed(this, $"{split}: corpus", corpus.Select(d => d.EmbeddingText).ToArray(), TextRole.Document);
            var queryVectors = context.Embed(this, $"{split}: queries", queries.Select(q => q.Text).ToArray(), TextRole.Query);
            context.Report(this, $"{split}: search", 0, queries.Count);
            var hits = CosineSearch.TopK(queryVectors, docVectors, KValues.Max(), cancellationToken: context.CancellationToken);
            context.Report(this, $"{split}: search", queries.Count, queries.Count);
            var run = new Dictionary<string, IReadOnlyList<ScoredDocument>>(StringComparer.Ordinal);
            for (int q = 0; q < queries.Count; q++)
                run[queries[q].Id] = hits[q].Select(h => new ScoredDocument(corpus[h.Index].Id, h.Score)).ToArray();
            var s = NewScores();
            foreach (var (metric, value) in RetrievalMetrics.Evaluate(qrels, run, KValues)) s.Add(metric, value);
            result[split] = s;
        }
        return result;
    }
}
