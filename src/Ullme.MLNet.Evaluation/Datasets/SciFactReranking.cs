using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>Settings of <see cref="SciFactReranking.Build(string, SciFactRerankingOptions?)"/>.</summary>
public sealed record SciFactRerankingOptions
{
    /// <summary>Documents BM25 retrieves per claim; the retrieved ones that are not cited become negatives. Default 20.</summary>
    public int Retrieve { get; init; } = 20;

    /// <summary>Keep at most this many negatives per claim (the best-ranked by BM25). Default 10.</summary>
    public int MaxNegatives { get; init; } = 10;

    /// <summary>Use at most this many claims (in file order); null = all.</summary>
    public int? MaxQueries { get; init; }

    /// <summary>Claims file (in the SciFact folder). Default claims_train.csv.</summary>
    public string ClaimsFile { get; init; } = "claims_train.csv";

    /// <summary>BM25 k1 (term-frequency saturation). Default 1.2.</summary>
    public double K1 { get; init; } = 1.2;

    /// <summary>BM25 b (length normalisation). Default 0.75.</summary>
    public double B { get; init; } = 0.75;

    public void Validate()
    {
        if (Retrieve < 1) throw new UllmeException($"SciFactRerankingOptions.Retrieve must be positive, got {Retrieve}.");
        if (MaxNegatives < 1) throw new UllmeException($"SciFactRerankingOptions.MaxNegatives must be positive, got {MaxNegatives}.");
        if (MaxQueries is < 1) throw new UllmeException($"SciFactRerankingOptions.MaxQueries must be positive, got {MaxQueries}.");
        if (!(K1 >= 0) || !(B >= 0 && B <= 1)) throw new UllmeException($"SciFactRerankingOptions: BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1 {K1}, b {B}).");
    }
}

/// <summary>
/// A reranking set (MTEB's Reranking task type) built from SciFact: each claim is a query; its positives are the
/// abstracts it cites (<c>cited_doc_ids</c>, BEIR's qrels), its negatives the abstracts a lexical retriever ranks
/// highest for it that it does not cite (hard negatives: they share its words). Construction, deterministic:
/// <list type="number">
/// <item>Documents = title + " " + abstract sentences (as MTEB embeds SciFact), from <c>corpus_train.csv</c>.</item>
/// <item>BM25 (k1 1.2, b 0.75, Lucene's idf ln(1 + (N − df + 0.5)/(df + 0.5))) over lower-cased alphanumeric tokens
/// ranks all documents for the claim; ties by doc_id order in the file.</item>
/// <item>Of the top <see cref="SciFactRerankingOptions.Retrieve"/>, the documents not cited are the negatives (at most
/// <see cref="SciFactRerankingOptions.MaxNegatives"/>, best BM25 first). Cited documents missing from the corpus are
/// dropped; claims left without a positive are skipped.</item>
/// </list>
/// Candidates are stored positives first; the reranking metrics (MAP, MRR@10) do not depend on the order except
/// for ties.
/// </summary>
public static class SciFactReranking
{
    /// <summary>Builds the set from a SciFact CSV folder (corpus_train.csv + the claims file).</summary>
    public static List<RerankingSample> Build(string folder, SciFactRerankingOptions? options = null)
    {
        options ??= new SciFactRerankingOptions();
        options.Validate();
        string corpusPath = DataFiles.FindFile(folder, "corpus_train.csv") ?? DataFiles.FindFile(folder, "corpus.csv")
            ?? throw new UllmeException($"SciFact reranking: file not found: {Path.Combine(folder, "corpus_train.csv")}");
        string claimsPath = DataFiles.FindFile(folder, options.ClaimsFile)
            ?? throw new UllmeException($"SciFact reranking: file not found: {Path.Combine(folder, options.ClaimsFile)}");
        var corpus = SciFactCsvFormat.ReadCorpus(corpusPath);
        var claims = ReadClaims(claimsPath);
        return Build(corpus, claims, options);
    }

    /// <summary>Builds the set from a corpus and (claim, cited doc ids) pairs.</summary>
    public static List<RerankingSample> Build(IReadOnlyList<CorpusDocument> corpus, IReadOnlyList<(string Claim, IReadOnlyList<string> Cited)> claims,
        SciFactRerankingOptions? options = null)
    {
        options ??= new SciFactRerankingOptions();
        options.Validate();
        var bm25 = new Bm25Index(corpus.Select(d => d.EmbeddingText).ToArray(), options.K1, options.B);
        var byId = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < corpus.Count; i++) byId[corpus[i].Id] = i;
        var samples = new List<RerankingSample>();
        foreach (var (claim, cited) in claims)
        {
            if (options.MaxQueries is int max && samples.Count >= max) break;
            var positives = cited.Where(byId.ContainsKey).Distinct().Select(id => corpus[byId[id]].EmbeddingText).ToList();
            if (positives.Count == 0) continue;
            var citedSet = cited.ToHashSet(StringComparer.Ordinal);
            var negatives = bm25.Top(claim, options.Retrieve)
                .Where(i => !citedSet.Contains(corpus[i].Id))
                .Take(options.MaxNegatives)
                .Select(i => corpus[i].EmbeddingText)
                .ToList();
            samples.Add(new RerankingSample(claim, positives, negatives));
        }
        if (samples.Count == 0) throw new UllmeException("SciFact reranking: no claim has a cited document in the corpus.");
        return samples;
    }

    /// <summary>Claims in file order with their cited doc ids (one entry per claim id).</summary>
    public static List<(string Claim, IReadOnlyList<string> Cited)> ReadClaims(string path)
    {
        var order = new List<string>();
        var byId = new Dictionary<string, (string Claim, List<string> Cited)>(StringComparer.Ordinal);
        foreach (var (qid, claim, docs) in SciFactCsvFormat.ReadClaimRows(path))
        {
            if (!byId.TryGetValue(qid, out var entry)) { byId[qid] = entry = (claim, []); order.Add(qid); }
            foreach (long d in docs)
            {
                string s = d.ToString(CultureInfo.InvariantCulture);
                if (!entry.Cited.Contains(s)) entry.Cited.Add(s);
            }
        }
        return order.Select(q => (byId[q].Claim, (IReadOnlyList<string>)byId[q].Cited)).ToList();
    }

    /// <summary>Writes samples as MTEB reranking JSONL (<c>{"query", "positive": [...], "negative": [...]}</c>),
    /// readable by <see cref="RerankingFormat.Read"/> and <c>ullme eval --tasks reranking:&lt;file&gt;</c>.</summary>
    public static void WriteJsonl(string path, IEnumerable<RerankingSample> samples)
    {
        using var writer = new StreamWriter(path, false, new UTF8Encoding(false));
        foreach (var s in samples)
            writer.Write(JsonSerializer.Serialize(new { query = s.Query, positive = s.Positives, negative = s.Negatives }) + "\n");
    }
}

/// <summary>Okapi BM25 over lower-cased alphanumeric tokens (the lexical retriever of <see cref="SciFactReranking"/>).</summary>
internal sealed class Bm25Index
{
    private readonly Dictionary<string, List<(int Doc, int Tf)>> _postings = new(StringComparer.Ordinal);
    private readonly int[] _lengths;
    private readonly double _avgLength;
    private readonly double _k1, _b;

    public Bm25Index(IReadOnlyList<string> documents, double k1 = 1.2, double b = 0.75)
    {
        _k1 = k1;
        _b = b;
        _lengths = new int[documents.Count];
        for (int d = 0; d < documents.Count; d++)
        {
            var tokens = Tokenize(documents[d]);
            _lengths[d] = tokens.Count;
            foreach (var g in tokens.GroupBy(t => t, StringComparer.Ordinal))
            {
                if (!_postings.TryGetValue(g.Key, out var list)) _postings[g.Key] = list = [];
                list.Add((d, g.Count()));
            }
        }
        _avgLength = documents.Count == 0 ? 0 : _lengths.Average();
    }

    public int Count => _lengths.Length;

    /// <summary>BM25 score of every document for the query (a query term counts once per occurrence).</summary>
    public double[] Scores(string query)
    {
        var scores = new double[_lengths.Length];
        int n = _lengths.Length;
        foreach (var term in Tokenize(query))
        {
            if (!_postings.TryGetValue(term, out var list)) continue;
            double idf = Math.Log(1 + (n - list.Count + 0.5) / (list.Count + 0.5));
            foreach (var (doc, tf) in list)
            {
                double norm = _k1 * (1 - _b + _b * _lengths[doc] / _avgLength);
                scores[doc] += idf * tf * (_k1 + 1) / (tf + norm);
            }
        }
        return scores;
    }

    /// <summary>Indices of the <paramref name="k"/> best documents, best first (ties: lower index first).</summary>
    public int[] Top(string query, int k)
    {
        var s = Scores(query);
        return Enumerable.Range(0, s.Length).OrderByDescending(i => s[i]).ThenBy(i => i).Take(k).ToArray();
    }

    /// <summary>Lower-cased runs of letters and digits.</summary>
    public static List<string> Tokenize(string text)
    {
        var tokens = new List<string>();
        var sb = new StringBuilder();
        foreach (char c in text)
        {
            if (char.IsLetterOrDigit(c)) sb.Append(char.ToLowerInvariant(c));
            else if (sb.Length > 0) { tokens.Add(sb.ToString()); sb.Clear(); }
        }
        if (sb.Length > 0) tokens.Add(sb.ToString());
        return tokens;
    }
}
