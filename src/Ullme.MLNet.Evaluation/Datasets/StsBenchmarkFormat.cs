namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// STS Benchmark files (<c>sts-train.csv</c>, <c>sts-dev.csv</c>, <c>sts-test.csv</c>): tab-separated, no quoting,
/// fields genre, file, year, id, score (0-5), sentence 1, sentence 2; some lines carry extra trailing fields
/// (sources), which are ignored. Quotes are part of the text.
/// </summary>
public static class StsBenchmarkFormat
{
    /// <summary>File name -> MTEB split name.</summary>
    public static IReadOnlyList<(string File, string Split)> Files { get; } =
        [("sts-train.csv", "train"), ("sts-dev.csv", "validation"), ("sts-test.csv", "test")];

    public static List<StsPair> Read(string path)
    {
        var pairs = new List<StsPair>();
        foreach (var (line, f) in DataFiles.ReadTsv(path))
        {
            if (f.Length < 7)
                throw DataFiles.Error(path, line, $"expected at least 7 tab-separated fields (genre, file, year, id, score, sentence1, sentence2), found {f.Length}");
            double score = DataFiles.ParseScore(path, line, f[4], "score (field 5)");
            pairs.Add(new StsPair(f[5], f[6], score));
        }
        if (pairs.Count == 0) throw new UllmeException($"{path}: no sentence pairs");
        return pairs;
    }
}
