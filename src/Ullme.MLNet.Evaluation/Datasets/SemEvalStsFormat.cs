namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// SemEval STS 2012-2016 files: for each sub-set X, <c>STS.input.X.txt</c> (two tab-separated sentences a line; 2016
/// names it <c>STS2016.input.X.txt</c> and may add source columns, ignored) and the gold file with <c>.gs.</c> in
/// place of <c>.input.</c> (one score a line, 0-5; an empty line = an unscored pair, skipped as MTEB does). A year's
/// sub-sets are concatenated in file-name order into one set, as in MTEB's STS12-STS16.
/// </summary>
public static class SemEvalStsFormat
{
    /// <summary>The input files of a folder, ordered by name.</summary>
    public static string[] InputFiles(string folder) =>
        Directory.Exists(folder)
            ? Directory.GetFiles(folder, "*.input.*.txt").Order(StringComparer.Ordinal).ToArray()
            : [];

    public static List<StsPair> ReadFolder(string folder)
    {
        var inputs = InputFiles(folder);
        if (inputs.Length == 0) throw new UllmeException($"{folder}: no SemEval STS input files (*.input.*.txt)");
        var pairs = new List<StsPair>();
        foreach (var input in inputs) pairs.AddRange(ReadSubset(input));
        return pairs;
    }

    /// <summary>One sub-set: the input file and its gold file.</summary>
    public static List<StsPair> ReadSubset(string inputPath)
    {
        string name = Path.GetFileName(inputPath);
        int at = name.IndexOf(".input.", StringComparison.Ordinal);
        if (at < 0) throw new UllmeException($"{inputPath}: not a SemEval input file (name must contain '.input.')");
        string goldPath = Path.Combine(Path.GetDirectoryName(inputPath)!, name[..at] + ".gs." + name[(at + ".input.".Length)..]);
        DataFiles.RequireFile(goldPath, $"gold scores for {name}");

        var inputLines = File.ReadAllLines(inputPath, System.Text.Encoding.UTF8);
        var goldLines = File.ReadAllLines(goldPath, System.Text.Encoding.UTF8);
        // Line i of the gold file scores line i of the input file; an empty gold line is an unscored pair. SemEval
        // ships files whose last pairs are unscored (STS15 answers-forums: 6 trailing empty gold lines), so only the
        // input's trailing empty lines are dropped (they are not pairs): the gold file must have a line for each
        // input line, and any gold lines past the input's end must be empty.
        int inputCount = TrimTrailingEmpty(inputLines);
        int lastScored = TrimTrailingEmpty(goldLines);
        if (goldLines.Length < inputCount || lastScored > inputCount)
            throw new UllmeException($"{goldPath}: has {goldLines.Length} lines ({lastScored} up to its last score) but {inputPath} has {inputCount}; they must pair up line by line (an empty gold line = an unscored pair)");

        var pairs = new List<StsPair>();
        for (int i = 0; i < inputCount; i++)
        {
            string gold = goldLines[i].Trim();
            if (gold.Length == 0) continue; // unscored pair
            // Gold files may carry extra tab-separated fields after the score.
            string scoreText = gold.Split('\t')[0];
            double score = DataFiles.ParseScore(goldPath, i + 1, scoreText, "gold score");
            var f = inputLines[i].TrimEnd('\r').Split('\t');
            if (f.Length < 2) throw DataFiles.Error(inputPath, i + 1, $"expected two tab-separated sentences, found {f.Length} field(s)");
            pairs.Add(new StsPair(f[0], f[1], score));
        }
        return pairs;
    }

    private static int TrimTrailingEmpty(string[] lines)
    {
        int n = lines.Length;
        while (n > 0 && lines[n - 1].Trim().Length == 0) n--;
        return n;
    }
}
