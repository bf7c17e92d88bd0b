using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Ullme.MLNet.Evaluation.Results;

/// <summary>
/// One task's result in MTEB's <c>TaskResult</c> layout:
/// <code>
/// { "dataset_revision": "...", "task_name": "STSBenchmark", "mteb_version": "...",
///   "scores": { "test": [ { "cosine_spearman": 0.82, ..., "main_score": 0.82, "hf_subset": "default",
///                           "languages": ["eng-Latn"] } ] },
///   "evaluation_time": 12.3, "kg_co2_emissions": null }
/// </code>
/// Written with two-space indentation and bare NaN / Infinity like Python's <c>json.dump</c>; read with them
/// tolerated, so files produced by MTEB itself load too.
/// </summary>
public sealed class TaskResult
{
    /// <summary>The MTEB result-layout version our files follow (the metric names and fields of MTEB 2.x).</summary>
    public const string DefaultMtebVersion = "2.0.0";

    public required string TaskName { get; init; }

    public string DatasetRevision { get; init; } = "no_revision_available";

    public string? MtebVersion { get; init; } = DefaultMtebVersion;

    /// <summary>Split name -> one entry per subset (one, "default", for our tasks).</summary>
    public OrderedDictionary<string, List<SplitScores>> Scores { get; } = new(StringComparer.Ordinal);

    /// <summary>Wall-clock seconds for the task, embedding included.</summary>
    public double? EvaluationTime { get; init; }

    public double? KgCo2Emissions { get; init; }

    /// <summary>Task type (not part of MTEB's file; known when produced by this library).</summary>
    public TaskType? TaskType { get; init; }

    /// <summary>The first subset's main score of a split.</summary>
    public double MainScore(string split) => Scores.TryGetValue(split, out var list) && list.Count > 0
        ? list[0].MainScore
        : throw new KeyNotFoundException($"task {TaskName} has no split '{split}'");

    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, SkipValidation = true }))
        {
            w.WriteStartObject();
            w.WriteString("dataset_revision", DatasetRevision);
            w.WriteString("task_name", TaskName);
            if (MtebVersion is null) w.WriteNull("mteb_version");
            else w.WriteString("mteb_version", MtebVersion);
            w.WriteStartObject("scores");
            foreach (var (split, entries) in Scores)
            {
                w.WriteStartArray(split);
                foreach (var s in entries)
                {
                    w.WriteStartObject();
                    foreach (var (name, value) in s.Metrics)
                    {
                        w.WritePropertyName(name);
                        WriteNumber(w, value);
                    }
                    foreach (var (name, node) in s.Details)
                    {
                        w.WritePropertyName(name);
                        WriteNode(w, node);
                    }
                    w.WritePropertyName("main_score");
                    WriteNumber(w, s.MainScore);
                    w.WriteString("hf_subset", s.HfSubset);
                    w.WriteStartArray("languages");
                    foreach (var l in s.Languages) w.WriteStringValue(l);
                    w.WriteEndArray();
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
            w.WritePropertyName("evaluation_time");
            if (EvaluationTime is double t) WriteNumber(w, t); else w.WriteNullValue();
            w.WritePropertyName("kg_co2_emissions");
            if (KgCo2Emissions is double k) WriteNumber(w, k); else w.WriteNullValue();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>Parses an MTEB task result (ours or MTEB's own, bare NaN tolerated); <paramref name="source"/> names
    /// the file in error messages.</summary>
    public static TaskResult FromJson(string json, string source = "<json>")
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(MtebJson.QuoteNamedLiterals(json),
                documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new UllmeException($"{source}: not valid JSON ({e.Message})", e);
        }
        if (root is not JsonObject o) throw new UllmeException($"{source}: expected a JSON object at the top level");
        string taskName = o["task_name"]?.GetValue<string>() ?? throw new UllmeException($"{source}: missing 'task_name'");
        var result = new TaskResult
        {
            TaskName = taskName,
            DatasetRevision = o["dataset_revision"]?.GetValue<string>() ?? "no_revision_available",
            MtebVersion = o["mteb_version"]?.GetValue<string>(),
            EvaluationTime = o["evaluation_time"] is JsonNode et ? ReadNumber(et, source, "evaluation_time") : null,
            KgCo2Emissions = o["kg_co2_emissions"] is JsonNode kg ? ReadNumber(kg, source, "kg_co2_emissions") : null,
        };
        if (o["scores"] is not JsonObject scores) throw new UllmeException($"{source}: missing 'scores' object");
        foreach (var (split, node) in scores)
        {
            if (node is not JsonArray entries) throw new UllmeException($"{source}: scores.{split} is not a list");
            var list = new List<SplitScores>();
            foreach (var entryNode in entries)
            {
                if (entryNode is not JsonObject entry) throw new UllmeException($"{source}: scores.{split} holds a non-object");
                var s = new SplitScores();
                foreach (var (name, value) in entry)
                {
                    switch (name)
                    {
                        case "main_score":
                            s.MainScore = ReadNumber(value, source, $"scores.{split}.main_score");
                            break;
                        case "hf_subset":
                            s.HfSubset = value?.GetValue<string>() ?? "default";
                            break;
                        case "languages":
                            s.Languages = value is JsonArray langs ? langs.Select(l => l!.GetValue<string>()).ToArray() : [];
                            break;
                        default:
                            if (TryNumber(value, out double d)) s.Metrics[name] = d;
                            else s.Details[name] = value?.DeepClone();
                            break;
                    }
                }
                list.Add(s);
            }
            result.Scores[split] = list;
        }
        return result;
    }

    public static TaskResult Load(string path)
    {
        if (!File.Exists(path)) throw new UllmeException($"result file not found: {path}");
        return FromJson(File.ReadAllText(path), path);
    }

    private static double ReadNumber(JsonNode? node, string source, string field) =>
        node is null ? double.NaN
        : TryNumber(node, out double d) ? d
        : throw new UllmeException($"{source}: '{field}' is not a number");

    private static bool TryNumber(JsonNode? node, out double value)
    {
        value = 0;
        if (node is not JsonValue v) return false;
        if (v.GetValueKind() == JsonValueKind.Number) { value = v.GetValue<double>(); return true; }
        if (v.GetValueKind() == JsonValueKind.String)
        {
            switch (v.GetValue<string>())
            {
                case "NaN": value = double.NaN; return true;
                case "Infinity": value = double.PositiveInfinity; return true;
                case "-Infinity": value = double.NegativeInfinity; return true;
            }
        }
        return false;
    }

    internal static void WriteNumber(Utf8JsonWriter w, double value)
    {
        if (double.IsNaN(value)) w.WriteRawValue("NaN", skipInputValidation: true);
        else if (double.IsPositiveInfinity(value)) w.WriteRawValue("Infinity", skipInputValidation: true);
        else if (double.IsNegativeInfinity(value)) w.WriteRawValue("-Infinity", skipInputValidation: true);
        else if (value == Math.Floor(value) && Math.Abs(value) < 1e15)
            // Python writes integral floats as "1.0"; keep that so files diff cleanly against MTEB's.
            w.WriteRawValue(value.ToString("0.0", CultureInfo.InvariantCulture), skipInputValidation: true);
        else w.WriteNumberValue(value);
    }

    internal static void WriteNode(Utf8JsonWriter w, JsonNode? node)
    {
        switch (node)
        {
            case null:
                w.WriteNullValue();
                break;
            case JsonObject obj:
                w.WriteStartObject();
                foreach (var (k, v) in obj)
                {
                    w.WritePropertyName(k);
                    WriteNode(w, v);
                }
                w.WriteEndObject();
                break;
            case JsonArray arr:
                w.WriteStartArray();
                foreach (var v in arr) WriteNode(w, v);
                w.WriteEndArray();
                break;
            case JsonValue val when val.GetValueKind() == JsonValueKind.Number && !val.TryGetValue(out long _)
                                     && val.TryGetValue(out double d):
                WriteNumber(w, d);
                break;
            case JsonValue val when val.GetValueKind() == JsonValueKind.String
                                     && val.GetValue<string>() is "NaN" or "Infinity" or "-Infinity":
                w.WriteRawValue(val.GetValue<string>(), skipInputValidation: true);
                break;
            default:
                node.WriteTo(w);
                break;
        }
    }
}
