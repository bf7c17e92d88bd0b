namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// Reranking samples as JSON Lines, MTEB's original reranking layout: <c>{"query": "...", "positive": [...],
/// "negative": [...]}</c>; <c>positives</c>/<c>negatives</c> and single strings are accepted too (so the SNLI
/// triplets file, <c>{query, positive, negatives}</c>, reads as is).
/// </summary>
public static class RerankingFormat
{
    public static List<RerankingSample> Read(string path)
    {
        var samples = new List<RerankingSample>();
        foreach (var (line, row) in DataFiles.ReadJsonl(path))
        {
            var query = TableFormat.StringList(path, line, row, ["query"], "query", required: true);
            if (query.Count != 1) throw DataFiles.Error(path, line, "'query' must be one string");
            var pos = TableFormat.StringList(path, line, row, ["positive", "positives", "pos"], "positive", required: true);
            var neg = TableFormat.StringList(path, line, row, ["negative", "negatives", "neg"], "negative", required: true);
            samples.Add(new RerankingSample(query[0], pos, neg));
        }
        if (samples.Count == 0) throw new UllmeException($"{path}: no reranking samples");
        return samples;
    }
}
