using System.Text.Json;

namespace Ullme.MLNet.Training;

/// <summary>One training triple: a query, its relevant passage and zero or more hard negatives, with an
/// optional task instruction for the query.</summary>
public sealed record TrainingExample(string Query, string Positive, IReadOnlyList<string> Negatives, string? Instruction = null)
{
    /// <summary>Further positives of the query besides <see cref="Positive"/> (JSONL <c>"positives": [...]</c>). The
    /// contrastive term trains every one of them as a target (<see cref="Losses.ContrastiveLoss.ComputeMultiPositive"/>);
    /// the generation terms use <see cref="Positive"/>. Empty by default.</summary>
    public IReadOnlyList<string> ExtraPositives { get; init; } = [];

    /// <summary>A query with no hard negatives.</summary>
    public TrainingExample(string query, string positive) : this(query, positive, []) { }
}

/// <summary>Reads training data.</summary>
public static class TrainingData
{
    /// <summary>
    /// Reads JSON Lines: one object per line with <c>"query"</c> and <c>"positive"</c> (strings) — or, for several
    /// positives, <c>"positives"</c> (a non-empty array of strings: the first is <see cref="TrainingExample.Positive"/>,
    /// the rest <see cref="TrainingExample.ExtraPositives"/>) —
    /// <c>"negatives"</c> (array of strings; optional, may be empty) and <c>"instruction"</c> (string; optional).
    /// Blank lines are skipped. Any other problem is an error naming the file and the line.
    /// </summary>
    public static IReadOnlyList<TrainingExample> LoadJsonl(string path)
    {
        if (!File.Exists(path)) throw new UllmeException($"Training data file '{path}' does not exist.");
        var examples = new List<TrainingExample>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            examples.Add(ParseLine(line, path, lineNumber));
        }
        if (examples.Count == 0) throw new UllmeException($"Training data file '{path}' has no examples.");
        return examples;
    }

    /// <summary>Parses one JSONL line; <paramref name="path"/> and <paramref name="lineNumber"/> go into errors.</summary>
    public static TrainingExample ParseLine(string line, string path, int lineNumber)
    {
        string where = $"'{path}' line {lineNumber}";
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw new UllmeException($"{where}: not valid JSON ({e.Message}).", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new UllmeException($"{where}: expected a JSON object with \"query\", \"positive\" and \"negatives\".");
            string query = RequiredString(root, "query", where);
            bool hasList = root.TryGetProperty("positives", out var list) && list.ValueKind != JsonValueKind.Null;
            bool hasOne = root.TryGetProperty("positive", out var one) && one.ValueKind != JsonValueKind.Null;
            if (hasList && hasOne) throw new UllmeException($"{where}: give \"positive\" or \"positives\", not both.");
            if (!hasList && !hasOne) throw new UllmeException($"{where}: missing \"positive\" (or \"positives\": [...]).");
            var positives = hasList ? StringArray(list, "positives", where) : [RequiredString(root, "positive", where)];
            if (positives.Count == 0) throw new UllmeException($"{where}: \"positives\" is empty.");
            string positive = positives[0];
            var negatives = root.TryGetProperty("negatives", out var neg) && neg.ValueKind != JsonValueKind.Null
                ? StringArray(neg, "negatives", where)
                : [];
            string? instruction = null;
            if (root.TryGetProperty("instruction", out var ins) && ins.ValueKind != JsonValueKind.Null)
            {
                if (ins.ValueKind != JsonValueKind.String)
                    throw new UllmeException($"{where}: \"instruction\" must be a string, got {ins.ValueKind}.");
                instruction = ins.GetString();
            }
            return new TrainingExample(query, positive, negatives, string.IsNullOrEmpty(instruction) ? null : instruction) { ExtraPositives = positives.Skip(1).ToList() };
        }
    }

    /// <summary>
    /// Plain texts as training examples for the unsupervised strategies (<see cref="TrainingStrategy.Mntp"/>,
    /// <see cref="TrainingStrategy.SimCse"/>): each text is its own query and positive, with no negatives.
    /// </summary>
    public static IReadOnlyList<TrainingExample> FromTexts(IEnumerable<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var examples = new List<TrainingExample>();
        foreach (var text in texts)
        {
            if (string.IsNullOrEmpty(text)) throw new UllmeException($"Text {examples.Count} is empty; unsupervised training needs non-empty texts.");
            examples.Add(new TrainingExample(text, text));
        }
        if (examples.Count == 0) throw new UllmeException("No texts to train on.");
        return examples;
    }

    /// <summary>
    /// Reads plain texts for <see cref="FromTexts"/>: a <c>.jsonl</c> file holds one object with a <c>"text"</c> string a
    /// line; any other file one text a line (UTF-8, surrounding white space trimmed). Blank lines are skipped; other
    /// problems are errors naming the file and line.
    /// </summary>
    public static IReadOnlyList<string> LoadTexts(string path)
    {
        if (!File.Exists(path)) throw new UllmeException($"Text file '{path}' does not exist.");
        bool jsonl = path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase);
        var texts = new List<string>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            if (!jsonl)
            {
                texts.Add(line.Trim());
                continue;
            }
            string where = $"'{path}' line {lineNumber}";
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new UllmeException($"{where}: expected a JSON object with a \"text\" string.");
                if (!doc.RootElement.TryGetProperty("text", out _) && doc.RootElement.TryGetProperty("query", out _))
                    throw new UllmeException($"{where}: this is a training triple ({{\"query\", ...}}), but plain-text training (MNTP, SimCSE) reads one {{\"text\": ...}} a line or a text file; train triples with the contrastive strategies.");
                texts.Add(RequiredString(doc.RootElement, "text", where));
            }
            catch (JsonException e)
            {
                throw new UllmeException($"{where}: not valid JSON ({e.Message}).", e);
            }
        }
        if (texts.Count == 0) throw new UllmeException($"Text file '{path}' has no texts.");
        return texts;
    }

    private static List<string> StringArray(JsonElement value, string name, string where)
    {
        if (value.ValueKind != JsonValueKind.Array)
            throw new UllmeException($"{where}: \"{name}\" must be an array of strings, got {value.ValueKind}.");
        var texts = new List<string>();
        int i = 0;
        foreach (var item in value.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String)
                throw new UllmeException($"{where}: \"{name}\"[{i}] must be a string, got {item.ValueKind}.");
            string text = item.GetString()!;
            if (text.Length == 0) throw new UllmeException($"{where}: \"{name}\"[{i}] is empty.");
            texts.Add(text);
            i++;
        }
        return texts;
    }

    private static string RequiredString(JsonElement root, string name, string where)
    {
        if (!root.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            throw new UllmeException($"{where}: missing \"{name}\".");
        if (value.ValueKind != JsonValueKind.String)
            throw new UllmeException($"{where}: \"{name}\" must be a string, got {value.ValueKind}.");
        string text = value.GetString()!;
        if (text.Length == 0) throw new UllmeException($"{where}: \"{name}\" is empty.");
        return text;
    }
}
