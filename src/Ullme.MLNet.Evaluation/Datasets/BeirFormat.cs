namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// The BEIR layout every MTEB retrieval set descends from: <c>corpus.jsonl</c> (<c>_id</c>, <c>title</c>,
/// <c>text</c>), <c>queries.jsonl</c> (<c>_id</c>, <c>text</c>) and <c>qrels/&lt;split&gt;.tsv</c> (header
/// <c>query-id, corpus-id, score</c>; one judgment a line). Each qrels file is a split, named after the file
/// (BEIR uses train, dev, test).
/// </summary>
public static class BeirFormat
{
    public static bool IsBeirFolder(string folder) =>
        File.Exists(Path.Combine(folder, "corpus.jsonl")) && File.Exists(Path.Combine(folder, "queries.jsonl"))
        && Directory.Exists(Path.Combine(folder, "qrels"));

    public static RetrievalData Read(string folder)
    {
        string corpusPath = Path.Combine(folder, "corpus.jsonl");
        string queriesPath = Path.Combine(folder, "queries.jsonl");
        string qrelsFolder = Path.Combine(folder, "qrels");
        DataFiles.RequireFile(corpusPath, "BEIR corpus");
        DataFiles.RequireFile(queriesPath, "BEIR queries");
        if (!Directory.Exists(qrelsFolder)) throw new UllmeException($"BEIR relevance judgments: folder not found: {qrelsFolder}");

        var corpus = new List<CorpusDocument>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (line, row) in DataFiles.ReadJsonl(corpusPath))
        {
            string id = DataFiles.JsonText(row, "_id") ?? throw DataFiles.Error(corpusPath, line, "missing '_id'");
            if (!seen.Add(id)) throw DataFiles.Error(corpusPath, line, $"duplicate document id '{id}'");
            string text = DataFiles.JsonText(row, "text") ?? throw DataFiles.Error(corpusPath, line, "missing 'text'");
            corpus.Add(new CorpusDocument(id, DataFiles.JsonText(row, "title") ?? "", text));
        }
        if (corpus.Count == 0) throw new UllmeException($"{corpusPath}: empty corpus");

        var queries = new List<RetrievalQuery>();
        seen.Clear();
        foreach (var (line, row) in DataFiles.ReadJsonl(queriesPath))
        {
            string id = DataFiles.JsonText(row, "_id") ?? throw DataFiles.Error(queriesPath, line, "missing '_id'");
            if (!seen.Add(id)) throw DataFiles.Error(queriesPath, line, $"duplicate query id '{id}'");
            queries.Add(new RetrievalQuery(id, DataFiles.JsonText(row, "text") ?? throw DataFiles.Error(queriesPath, line, "missing 'text'")));
        }

        var bySplit = new Dictionary<string, Dictionary<string, Dictionary<string, int>>>();
        foreach (var file in Directory.GetFiles(qrelsFolder, "*.tsv").Order(StringComparer.Ordinal))
            bySplit[Path.GetFileNameWithoutExtension(file)] = ReadQrels(file);
        if (bySplit.Count == 0) throw new UllmeException($"{qrelsFolder}: no qrels files (<split>.tsv)");
        return new RetrievalData(corpus, queries, bySplit);
    }

    /// <summary>query id -> document id -> grade. A first line whose score field is not a number is the header.</summary>
    public static Dictionary<string, Dictionary<string, int>> ReadQrels(string path)
    {
        var qrels = new Dictionary<string, Dictionary<string, int>>(StringComparer.Ordinal);
        bool first = true;
        foreach (var (line, f) in DataFiles.ReadTsv(path))
        {
            bool isFirst = first;
            first = false;
            if (f.Length < 3) throw DataFiles.Error(path, line, $"expected query-id, corpus-id and score separated by tabs, found {f.Length} field(s)");
            if (!int.TryParse(f[^1].Trim(), System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int grade))
            {
                if (isFirst) continue; // header
                if (double.TryParse(f[^1].Trim(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double d) && d == Math.Floor(d))
                    grade = (int)d;
                else throw DataFiles.Error(path, line, $"score '{f[^1]}' is not an integer grade");
            }
            // BEIR: query-id, corpus-id, score; TREC style (query-id, 0, corpus-id, score) is accepted too.
            string q = f[0].Trim(), d2 = (f.Length >= 4 ? f[2] : f[1]).Trim();
            if (!qrels.TryGetValue(q, out var docs)) qrels[q] = docs = new Dictionary<string, int>(StringComparer.Ordinal);
            docs[d2] = grade;
        }
        return qrels;
    }
}
