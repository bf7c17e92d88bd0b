using Microsoft.ML;
using Microsoft.ML.Data;
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
        var order = new List<string>();
        var byClass = new Dictionary<string, List<IntentRow>>();
        foreach (var r in ReadIntentCsv(ml, path))
        {
            if (!byClass.TryGetValue(r.Label, out var list))
            {
                if (order.Count == classes) continue;
                order.Add(r.Label);
                byClass[r.Label] = list = [];
            }
            if (list.Count < perClass) list.Add(r);
        }
        // Interleave classes so that any prefix or split is balanced.
        var result = new List<IntentRow>();
        for (int i = 0; i < perClass; i++)
            foreach (var c in order)
                if (i < byClass[c].Count) result.Add(byClass[c][i]);
        return result;
    }

    /// <summary>
    /// A <c>text,category</c> CSV such as Banking77's train.csv, read by ML.NET's text loader. Its quoted fields may
    /// span lines, so <c>ReadMultilines</c> must be on: with <c>allowQuoting</c> alone, ML.NET reads each physical
    /// line as a row and Banking77 comes out as 10,014 rows with 78 labels (13 empty) instead of 10,003 and 77.
    /// </summary>
    public static IDataView LoadIntentCsv(MLContext ml, string path) =>
        ml.Data.LoadFromTextFile<IntentCsv>(path, new TextLoader.Options
        {
            Separators = [','], HasHeader = true, AllowQuoting = true, ReadMultilines = true,
        });

    /// <summary>The rows of <see cref="LoadIntentCsv"/>, in file order.</summary>
    public static List<IntentRow> ReadIntentCsv(MLContext ml, string path) =>
        ml.Data.CreateEnumerable<IntentCsv>(LoadIntentCsv(ml, path), reuseRowObject: false)
            .Select(r => new IntentRow { Text = r.Text, Label = r.Category }).ToList();

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
        [LoadColumn(0)] public string Text { get; set; } = "";
        [LoadColumn(1)] public string Category { get; set; } = "";
    }
}
