namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// Microsoft Research Paraphrase Corpus (<c>msr_paraphrase_train.txt</c>, <c>msr_paraphrase_test.txt</c>):
/// tab-separated with a header <c>Quality, #1 ID, #2 ID, #1 String, #2 String</c> (the file starts with a BOM,
/// skipped); Quality 1 = paraphrase. Quotes are part of the text.
/// </summary>
public static class MrpcFormat
{
    public static IReadOnlyList<(string File, string Split)> Files { get; } =
        [("msr_paraphrase_train.txt", "train"), ("msr_paraphrase_test.txt", "test")];

    public static List<LabeledPair> Read(string path)
    {
        var pairs = new List<LabeledPair>();
        bool header = true;
        int q = 0, s1 = 3, s2 = 4;
        foreach (var (line, f) in DataFiles.ReadTsv(path))
        {
            if (header)
            {
                header = false;
                q = Array.IndexOf(f, "Quality");
                s1 = Array.IndexOf(f, "#1 String");
                s2 = Array.IndexOf(f, "#2 String");
                if (q < 0 || s1 < 0 || s2 < 0)
                    throw DataFiles.Error(path, line, "header must name the columns Quality, #1 String and #2 String");
                continue;
            }
            int need = Math.Max(q, Math.Max(s1, s2)) + 1;
            if (f.Length < need) throw DataFiles.Error(path, line, $"expected at least {need} tab-separated fields, found {f.Length}");
            int label = f[q].Trim() switch
            {
                "1" => 1,
                "0" => 0,
                var other => throw DataFiles.Error(path, line, $"Quality '{other}' must be 0 or 1"),
            };
            pairs.Add(new LabeledPair(f[s1], f[s2], label));
        }
        if (header) throw new UllmeException($"{path}: empty file (expected a header line)");
        if (pairs.Count == 0) throw new UllmeException($"{path}: no sentence pairs");
        return pairs;
    }
}
