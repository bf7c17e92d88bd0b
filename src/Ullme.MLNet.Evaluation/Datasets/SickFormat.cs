namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// SICK files (<c>SICK_train.txt</c>, <c>SICK_trial.txt</c>, <c>SICK_test_annotated.txt</c>): tab-separated with a
/// header naming <c>sentence_A</c>, <c>sentence_B</c> and <c>relatedness_score</c> (1-5); columns are found by name.
/// </summary>
public static class SickFormat
{
    public static IReadOnlyList<(string File, string Split)> Files { get; } =
        [("SICK_train.txt", "train"), ("SICK_trial.txt", "validation"), ("SICK_test_annotated.txt", "test")];

    public static List<StsPair> Read(string path)
    {
        var pairs = new List<StsPair>();
        int a = -1, b = -1, s = -1;
        bool header = true;
        foreach (var (line, f) in DataFiles.ReadTsv(path))
        {
            if (header)
            {
                a = Array.IndexOf(f, "sentence_A");
                b = Array.IndexOf(f, "sentence_B");
                s = Array.IndexOf(f, "relatedness_score");
                if (a < 0 || b < 0 || s < 0)
                    throw DataFiles.Error(path, line, "header must name the columns sentence_A, sentence_B and relatedness_score");
                header = false;
                continue;
            }
            int need = Math.Max(a, Math.Max(b, s)) + 1;
            if (f.Length < need) throw DataFiles.Error(path, line, $"expected at least {need} tab-separated fields, found {f.Length}");
            pairs.Add(new StsPair(f[a], f[b], DataFiles.ParseScore(path, line, f[s], "relatedness_score")));
        }
        if (header) throw new UllmeException($"{path}: empty file (expected a header line)");
        if (pairs.Count == 0) throw new UllmeException($"{path}: no sentence pairs");
        return pairs;
    }
}
