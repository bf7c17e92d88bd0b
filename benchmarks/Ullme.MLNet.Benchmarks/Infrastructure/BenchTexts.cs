using Ullme.MLNet.Evaluation.Datasets;

namespace Ullme.MLNet.Benchmarks.Infrastructure;

/// <summary>
/// Benchmark texts, read at run time from the shared data folder (never copied into the repository):
/// short texts = STS-B sentences, long texts = SciFact abstracts. Without the folder, deterministic generated
/// English-like text of similar lengths is used and the report says so.
/// </summary>
public sealed class BenchTexts
{
    public string Source { get; }
    public IReadOnlyList<string> ShortTexts { get; }
    public IReadOnlyList<string> LongTexts { get; }

    private BenchTexts(string source, IReadOnlyList<string> shortTexts, IReadOnlyList<string> longTexts)
    {
        Source = source;
        ShortTexts = shortTexts;
        LongTexts = longTexts;
    }

    public static string AssetsRoot(string? explicitRoot)
    {
        if (!string.IsNullOrEmpty(explicitRoot)) return Path.GetFullPath(explicitRoot);
        string? env = Environment.GetEnvironmentVariable("ULLME_ASSETS");
        if (!string.IsNullOrEmpty(env)) return Path.GetFullPath(env);
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Ullme.MLNet.sln"))) dir = dir.Parent;
        return Path.GetFullPath(Path.Combine(dir?.FullName ?? Directory.GetCurrentDirectory(), "..", "shared"));
    }

    public static BenchTexts Load(string assetsRoot, int shortCount, int longCount)
    {
        string sts = Path.Combine(assetsRoot, "data", "stsbenchmark", "sts-train.csv");
        string scifact = Path.Combine(assetsRoot, "data", "scifact", "corpus_train.csv");
        if (File.Exists(sts) && File.Exists(scifact))
        {
            var shortTexts = new List<string>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (string line in File.ReadLines(sts))
            {
                var f = line.Split('\t');
                if (f.Length < 7) continue;
                foreach (string s in new[] { f[5], f[6] })
                    if (shortTexts.Count < shortCount && seen.Add(s)) shortTexts.Add(s);
                if (shortTexts.Count >= shortCount) break;
            }
            var longTexts = SciFactCsvFormat.ReadCorpus(scifact).Take(longCount).Select(d => d.Title + ". " + d.Text).ToList();
            return new BenchTexts($"STS-B sentences + SciFact abstracts from {assetsRoot}", shortTexts, longTexts);
        }
        return new BenchTexts("generated text (shared data folder not found)", Generate(shortCount, 8, 25, 1), Generate(longCount, 150, 300, 2));
    }

    private static readonly string[] Words =
    [
        "the", "a", "model", "cell", "protein", "study", "results", "man", "woman", "is", "playing", "guitar", "on", "with",
        "patients", "increased", "expression", "analysis", "we", "found", "that", "significant", "data", "of", "in",
        "dog", "running", "through", "field", "children", "treatment", "response", "levels", "were", "observed",
    ];

    private static List<string> Generate(int count, int minWords, int maxWords, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            int n = rng.Next(minWords, maxWords + 1);
            return string.Join(' ', Enumerable.Range(0, n).Select(_ => Words[rng.Next(Words.Length)])) + ".";
        }).ToList();
    }
}
