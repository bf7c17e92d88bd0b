using Ullme.MLNet.Evaluation.Datasets;
using Ullme.MLNet.Evaluation.Metrics;
using Ullme.MLNet.Evaluation.Results;

namespace Ullme.MLNet.Evaluation.Tasks;

/// <summary>
/// Reranking: each query's candidates (its positives and negatives) are ranked by cosine similarity to the query
/// (instruction on the query only). Scored like current MTEB, which runs reranking as retrieval restricted to the
/// candidates: candidates get ids <c>apositive_&lt;q&gt;_00000</c> / <c>negative_&lt;q&gt;_00000</c> (MTEB's conversion,
/// which also fixes the order of ties), positives have grade 1, and the retrieval metrics follow
/// (<c>map_at_1000</c> is the main score, <c>mrr_at_10</c> MTEB v1's MRR). MTEB v1's <c>map</c> (mean average
/// precision over all candidates) and <c>mrr</c> (MRR@10) are reported too. Queries without a positive are skipped.
/// </summary>
/// <para>With a <see cref="Scorer"/> the candidates are ranked by its scores instead (e.g. generation-based or mixed
/// relevance through <see cref="RerankerScorer"/>); the metrics are the same.</para>
public sealed class RerankingTask : EvaluationTask
{
    private readonly IReadOnlyDictionary<string, IReadOnlyList<RerankingSample>> _splits;

    public RerankingTask(string name, IReadOnlyDictionary<string, IReadOnlyList<RerankingSample>> splits) : base(name)
    {
        if (splits.Count == 0) throw new UllmeException($"task {name}: no splits");
        _splits = splits;
    }

    /// <summary>Scores candidates instead of the cosine of the context's embeddings; null = cosine.</summary>
    public IRerankingScorer? Scorer { get; init; }

    public override TaskType Type => TaskType.Reranking;

    public override string MainScore => "map_at_1000";

    public override IReadOnlyList<string> Splits => _splits.Keys.ToArray();

    public override IReadOnlyDictionary<string, SplitScores> Evaluate(EvaluationContext context)
    {
        var result = new Dictionary<string, SplitScores>();
        foreach (var (split, all) in _splits)
        {
            var samples = context.Take(all.Where(s => s.Positives.Count > 0).ToArray());
            if (samples.Count == 0) throw new UllmeException($"task {Name}: split '{split}' has no query with a positive");
            var candidateScores = Scorer is null ? CosineScores(context, split, samples) : ScoreWith(Scorer, context, split, samples);
            var qrels = new Dictionary<string, Dictionary<string, int>>(StringComparer.Ordinal);
            var run = new Dictionary<string, IReadOnlyList<ScoredDocument>>(StringComparer.Ordinal);
            double apSum = 0, rrSum = 0;
            for (int q = 0; q < samples.Count; q++)
            {
                var s = samples[q];
                string qid = $"{split}_query{q}";
                var judged = new Dictionary<string, int>(StringComparer.Ordinal);
                var scored = new List<ScoredDocument>();
                var isPositive = new List<bool>();
                var scores = new List<double>();
                int count = s.Positives.Count + s.Negatives.Count;
                for (int i = 0; i < count; i++)
                {
                    bool positive = i < s.Positives.Count;
                    string docId = positive
                        ? $"apositive_{qid}_{i:D5}"
                        : $"negative_{qid}_{i - s.Positives.Count:D5}";
                    double score = candidateScores[q][i];
                    if (positive) judged[docId] = 1;
                    scored.Add(new ScoredDocument(docId, score));
                    isPositive.Add(positive);
                    scores.Add(score);
                }
                qrels[qid] = judged;
                run[qid] = scored;
                apSum += RerankingMetrics.AveragePrecision(isPositive, scores);
                rrSum += RerankingMetrics.ReciprocalRank(isPositive, scores, 10);
            }
            var result1 = NewScores();
            foreach (var (metric, value) in RetrievalMetrics.Evaluate(qrels, run)) result1.Add(metric, value);
            result1.Add("map", apSum / samples.Count);
            result1.Add("mrr", rrSum / samples.Count);
            result[split] = result1;
        }
        return result;
    }

    /// <summary>Cosine of query and candidate embeddings (through the context's cache), per sample: positives then negatives.</summary>
    private double[][] CosineScores(EvaluationContext context, string split, IReadOnlyList<RerankingSample> samples)
    {
        var queryVectors = context.Embed(this, $"{split}: queries", samples.Select(s => s.Query).ToArray(), TextRole.Query);
        var docs = samples.SelectMany(s => s.Positives.Concat(s.Negatives)).ToArray();
        var docVectors = context.Embed(this, $"{split}: candidates", docs, TextRole.Document);
        var result = new double[samples.Count][];
        int offset = 0;
        for (int q = 0; q < samples.Count; q++)
        {
            int count = samples[q].Positives.Count + samples[q].Negatives.Count;
            result[q] = new double[count];
            for (int i = 0; i < count; i++) result[q][i] = (float)PairedScores.CosineOf(queryVectors[q], docVectors[offset + i]);
            offset += count;
        }
        return result;
    }

    private double[][] ScoreWith(IRerankingScorer scorer, EvaluationContext context, string split, IReadOnlyList<RerankingSample> samples)
    {
        string stage = $"{split}: scoring candidates";
        context.Report(this, stage, 0, samples.Count);
        var scores = scorer.Score(samples, context.InstructionFor(this, TextRole.Query), context.CancellationToken);
        if (scores.Count != samples.Count || Enumerable.Range(0, samples.Count).Any(q => scores[q].Length != samples[q].Positives.Count + samples[q].Negatives.Count))
            throw new InvalidOperationException($"{scorer.GetType().Name} returned scores that do not match the candidates.");
        context.Report(this, stage, samples.Count, samples.Count);
        return [.. scores];
    }
}

/// <summary>Scores the candidates of reranking samples (positives then negatives, per sample).</summary>
public interface IRerankingScorer
{
    /// <summary>Row q holds one score per candidate of samples[q]: its positives, then its negatives.
    /// <paramref name="queryInstruction"/> is the task's query instruction when instructions are on, else null.</summary>
    IReadOnlyList<double[]> Score(IReadOnlyList<RerankingSample> samples, string? queryInstruction, CancellationToken cancellationToken);
}

/// <summary><see cref="IRerankingScorer"/> over a <see cref="Inference.Reranker"/>: representation, generation or mixed
/// relevance (the reranker's <see cref="Inference.RerankOptions"/>); the task's query instruction, when given, replaces
/// the reranker's own.</summary>
public sealed class RerankerScorer(Inference.EmbeddingEngine engine, Inference.RerankOptions options) : IRerankingScorer
{
    public IReadOnlyList<double[]> Score(IReadOnlyList<RerankingSample> samples, string? queryInstruction, CancellationToken cancellationToken)
    {
        var o = queryInstruction is null ? options : options with { Relevance = options.Relevance with { Instruction = queryInstruction } };
        var reranker = new Inference.Reranker(engine, o);
        var queries = samples.Select(s => new Inference.RerankQuery(s.Query, [.. s.Positives, .. s.Negatives])).ToArray();
        return reranker.Score(queries, null, cancellationToken).Select(c => c.Scores).ToArray();
    }
}
