using System.Text.Json.Nodes;

namespace Ullme.MLNet.Evaluation.Datasets;

/// <summary>
/// Generic tables for user data sets: <c>.csv</c> (RFC 4180, header row), <c>.tsv</c> (tab-separated, header row,
/// no quoting) or <c>.jsonl</c> (one object a line). Columns are found by name from a list of accepted aliases, so
/// an export of an MTEB/HF data set (sentence1, sentence2, score / text, label) reads as is.
/// A folder holds one file per split, named after the split (train, validation|dev, test).
/// </summary>
internal static class TableFormat
{
    public static readonly string[] Extensions = [".csv", ".tsv", ".jsonl"];

    public static readonly string[] Text1Columns = ["sentence1", "text1", "s1", "sentence_A", "sentence_a", "sent1", "query"];
    public static readonly string[] Text2Columns = ["sentence2", "text2", "s2", "sentence_B", "sentence_b", "sent2", "document"];
    public static readonly string[] ScoreColumns = ["score", "similarity", "relatedness_score", "label", "gold"];
    public static readonly string[] TextColumns = ["text", "sentence", "sentences", "content", "query"];
    public static readonly string[] LabelColumns = ["label", "labels", "category", "class", "intent", "label_text"];
    public static readonly string[] PairLabelColumns = ["label", "labels", "is_duplicate", "quality", "is_paraphrase"];

    /// <summary>Rows as column -> value; the line number points into the file.</summary>
    public static IEnumerable<(int Line, IReadOnlyDictionary<string, string?> Row)> ReadRows(string path)
    {
        string ext = Path.GetExtension(path).ToLowerInvariant();
        switch (ext)
        {
            case ".jsonl":
                foreach (var (line, o) in DataFiles.ReadJsonl(path))
                {
                    var row = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
                    foreach (var (k, _) in o) row[k] = DataFiles.JsonText(o, k);
                    yield return (line, row);
                }
                break;
            case ".csv":
            case ".tsv":
            {
                var records = ext == ".csv" ? DataFiles.ReadCsv(path) : DataFiles.ReadTsv(path);
                string[]? header = null;
                foreach (var (line, f) in records)
                {
                    if (header is null)
                    {
                        header = f.Select(h => h.Trim()).ToArray();
                        continue;
                    }
                    if (f.Length != header.Length)
                        throw DataFiles.Error(path, line, $"expected {header.Length} fields like the header, found {f.Length}");
                    var row = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
                    for (int i = 0; i < header.Length; i++) row[header[i]] = f[i];
                    yield return (line, row);
                }
                if (header is null) throw new UllmeException($"{path}: empty file (expected a header line)");
                break;
            }
            default:
                throw new UllmeException($"{path}: unsupported table format '{ext}' (use .csv, .tsv or .jsonl)");
        }
    }

    public static List<StsPair> ReadSts(string path) =>
        Read(path, (line, row) => new StsPair(
            Column(path, line, row, Text1Columns, "first sentence"),
            Column(path, line, row, Text2Columns, "second sentence"),
            DataFiles.ParseScore(path, line, Column(path, line, row, ScoreColumns, "score"), "score")));

    public static List<LabeledText> ReadLabeled(string path) =>
        Read(path, (line, row) => new LabeledText(
            Column(path, line, row, TextColumns, "text"),
            Column(path, line, row, LabelColumns, "label")));

    public static List<LabeledPair> ReadPairs(string path) =>
        Read(path, (line, row) =>
        {
            string label = Column(path, line, row, PairLabelColumns, "label").Trim();
            int value = label switch
            {
                "1" or "1.0" or "true" or "True" => 1,
                "0" or "0.0" or "false" or "False" => 0,
                _ => throw DataFiles.Error(path, line, $"pair label '{label}' must be 0 or 1"),
            };
            return new LabeledPair(Column(path, line, row, Text1Columns, "first sentence"),
                Column(path, line, row, Text2Columns, "second sentence"), value);
        });

    /// <summary>Split name of a table file from its name: train, validation (also dev/val), test; else null.</summary>
    public static string? SplitOf(string path) => Path.GetFileNameWithoutExtension(path).ToLowerInvariant() switch
    {
        "train" => "train",
        "validation" or "dev" or "val" => "validation",
        "test" => "test",
        _ => null,
    };

    /// <summary>
    /// The split files of a folder (<c>train|validation|dev|test</c> + a table extension), or, for a single file,
    /// that file under its split name ("test" when the name is not a split name).
    /// </summary>
    public static IReadOnlyList<(string Split, string Path)> SplitFiles(string path)
    {
        if (File.Exists(path)) return [(SplitOf(path) ?? "test", path)];
        if (!Directory.Exists(path)) throw new UllmeException($"data not found: {path}");
        var found = Directory.GetFiles(path)
            .Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()) && SplitOf(f) is not null)
            .Select(f => (Split: SplitOf(f)!, Path: f))
            .OrderBy(x => Array.IndexOf(["train", "validation", "test"], x.Split))
            .ToList();
        var dup = found.GroupBy(x => x.Split).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null)
            throw new UllmeException($"{path}: several files for split '{dup.Key}': {string.Join(", ", dup.Select(x => Path.GetFileName(x.Path)))}");
        if (found.Count == 0)
            throw new UllmeException($"{path}: no split files (expected train/validation/dev/test with extension .csv, .tsv or .jsonl)");
        return found;
    }

    private static List<T> Read<T>(string path, Func<int, IReadOnlyDictionary<string, string?>, T> make)
    {
        var list = new List<T>();
        foreach (var (line, row) in ReadRows(path)) list.Add(make(line, row));
        if (list.Count == 0) throw new UllmeException($"{path}: no rows");
        return list;
    }

    private static string Column(string path, int line, IReadOnlyDictionary<string, string?> row, string[] aliases, string what)
    {
        foreach (var a in aliases)
            if (row.TryGetValue(a, out var v))
                return v ?? throw DataFiles.Error(path, line, $"column '{a}' ({what}) is null");
        throw DataFiles.Error(path, line, $"no {what} column (accepted names: {string.Join(", ", aliases)})");
    }

    /// <summary>A JSON field as a list of strings (a string becomes a one-element list).</summary>
    internal static List<string> StringList(string path, int line, JsonObject row, string[] names, string what, bool required)
    {
        foreach (var n in names)
        {
            if (!row.TryGetPropertyValue(n, out var node)) continue;
            return node switch
            {
                null => [],
                JsonArray arr => arr.Select(x => x is JsonValue v && v.TryGetValue(out string? s) && s is not null
                    ? s
                    : throw DataFiles.Error(path, line, $"'{n}' must hold strings")).ToList(),
                JsonValue v when v.TryGetValue(out string? s) && s is not null => [s],
                _ => throw DataFiles.Error(path, line, $"'{n}' must be a string or a list of strings"),
            };
        }
        if (required) throw DataFiles.Error(path, line, $"no {what} field (accepted names: {string.Join(", ", names)})");
        return [];
    }
}
