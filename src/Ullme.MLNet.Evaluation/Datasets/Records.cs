namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>An STS pair with its gold similarity.</summary>
public readonly record struct StsPair(string Text1, string Text2, double Score);

/// <summary>A text with its class label (classification, clustering).</summary>
public readonly record struct LabeledText(string Text, string Label);

/// <summary>A text pair with a binary label (1 = paraphrase / duplicate / entailment).</summary>
public readonly record struct LabeledPair(string Text1, string Text2, int Label);

/// <summary>A retrieval corpus document; MTEB embeds <c>(title + " " + text).Trim()</c>, or the text alone.</summary>
public readonly record struct CorpusDocument(string Id, string Title, string Text)
{
    public string EmbeddingText => Title.Length > 0 ? (Title + " " + Text).Trim() : Text.Trim();
}

/// <summary>A retrieval query.</summary>
public readonly record struct RetrievalQuery(string Id, string Text);

/// <summary>A reranking query with its candidate documents.</summary>
public sealed record RerankingSample(string Query, IReadOnlyList<string> Positives, IReadOnlyList<string> Negatives);

/// <summary>A retrieval data set: corpus, queries and relevance judgments per split (query id -> doc id -> grade).</summary>
public sealed record RetrievalData(
    IReadOnlyList<CorpusDocument> Corpus,
    IReadOnlyList<RetrievalQuery> Queries,
    IReadOnlyDictionary<string, Dictionary<string, Dictionary<string, int>>> QrelsBySplit);
