using Microsoft.ML;
using Ullme.MLNet;

namespace Ullme.MLNet.Samples;

public sealed class IntentRow
{
    public string Text { get; set; } = "";
    public string Label { get; set; } = "";
}

public sealed class PairRow
{
    public string Text1 { get; set; } = "";
    public string Text2 { get; set; } = "";
    public float Label { get; set; }
}

/// <summary>Reads the shared datasets (never copied into the repository): ULLME_ASSETS, else ../shared next to the repo.</summary>
public static class SampleData
{
    public static string AssetsRoot(string? explicitRoot = null)
    {
        string? root = explicitRoot ?? Environment.GetEnvironmentVariable("ULLME_ASSETS");
        if (string.IsNullOrEmpty(root))
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Ullme.MLNet.sln"))) dir = dir.Parent;
            root = Path.Combine(dir?.FullName ?? Directory.GetCurrentDirectory(), "..", "shared");
        }
        root = Path.GetFullPath(root);
        if (!Directory.Exists(root)) throw new UllmeException($"assets folder '{root}' not found (set ULLME_ASSETS)");
        return root;
    }

    /// <summary>Banking77 intents: the first <paramref name="perClass"/> texts of the first <paramref name="classes"/>
    /// categories in file order (a small, deterministic slice).</summary>
    public static List<IntentRow> Banking77(MLContext ml, string assets, int classes, int perClass)
    {
        string path = Path.Combine(assets, "data", "banking77", "train.csv");
        var view = ml.Data.LoadFromTextFile<IntentCsv>(path, separatorChar: ',', hasHeader: true, allowQuoting: true);
        var rows = ml.Data.CreateEnumerable<IntentCsv>(view, reuseRowObject: false);
        var order = new List<string>();
        var byClass = new Dictionary<string, List<IntentRow>>();
        foreach (var r in rows)
        {
            if (!byClass.TryGetValue(r.Category, out var list))
            {
                if (order.Count == classes) continue;
                order.Add(r.Category);
                byClass[r.Category] = list = [];
            }
            if (list.Count < perClass) list.Add(new IntentRow { Text = r.Text, Label = r.Category });
        }
        // Interleave classes so that any prefix or split is balanced.
        var result = new List<IntentRow>();
        for (int i = 0; i < perClass; i++)
            foreach (var c in order)
                if (i < byClass[c].Count) result.Add(byClass[c][i]);
        return result;
    }

    /// <summary>STS-B pairs (tab-separated; fields 5-7 = score 0-5, sentence 1, sentence 2), score scaled to 0-1.</summary>
    public static List<PairRow> StsB(string assets, string file, int count)
    {
        var result = new List<PairRow>();
        foreach (string line in File.ReadLines(Path.Combine(assets, "data", "stsbenchmark", file)))
        {
            var f = line.Split('\t');
            if (f.Length < 7) continue;
            result.Add(new PairRow { Label = float.Parse(f[4], System.Globalization.CultureInfo.InvariantCulture) / 5f, Text1 = f[5], Text2 = f[6] });
            if (result.Count == count) break;
        }
        return result;
    }

    private sealed class IntentCsv
    {
        [Microsoft.ML.Data.LoadColumn(0)] public string Text { get; set; } = "";
        [Microsoft.ML.Data.LoadColumn(1)] public string Category { get; set; } = "";
    }
}
